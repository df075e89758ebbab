/**
 * The node and its pods as network namespaces: node ns with bridge cni0 (10.244.0.1/24), service CIDR
 * routed to cni0 so locally generated traffic to a VIP hits the output NAT hook, pods as namespaces with a
 * veth into the bridge, optional client ns linked to the node's "eth0". No route leaves the lab.
 */
import { run, runIn } from '../sys.js';

export interface NodeNet {
  prefix: string;
  nodeNs: string;
  bridgeIp: string;
  podCIDR: string;
  serviceCIDR: string;
  clientNs: string | null;
  nodeEth0Ip: string | null;
  clientIp: string | null;
}

export const POD_SUBNET = '10.244.0';
export const NODE_ETH0_IP = '192.168.77.1';
export const CLIENT_IP = '192.168.77.2';

export function nodeNsName(prefix: string) { return `${prefix}-node`; }

/** Create the node ns (and client ns when asked). `onCreated` is called before each resource is made. */
export function createNode(prefix: string, withClient: boolean, onCreated: (kind: 'netns', name: string) => void): NodeNet {
  const nodeNs = nodeNsName(prefix);
  onCreated('netns', nodeNs);
  run('ip', ['netns', 'add', nodeNs]);
  const n = (args: string[]) => runIn(nodeNs, 'ip', args);
  n(['link', 'set', 'lo', 'up']);
  n(['link', 'add', 'cni0', 'address', '02:00:0a:f4:00:01', 'type', 'bridge']); // fixed MAC: else it follows the lowest port MAC and pods' replies to a stale one are lost
  n(['addr', 'add', `${POD_SUBNET}.1/24`, 'dev', 'cni0']);
  n(['link', 'set', 'cni0', 'up']);
  n(['route', 'add', '10.96.0.0/16', 'dev', 'cni0', 'src', `${POD_SUBNET}.1`]);
  runIn(nodeNs, 'sysctl', ['-q', '-w', 'net.ipv4.ip_forward=1']);
  runIn(nodeNs, 'sysctl', ['-q', '-w', 'net.netfilter.nf_conntrack_tcp_loose=1'], { allowFail: true });
  let clientNs: string | null = null;
  if (withClient) {
    clientNs = `${prefix}-client`;
    onCreated('netns', clientNs);
    run('ip', ['netns', 'add', clientNs]);
    // veth created inside the node ns; the peer moved to the client ns
    n(['link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', 'cl0', 'netns', clientNs]);
    n(['addr', 'add', `${NODE_ETH0_IP}/24`, 'dev', 'eth0']);
    n(['link', 'set', 'eth0', 'up']);
    runIn(clientNs, 'ip', ['link', 'set', 'lo', 'up']);
    runIn(clientNs, 'ip', ['addr', 'add', `${CLIENT_IP}/24`, 'dev', 'cl0']);
    runIn(clientNs, 'ip', ['link', 'set', 'cl0', 'up']);
  }
  return {
    prefix, nodeNs, bridgeIp: `${POD_SUBNET}.1`, podCIDR: '10.244.0.0/16', serviceCIDR: '10.96.0.0/16',
    clientNs, nodeEth0Ip: withClient ? NODE_ETH0_IP : null, clientIp: withClient ? CLIENT_IP : null,
  };
}

