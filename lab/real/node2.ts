/**
 * The real node's second node (`lab run --real --scenario two-node`, issue 15): a network namespace
 * `<prefix>-node2` running a second **real kube-proxy** (`--hostname-override lab-node2`, its own
 * configuration, nftables or iptables like node 1's) that watches the same real API server, and a client
 * pod netns `<prefix>-n2cl` sending to the Service VIP; node 2's kube-proxy DNATs that traffic to node 1's
 * pods over the link between the two nodes. The network is the fast lab's second node
 * (lab/node/netns.ts createSecondNode: bridge cni0 10.244.1.1/24, link n2link 192.168.78.1 ↔ n1link
 * 192.168.78.2, each pod subnet routed over it); no kubelet runs there.
 *
 * - The API server is reached from node 2 through the relay the real lab already has: `socat` in node 2's
 *   netns listens on 127.0.0.1:6443 and connects to the unix socket node 1's relay serves (unix sockets
 *   cross namespaces), so node 2 uses the same kubeconfig (https://127.0.0.1:6443, the certificate names
 *   127.0.0.1) and no API traffic crosses the link the recorders capture.
 * - kube-proxy needs a Node object: it reads its node IP from it (without one it retries for ~1 min and
 *   then assumes loopback). The lab creates `lab-node2` through the API (InternalIP 192.168.78.2,
 *   podCIDR 10.244.1.0/24, `unschedulable`: no kubelet runs there, the scheduler must not bind a pod to it).
 *   A second kubelet would need a second containerd and CNI state for a node that runs no pod.
 * - Its timing is its own: the same kube-proxy binary and sync loop, with `minSyncPeriod` 2 s (node 1: 1 s),
 *   kube-proxy's own knob, so node 2 keeps routing to a terminating pod visibly longer than node 1.
 *
 * Everything is appended to the real lab's resources file before it is made (netns, processes), so
 * `cleanupRealLab(prefix)` removes it, also after a SIGKILL.
 */
import { spawn } from 'node:child_process';
import { closeSync, existsSync, openSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createSecondNode, type Node2Net } from '../node/netns.js';
import { NODE2_NAME, SERVICE_PORT, VIP } from '../scenarios/index.js';
import { run, sleep } from '../sys.js';
import { k8sBin } from './build.js';
import { kubeProxyArgs, kubeProxyConfig, NET, paths, type ProxyMode } from './config.js';
import { NodeProcs } from './node.js';
import type { RealState } from './state.js';
import type { ConntrackRow } from '../../schemas/rows.js';
import { conntrackFailures } from '../conntrack.js';
import type { ClientResult, Truth, TruthFailure } from '../truth.js';
import { unansweredFlows } from './truth.js';

/** node 2's kube-proxy minSyncPeriod (node 1's is 1 s) */
export const NODE2_MIN_SYNC_PERIOD = '2s';

export interface RealNode2 extends Node2Net { name: string; kubeProxyLog: string; procs: NodeProcs }

/** node 2's KubeProxyConfiguration: node 1's with its own name and sync period */
export function node2KubeProxyConfig(base: Record<string, unknown>): Record<string, unknown> {
  const sync = { syncPeriod: '30s', minSyncPeriod: NODE2_MIN_SYNC_PERIOD };
  return { ...base, hostnameOverride: NODE2_NAME, nftables: sync, iptables: { ...(base.iptables as object), ...sync } };
}

/** The Node object kube-proxy reads its IP from; no kubelet: nothing may be scheduled there. */
export function node2Object(n: Pick<Node2Net, 'node2LinkIp' | 'podCIDR'>): Record<string, unknown> {
  return {
    apiVersion: 'v1', kind: 'Node',
    metadata: { name: NODE2_NAME, labels: { 'kubernetes.io/hostname': NODE2_NAME, 'kubernetes.io/os': 'linux' } },
    spec: { podCIDR: n.podCIDR, podCIDRs: [n.podCIDR], unschedulable: true },
    status: { addresses: [{ type: 'InternalIP', address: n.node2LinkIp }, { type: 'Hostname', address: NODE2_NAME }] },
  };
}

/**
 * Bring node 2 up beside a running real node 1 (`np` = node 1's processes); returns once node 2's
 * kube-proxy routes the client pod's requests to the VIP (HTTP 200 from node 1's pods).
 */
