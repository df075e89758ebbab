import { describe, expect, it, afterAll } from 'vitest';
import { readFileSync, existsSync, writeFileSync } from 'node:fs';
import { spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { buildServicePorts, categorize, type K8sEndpointSlice, type K8sService } from '../lab/kubeproxy/model.js';
import { emptyNftState, nftSync, serviceChain, endpointChain } from '../lab/kubeproxy/nft-rules.js';
import { iptablesSync, svcChainName, sepChainName, IPTABLES_JUMPS } from '../lab/kubeproxy/iptables-rules.js';

const svc = (policy: 'Cluster' | 'Local' = 'Cluster', type = 'NodePort'): K8sService => ({
  metadata: { namespace: 'default', name: 'web' },
  spec: { clusterIP: '10.96.0.10', type, externalTrafficPolicy: policy, ports: [{ name: 'http', port: 80, protocol: 'TCP', targetPort: 8080, nodePort: 30080 }] },
});
const slice = (eps: Array<[string, boolean, boolean, boolean, string?]>): K8sEndpointSlice => ({
  metadata: { namespace: 'default', name: 'web-x1', labels: { 'kubernetes.io/service-name': 'web' } },
  addressType: 'IPv4', ports: [{ name: 'http', port: 8080, protocol: 'TCP' }],
  endpoints: eps.map(([ip, ready, serving, terminating, node]) => ({ addresses: [ip], conditions: { ready, serving, terminating }, nodeName: node ?? 'n1', targetRef: { kind: 'Pod', namespace: 'default', name: `web-${ip.split('.')[3]}` } })),
});
const cfg = { podCIDR: '10.244.0.0/16', serviceCIDR: '10.96.0.0/16', nodePortIPs: ['192.168.77.1'] };

function golden(name: string, text: string) {
  const p = `fixtures/lab/${name}`;
  if (process.env.UPDATE_GOLDEN) writeFileSync(p, text);
  else if (!existsSync(p)) throw new Error(`missing golden ${p}, run with UPDATE_GOLDEN=1`);
  expect(text).toBe(readFileSync(p, 'utf8'));
}

describe('kube-proxy names', () => {
  it('hashes chain names exactly like kube-proxy', () => {
    const sp = buildServicePorts([{ metadata: { namespace: 'ns1', name: 'svc1' }, spec: { clusterIP: '172.30.0.41', ports: [{ name: 'p80', port: 80 }] } }], [], 'n')[0]!;
    // values from kubernetes/kubernetes pkg/proxy/{nftables,iptables}/proxier_test.go
    expect(serviceChain(sp)).toBe('service-ULMVA6XW-ns1/svc1/tcp/p80');
    expect(endpointChain(sp, { ip: '10.180.0.1', port: 80 })).toBe('endpoint-5OJB2KTY-ns1/svc1/tcp/p80__10.180.0.1/80');
    expect(svcChainName(sp)).toBe('KUBE-SVC-XPGD46QRK7WJZT7O');
    expect(sepChainName(sp, { ip: '10.180.0.1', port: 80 })).toBe('KUBE-SEP-SXIVWICOYRO3J4NJ');
  });
});

describe('endpoint selection (ProxyTerminatingEndpoints)', () => {
  it('uses ready endpoints, else serving+terminating ones', () => {
    let sp = buildServicePorts([svc()], [slice([['10.244.0.2', true, true, false], ['10.244.0.3', false, true, true]])], 'n1')[0]!;
    expect(categorize(sp).cluster.map((e) => e.ip)).toEqual(['10.244.0.2']);
    sp = buildServicePorts([svc()], [slice([['10.244.0.3', false, true, true], ['10.244.0.4', false, false, true]])], 'n1')[0]!;
    expect(categorize(sp).cluster.map((e) => e.ip)).toEqual(['10.244.0.3']);
    sp = buildServicePorts([svc('Local')], [slice([['10.244.0.2', true, true, false, 'other-node']])], 'n1')[0]!;
    expect(categorize(sp).local).toEqual([]);
  });
});

describe('nftables generation', () => {
  it('matches the golden transaction (2 endpoints, NodePort Cluster)', () => {
    const sps = buildServicePorts([svc()], [slice([['10.244.0.2', true, true, false], ['10.244.0.3', true, true, false]])], 'n1');
    golden('nft-two-endpoints.nft', nftSync(sps, cfg, emptyNftState(), 0).text);
  });
  it('Local policy with no local endpoint drops the NodePort; no endpoints at all rejects', () => {
    const local = nftSync(buildServicePorts([svc('Local')], [slice([['10.244.0.2', true, true, false, 'elsewhere']])], 'n1'), cfg, emptyNftState(), 0).text;
    expect(local).toContain('add element ip kube-proxy no-endpoint-nodeports { tcp . 30080 comment "default/web:http" : drop }');
    golden('nft-local-no-local-endpoint.nft', local);
    const none = nftSync(buildServicePorts([svc()], [slice([])], 'n1'), cfg, emptyNftState(), 0).text;
    expect(none).toContain('add element ip kube-proxy no-endpoint-services { 10.96.0.10 . tcp . 80 comment "default/web:http" : goto reject-chain }');
    expect(none).not.toContain('add element ip kube-proxy service-ips');
  });
  it('flushes a stale endpoint chain at once and deletes it at a later sync', () => {
    const two = buildServicePorts([svc()], [slice([['10.244.0.2', true, true, false], ['10.244.0.3', true, true, false]])], 'n1');
    const one = buildServicePorts([svc()], [slice([['10.244.0.2', true, true, false], ['10.244.0.3', false, true, true]])], 'n1');
    const s1 = nftSync(two, cfg, emptyNftState(), 0);
    const s2 = nftSync(one, cfg, s1.next, 100);
    const gone = endpointChain(two[0]!, { ip: '10.244.0.3', port: 8080 });
    expect(s2.flushed).toEqual([gone]);
    expect(s2.text).toContain(`flush chain ip kube-proxy ${gone}`);
    expect(s2.text).not.toContain(`delete chain ip kube-proxy ${gone}`);
    expect(s2.pendingDeletes).toBe(true);
    const s3 = nftSync(one, cfg, s2.next, 600);
    expect(s3.deleted).toEqual([]);
    const s4 = nftSync(one, cfg, s3.next, 1200);
    expect(s4.deleted).toEqual([gone]);
    expect(s4.text).toContain(`delete chain ip kube-proxy ${gone}`);
    expect(s4.next.stale).toEqual({});
  });
});

describe('iptables generation', () => {
  it('matches the golden restore input (statistic, DNAT, Local SVL chain, stale -X)', () => {
    const sps = buildServicePorts([svc('Local')], [slice([['10.244.0.2', true, true, false], ['10.244.0.3', true, true, false], ['10.244.0.4', true, true, false, 'other']])], 'n1');
    const r = iptablesSync(sps, { podCIDR: '10.244.0.0/16' }, ['KUBE-SEP-STALESTALESTALE1']);
    expect(r.text).toContain('-m statistic --mode random --probability 0.3333333333');
    expect(r.text).toContain('-X KUBE-SEP-STALESTALESTALE1');
    golden('iptables-local.rules', r.text);
  });
});

// ---------------------------------------------------------------- applied for real in a test netns
const tag = `lkp${randomBytes(3).toString('hex')}`;
const nsNode = `${tag}-n`, nsPod = `${tag}-p`;
const procs: number[] = [];
const sh = (args: string[], input?: string) => {
  const r = spawnSync(args[0]!, args.slice(1), { input, encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`${args.join(' ')}: ${r.stderr}`);
  return r.stdout;
};
afterAll(() => {
  for (const p of procs) { try { process.kill(p, 'SIGKILL'); } catch { /* gone */ } }
  spawnSync('ip', ['netns', 'del', nsNode]);
  spawnSync('ip', ['netns', 'del', nsPod]);
});

async function setupNet(): Promise<void> {
  sh(['ip', 'netns', 'add', nsNode]);
  sh(['ip', 'netns', 'add', nsPod]);
  const n = (a: string[]) => sh(['ip', 'netns', 'exec', nsNode, ...a]);
  const p = (a: string[]) => sh(['ip', 'netns', 'exec', nsPod, ...a]);
  n(['ip', 'link', 'set', 'lo', 'up']);
  n(['ip', 'link', 'add', 'vh', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', nsPod]);
  n(['ip', 'addr', 'add', '10.244.0.1/24', 'dev', 'vh']);
  n(['ip', 'link', 'set', 'vh', 'up']);
  n(['ip', 'route', 'add', '10.96.0.0/16', 'dev', 'vh', 'src', '10.244.0.1']);
  p(['ip', 'link', 'set', 'lo', 'up']);
  p(['ip', 'addr', 'add', '10.244.0.2/24', 'dev', 'eth0']);
  p(['ip', 'link', 'set', 'eth0', 'up']);
  p(['ip', 'route', 'add', 'default', 'via', '10.244.0.1']);
  const srv = spawn('ip', ['netns', 'exec', nsPod, 'node', 'lab/backend/server.mjs', '--port', '8080', '--name', 'pod-a'], { stdio: ['ignore', 'pipe', 'ignore'] });
  procs.push(srv.pid!);
  await new Promise<void>((resolve, reject) => {
    const t = setTimeout(() => reject(new Error('backend did not listen')), 15000);
    srv.stdout!.on('data', (d: Buffer) => { if (d.toString().includes('"listening"')) { clearTimeout(t); resolve(); } });
  });
}

function curlVip(): string {
  const r = spawnSync('ip', ['netns', 'exec', nsNode, 'curl', '-s', '--max-time', '3', 'http://10.96.0.10:80/'], { encoding: 'utf8' });
  return r.stdout;
}

describe('applied in a network namespace', () => {
  it('nftables: the chains exist and a connection to the VIP reaches the backend; iptables too', async () => {
    await setupNet();
    const sps = buildServicePorts([svc('Cluster', 'ClusterIP')], [slice([['10.244.0.2', true, true, false]])], 'n1');
    sh(['ip', 'netns', 'exec', nsNode, 'nft', '-f', '-'], nftSync(sps, { ...cfg, nodePortIPs: ['10.244.0.1'] }, emptyNftState(), 0).text);
    const rs = JSON.parse(sh(['ip', 'netns', 'exec', nsNode, 'nft', '-j', 'list', 'ruleset']));
    const chains = rs.nftables.filter((x: any) => x.chain).map((x: any) => x.chain.name);
    expect(chains).toContain(serviceChain(sps[0]!));
    expect(chains).toContain(endpointChain(sps[0]!, { ip: '10.244.0.2', port: 8080 }));
    expect(chains).toContain('services');
    expect(rs.nftables.some((x: any) => x.map?.name === 'service-ips')).toBe(true);
    expect(curlVip()).toMatch(/^pod-a \d+/);
    // now iptables mode instead
    sh(['ip', 'netns', 'exec', nsNode, 'nft', 'delete', 'table', 'ip', 'kube-proxy']);
    expect(curlVip()).toBe('');
    sh(['ip', 'netns', 'exec', nsNode, 'iptables-restore', '--noflush'], iptablesSync(sps, { podCIDR: '10.244.0.0/16' }, []).text);
    for (const j of IPTABLES_JUMPS) sh(['ip', 'netns', 'exec', nsNode, 'iptables', '-t', j.table, '-I', j.chain, '1', ...j.args]);
    const save = sh(['ip', 'netns', 'exec', nsNode, 'iptables-save', '-t', 'nat']);
    expect(save).toContain(`:${svcChainName(sps[0]!)}`);
    expect(save).toContain('--to-destination 10.244.0.2:8080');
    expect(curlVip()).toMatch(/^pod-a \d+/);
  }, 50_000);
});