/** Create a pod network namespace with a veth into cni0. Runs from any namespace. */
export function createPodNet(node: NodeNet, podNs: string, ip: string, vethHost: string): void {
  run('ip', ['netns', 'add', podNs]);
  runIn(node.nodeNs, 'ip', ['link', 'add', vethHost, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', podNs]);
  runIn(node.nodeNs, 'ip', ['link', 'set', vethHost, 'master', 'cni0']);
  runIn(node.nodeNs, 'ip', ['link', 'set', vethHost, 'up']);
  const p = (args: string[]) => runIn(podNs, 'ip', args);
  p(['link', 'set', 'lo', 'up']);
  p(['addr', 'add', `${ip}/24`, 'dev', 'eth0']);
  p(['link', 'set', 'eth0', 'up']);
  p(['route', 'add', 'default', 'via', node.bridgeIp]);
}

/** Kill every process in a namespace, then delete it (veths go with it). */
export function deleteNetns(ns: string): void {
  const pids = run('ip', ['netns', 'pids', ns], { allowFail: true }).stdout.split(/\s+/).filter(Boolean).map(Number);
  for (const pid of pids) { try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ } }
  run('ip', ['netns', 'del', ns], { allowFail: true });
}

export function listNetns(): string[] {
  return run('ip', ['netns', 'list'], { allowFail: true }).stdout.split('\n').map((l) => l.split(' ')[0]!).filter(Boolean);
}

/** The second node (remote clients): its own netns, bridge and pod subnet, linked to the first node. */
export interface Node2Net {
  nodeNs: string;
  /** the first node's address on the link (the API server is reached there) and the second's */
  node1LinkIp: string;
  node2LinkIp: string;
  bridgeIp: string;
  podCIDR: string;
  /** a client pod on the second node */
  clientNs: string;
  clientIp: string;
}

export const NODE2_SUBNET = '10.244.1';

/**
 * Node 2: netns `<prefix>-node2` with bridge cni0 10.244.1.1/24 and the service CIDR routed to it (like node 1),
 * a link 192.168.78.1 (node 1) ↔ 192.168.78.2 (node 2) with each pod subnet routed over it, and a client pod
 * netns `<prefix>-n2cl` (10.244.1.2) whose traffic to a VIP is DNATed by node 2's rules and forwarded to node 1's
 * pods — as on a cluster, where most connections to a pod come already DNATed from other nodes.
 */
export function createSecondNode(node1: NodeNet, onCreated: (kind: 'netns', name: string) => void): Node2Net {
  const nodeNs = `${node1.prefix}-node2`;
  const clientNs = `${node1.prefix}-n2cl`;
  onCreated('netns', nodeNs);
  run('ip', ['netns', 'add', nodeNs]);
  const n2 = (args: string[]) => runIn(nodeNs, 'ip', args);
  n2(['link', 'set', 'lo', 'up']);
  n2(['link', 'add', 'cni0', 'address', '02:00:0a:f4:01:01', 'type', 'bridge']);
  n2(['addr', 'add', `${NODE2_SUBNET}.1/24`, 'dev', 'cni0']);
  n2(['link', 'set', 'cni0', 'up']);
  n2(['route', 'add', '10.96.0.0/16', 'dev', 'cni0', 'src', `${NODE2_SUBNET}.1`]);
  runIn(nodeNs, 'sysctl', ['-q', '-w', 'net.ipv4.ip_forward=1']);
  runIn(nodeNs, 'sysctl', ['-q', '-w', 'net.netfilter.nf_conntrack_tcp_loose=1'], { allowFail: true });
  // the link: created in node 1, the peer moved to node 2
  runIn(node1.nodeNs, 'ip', ['link', 'add', 'n2link', 'type', 'veth', 'peer', 'name', 'n1link', 'netns', nodeNs]);
  runIn(node1.nodeNs, 'ip', ['addr', 'add', '192.168.78.1/24', 'dev', 'n2link']);
  runIn(node1.nodeNs, 'ip', ['link', 'set', 'n2link', 'up']);
  runIn(node1.nodeNs, 'ip', ['route', 'add', `${NODE2_SUBNET}.0/24`, 'via', '192.168.78.2']);
  n2(['addr', 'add', '192.168.78.2/24', 'dev', 'n1link']);
  n2(['link', 'set', 'n1link', 'up']);
  n2(['route', 'add', `${POD_SUBNET}.0/24`, 'via', '192.168.78.1']);
  onCreated('netns', clientNs);
  createPodNet({ ...node1, nodeNs, bridgeIp: `${NODE2_SUBNET}.1` }, clientNs, `${NODE2_SUBNET}.2`, 'vcl0');
  return { nodeNs, node1LinkIp: '192.168.78.1', node2LinkIp: '192.168.78.2', bridgeIp: `${NODE2_SUBNET}.1`, podCIDR: `${NODE2_SUBNET}.0/24`, clientNs, clientIp: `${NODE2_SUBNET}.2` };
}