export async function startRealNode2(opts: { state: RealState; np: NodeProcs; mode: ProxyMode; say: (s: string) => void }): Promise<RealNode2> {
  const { state, np, say } = opts;
  const p = paths(state.layout);
  const net = createSecondNode({ prefix: state.prefix, nodeNs: np.nodeNs, bridgeIp: NET.podGateway, podCIDR: NET.clusterCIDR, serviceCIDR: NET.serviceCIDR,
    clientNs: null, nodeEth0Ip: NET.nodeIp, clientIp: null }, (_k, name) => state.netns(name));
  // a default route (to node 1, which routes nowhere outside the lab), as node 1 has one
  run('ip', ['-n', net.nodeNs, 'route', 'add', 'default', 'via', net.node1LinkIp]);
  const procs = new NodeProcs(state, net.nodeNs);
  // the API server through node 1's relay socket
  procs.daemon('relay-node2', 'socat', [`TCP-LISTEN:${NET.apiPort},bind=127.0.0.1,fork,reuseaddr`, `UNIX-CONNECT:${p.apiSock}`]);
  np.kubectl(['apply', '-f', '-'], { input: JSON.stringify(node2Object(net)) });
  const config = join(state.layout.state, 'kube-proxy-node2.json');
  writeFileSync(config, JSON.stringify(node2KubeProxyConfig(kubeProxyConfig(state.layout, opts.mode)), null, 2));
  procs.daemon('kube-proxy-node2', k8sBin('kube-proxy'), kubeProxyArgs(state.layout).map((a) => (a === p.kubeProxyConfig ? config : a)));
  const kubeProxyLog = join(p.logs, 'kube-proxy-node2.log');
  const t0 = Date.now();
  const url = `http://${VIP}:${SERVICE_PORT}/healthz`;
  while (run('nsenter', [`--net=/run/netns/${net.clientNs}`, '--', 'curl', '-s', '-o', '/dev/null', '-w', '%{http_code}', '--max-time', '1', url], { allowFail: true }).stdout !== '200') {
    if (Date.now() - t0 > 40000) {
      const tail = existsSync(kubeProxyLog) ? readFileSync(kubeProxyLog, 'utf8').trim().split('\n').slice(-5).join(' | ') : '';
      throw new Error(`real node 2: the Service is not routed from ${net.clientNs} 40 s after kube-proxy started: ${tail}`);
    }
    await sleep(250);
  }
  say(`node 2 (${NODE2_NAME}, kube-proxy minSyncPeriod ${NODE2_MIN_SYNC_PERIOD}) routes the Service to node 1's pods (${((Date.now() - t0) / 1000).toFixed(1)} s)`);
  return { ...net, name: NODE2_NAME, kubeProxyLog, procs };
}

/**
 * node 2's recorder: the real `rolltrace record` inside node 2's netns (its capture interfaces cni0 and
 * n1link exist only there; `record --netns` would capture node 1's cni0), NODE_NAME=lab-node2, no
 * strace/ebpf (node 2 runs no pod of the Deployment), waiting for the rollout node 1's recorder starts.
 * Resolves once it is recording.
 */
export async function startNode2Recorder(opts: { state: RealState; node2: RealNode2; out: string; repoRoot: string; nodePath: string; logs: string }):
  Promise<{ cmd: string; done: (timeoutMs: number) => Promise<number | null>; log: string }> {
  const { node2 } = opts;
  const args = [join(opts.repoRoot, 'bin/rolltrace.mjs'), 'record', '--out', opts.out, '--kubeconfig', paths(opts.state.layout).kubeconfigNode,
    '--namespace', 'default', '--deployment', 'web', '--until-rollout-complete', '--iface', 'cni0', '--iface', 'n1link', '--no-strace', '--no-ebpf',
    '--settle', '3', '--quiet'];
  const log = join(opts.logs, 'recorder-node2.log');
  const fd = openSync(log, 'w');
  const rec = spawn('nice', ['-n', '-10', 'nsenter', `--net=/run/netns/${node2.nodeNs}`, '--', opts.nodePath, ...args],
    { cwd: opts.repoRoot, stdio: ['ignore', fd, fd], env: { ...process.env, NODE_NAME: node2.name } });
  closeSync(fd);
  if (rec.pid) opts.state.pid(rec.pid);
  const exit = new Promise<number | null>((r) => { rec.on('exit', (c, s) => r(c ?? (s ? 128 : null))); rec.on('error', () => r(null)); });
  for (const t0 = Date.now(); !/^recording/m.test(existsSync(log) ? readFileSync(log, 'utf8') : '') && Date.now() - t0 < 30000;) {
    if (await Promise.race([exit.then(() => true), sleep(100).then(() => false)])) break;
  }
  await sleep(300);
  const done = async (timeoutMs: number) => {
    const r = await Promise.race([exit, sleep(timeoutMs).then(() => 'timeout' as const)]);
    if (r !== 'timeout') return r;
    try { rec.kill('SIGINT'); } catch { /* gone */ }
    if (await Promise.race([exit.then(() => false), sleep(10000).then(() => true)])) { try { rec.kill('SIGKILL'); } catch { /* gone */ } }
    return null;
  };
  return { cmd: `NODE_NAME=${node2.name} nice -n -10 nsenter --net=/run/netns/${node2.nodeNs} node ${args.join(' ')}`, done, log };
}

/**
 * The remote client's failures in the truth, completed from node 2's own conntrack (the kernel's record of
 * the DNAT node 2's kube-proxy made): each failure the client logged (a refused or timed-out connection
 * has no local address in its log) is matched, nearest in time to its start, to a failed flow of that
 * client through node 2's rules — refused (SYN answered by RST), reset, or never answered — which gives
 * the connection's client port and the node-1 pod it was DNATed to. Mutates `truth`; returns how many of
 * node 2's failed flows matched no logged failure (a disagreement of the two records, kept in the truth).
 */
export function node2Truth(truth: Truth, i: { ct: ConntrackRow[]; clientIp: string; clientResults: ClientResult[];
  isService: (ip: string, port: number) => boolean; endNs: number; timeoutNs?: number }): number {
  const ipToPod = new Map(truth.allPods.map((x) => [x.ip, `${x.namespace}/${x.name}`]));
  const kills = truth.pods.filter((p) => p.killNs != null).map((p) => ({ ip: p.ip, atNs: p.killNs! }));
  const closes = truth.pods.filter((p) => p.listenerClosedNs != null).map((p) => ({ ip: p.ip, atNs: p.listenerClosedNs!, afterNs: p.listenerClosedAfterNs }));
  const mine = (c: string) => c.startsWith(`${i.clientIp}:`);
  const flows: Array<{ atNs: number; client: string; service: string; backendIp: string | null; backendPort: number | null; kind: TruthFailure['kind'] }> = [
    ...conntrackFailures(i.ct, i.isService, kills, 300e6, closes),
    ...unansweredFlows(i.ct, i.isService, i.endNs - 1.5e9).map((f) => ({ ...f, kind: 'timeout' as const })),
  ].filter((f) => mine(f.client)).sort((a, b) => a.atNs - b.atNs);
  const used = new Set<number>();
  const timeoutNs = i.timeoutNs ?? 1e9;
  for (const r of [...i.clientResults].filter((x) => !x.ok).sort((a, b) => a.ts_ns - b.ts_ns)) {
    const f = truth.failures.find((x) => x.from === 'client-log' && x.atNs === r.ts_ns && !x.node);
    if (!f) continue;
    let k = -1;
    if (r.client) k = flows.findIndex((c, j) => !used.has(j) && c.client === r.client);
    else {
      const start = r.start_ns ?? (f.kind === 'timeout' ? r.ts_ns - timeoutNs : r.ts_ns);
      let best = 200e6;
      flows.forEach((c, j) => { const d = Math.abs(c.atNs - start); if (!used.has(j) && d < best) { best = d; k = j; } });
    }
    f.node = NODE2_NAME;
    if (k < 0) continue;
    used.add(k);
    const c = flows[k]!;
    Object.assign(f, { client: c.client, backendIp: c.backendIp, backendPort: c.backendPort, backendPod: c.backendIp ? ipToPod.get(c.backendIp) ?? null : null, kind: c.kind });
  }
  return flows.length - used.size;
}
