/**
 * Multi-node truths (issue 15), each a synthetic bundle with known truth:
 * 1 remote clients (already DNATed on another node), 2 pod IP reuse, 3 two Services selecting the same
 * pods, 4 keep-alive and accepted connections reset at exit, 5 receipt-stamped clock skew, 6 merge order.
 */
import { rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { analyzeBundle } from '../analyzer/analyze.js';
import { BundleReader } from '../analyzer/bundle-reader.js';
import { mergeBundles } from '../analyzer/merge/merge.js';
import { BundleWriter } from '../recorder/bundle-writer.js';
import type { Analysis, AnalysisPod } from '../schemas/analysis.js';
import { ev } from '../schemas/events.js';
import { TCP } from '../schemas/rows.js';
import { at, CLIENT, NODE1_ADDR, OLD, pkt, pod, scenario, tmpBundle, VIP } from './analyzer-synth.js';

const dirs: string[] = [];
afterAll(() => { for (const d of dirs) rmSync(d, { recursive: true, force: true }); });
function tmp(name: string): string { const p = tmpBundle(name); dirs.push(dirname(p)); return p; }

async function analyze(path: string): Promise<Analysis> {
  const r = await BundleReader.open(path);
  try { return JSON.parse(JSON.stringify(await analyzeBundle(r))) as Analysis; } finally { r.close(); }
}
const oldPod = (a: Analysis): AnalysisPod => a.pods.find((p) => p.name === OLD.name)!;

/** a pod on node2 */
const REMOTE = '10.42.1.7';
/** connection straight to the old pod's IP (DNATed on the client's node), refused by the closed listener */
function directRefused(w: BundleWriter, s: number, client: string, cport: number, ct: boolean, iface = 'cni0'): void {
  const t = at(s);
  if (ct) w.conntrack({ ts_ns: t + 50_000, type: 'NEW', proto: 'tcp', state: 'SYN_SENT', orig_src: client, orig_dst: OLD.ip, orig_sport: cport, orig_dport: 8080, reply_src: OLD.ip, reply_dst: client, reply_sport: 8080, reply_dport: cport, flags: null, zone: null, raw: null });
  w.packet(pkt(t + 100_000, client, cport, OLD.ip, 8080, TCP.SYN, 0, iface));
  w.packet(pkt(t + 200_000, OLD.ip, 8080, client, cport, TCP.RST | TCP.ACK, 0, iface));
}
const REMOTE_AT = [2.5, 2.8, 3.047];

describe('1. remote clients: connections DNATed on another node', () => {
  for (const ct of [true, false]) {
    it(`are failures of a remote node's routing, attributed to the pod here (conntrack rows: ${ct})`, async () => {
      const a = await analyze(scenario(tmp(`remote-${ct}`), { extra: (w) => REMOTE_AT.forEach((s, i) => directRefused(w, s, REMOTE, 47000 + i, ct)) }));
      const remote = a.failures.filter((f) => f.client.startsWith(`${REMOTE}:`));
      expect(remote.map((f) => f.cause)).toEqual(['listener-closed', 'listener-closed', 'listener-closed']);
      expect(a.ignored?.filter((x) => x.why.startsWith(REMOTE)) ?? []).toEqual([]);
      for (const f of remote) {
        expect(f.backend.pod).toBe(`default/${OLD.name}`);
        expect(f.evidence.join('\n')).not.toMatch(/while this node still routed/);
        expect(f.evidence.join('\n')).toMatch(/already DNATed on another node .*remote node unknown/);
        expect(f.node).toBeNull();
        expect(f.service).toBeNull(); // its pre-DNAT destination was on the other node
      }
      const p = oldPod(a);
      expect(p.evidence.join('\n')).toMatch(/3 connection\(s\) routed by other node\(s\).*last refused .*1016\.7 ms after the listener closed.*other nodes' rules are not in this bundle/);
      const here = p.nodes!.find((n) => n.node === 'node1')!;
      expect(here.ruleRemovedAt).toBe(p.ruleRemovedAt);
      expect(here.exposureMs).toBe(p.exposureMs);
      const elsewhere = p.nodes!.find((n) => n.node === null)!;
      expect(elsewhere).toMatchObject({ recorded: false, ruleRemovedAt: null, exposureMs: null, exposureAtLeastMs: 1016.7, failedConnections: 3 });
      expect(p.failedConnections).toBe(5);
    });
  }

  it('health-check screening dismisses only proven probes: the kubelet from the node\'s own address', async () => {
    const a = await analyze(scenario(tmp('kubelet'), { extra: (w) => { directRefused(w, 2.5, NODE1_ADDR, 48000, true); directRefused(w, 2.6, REMOTE, 48001, true); } }));
    expect(a.failures.some((f) => f.client === `${REMOTE}:48001`)).toBe(true);
    expect(a.failures.some((f) => f.client === `${NODE1_ADDR}:48000`)).toBe(false);
    expect(a.ignored!.find((x) => x.why.startsWith(`${NODE1_ADDR}:48000`))?.why).toMatch(/the node's own address \(the kubelet's probes\)/);
  });
  it('the node\'s own addresses recorded by the recorder (meta node_addrs) prove a probe too', async () => {
    const a = await analyze(scenario(tmp('nodeaddrs'), { extra: (w) => { w.setMeta('node_addrs', { node1: ['10.42.0.254', '192.168.1.10'] }); directRefused(w, 2.5, '10.42.0.254', 48002, true); } }));
    expect(a.failures.some((f) => f.client === '10.42.0.254:48002')).toBe(false);
    expect(a.ignored!.find((x) => x.why.startsWith('10.42.0.254:48002'))?.why).toMatch(/the node's own address/);
  });
});

describe('2. pod IP reuse', () => {
  it('a new pod given a terminated pod\'s IP is not that pod, and the old pod keeps its own record', async () => {
    const REUSE = { uid: 'uid-reuse-0003', name: 'web-54fcb567cc-r3use', ip: OLD.ip };
    const a = await analyze(scenario(tmp('reuse'), {
      extra: (w) => {
        w.k8sObject({ ts_ns: at(5.0), kind: 'Pod', namespace: 'default', name: REUSE.name, uid: REUSE.uid, resource_version: '30', event_type: 'ADDED', object: pod(REUSE, { createdAt: 4.9 }) });
        w.event(ev('process-attached', at(5.05), 'strace', 'pid:4300', { pid: 4300, comm: 'web', pod_uid: REUSE.uid, netns: 4026532003, addrs: ['127.0.0.1', OLD.ip] }));
        w.event(ev('endpoint-rule-added', at(5.5), 'nftables', `${OLD.ip}:8080`, { service: 'default/web:http', vip: `${VIP}:80`, endpoint: `${OLD.ip}:8080`, ip: OLD.ip, port: 8080, chain: 'endpoint-ZZ-default/web/tcp/http__x/8080', mode: 'nftables' as const, clock: 'receipt' as const }));
      },
    }));
    expect(a.pods.find((p) => p.name === REUSE.name)).toBeUndefined();
    const p = oldPod(a);
    expect(p.verdict).toBe('listener-closed-before-rule-removed');
    expect(p.ruleRemovedAt).toBe('2026-04-12T13:20:02.731000Z');
  });

  it('a pod on a reused IP that terminates in the recording gets only its own deletion and rule removal', async () => {
    const REUSE = { uid: 'uid-reuse-0003', name: 'web-54fcb567cc-r3use', ip: OLD.ip };
    const a = await analyze(scenario(tmp('reuse2'), {
      extra: (w) => {
        w.k8sObject({ ts_ns: at(5.0), kind: 'Pod', namespace: 'default', name: REUSE.name, uid: REUSE.uid, resource_version: '30', event_type: 'ADDED', object: pod(REUSE, { createdAt: 4.9 }) });
        w.k8sObject({ ts_ns: at(8.0), kind: 'Pod', namespace: 'default', name: REUSE.name, uid: REUSE.uid, resource_version: '31', event_type: 'MODIFIED', object: pod(REUSE, { createdAt: 4.9, deletionAt: 8.0 }) });
        w.event(ev('endpoint-rule-added', at(5.5), 'nftables', `${OLD.ip}:8080`, { service: 'default/web:http', vip: `${VIP}:80`, endpoint: `${OLD.ip}:8080`, ip: OLD.ip, port: 8080, mode: 'nftables' as const, clock: 'receipt' as const }));
        w.event(ev('endpoint-rule-removed', at(8.4), 'nftables', `${OLD.ip}:8080`, { service: 'default/web:http', vip: `${VIP}:80`, endpoint: `${OLD.ip}:8080`, ip: OLD.ip, port: 8080, mode: 'nftables' as const, clock: 'receipt' as const }));
      },
    }));
    const r = a.pods.find((p) => p.name === REUSE.name)!;
    expect(r.deletionAt).toBe('2026-04-12T13:20:08.000000Z');
    expect(r.ruleRemovedAt).toBe('2026-04-12T13:20:08.400000Z');
    expect(r.sigtermAt).toBeNull();
    expect(r.listenerClosedAt).toBeNull();
    expect(oldPod(a).ruleRemovedAt).toBe('2026-04-12T13:20:02.731000Z');
  });
});

describe('3. two Services selecting the same pods', () => {
  it('the node stops routing to the pod when the last service\'s rule is gone; exposure and preStop follow it', async () => {
    const r2 = { service: 'default/web-admin:http', vip: '10.96.0.11:80', endpoint: `${OLD.ip}:8080`, ip: OLD.ip, port: 8080, chain: 'endpoint-QQ-default/web-admin/tcp/http__x/8080', mode: 'nftables' as const, clock: 'receipt' as const };
    const a = await analyze(scenario(tmp('two-svc'), {
      extra: (w) => {
        w.event(ev('endpoint-rule-added', at(0.02), 'nftables', `${OLD.ip}:8080`, r2));
        w.event(ev('endpoint-rule-removed', at(3.2), 'nftables', `${OLD.ip}:8080`, r2));
      },
    }));
    const p = oldPod(a);
    expect(p.ruleRemovedAt).toBe('2026-04-12T13:20:03.200000Z');
    expect(p.exposureMs).toBe(1169.5);
    const e = p.evidence.join('\n');
    expect(e).toMatch(/default\/web:http .*stopped routing .*02\.731/);
    expect(e).toMatch(/default\/web-admin:http .*stopped routing .*03\.200/);
    expect(e).toMatch(/stale chain/); // the stale chain of default/web (same VIP) removed at 3.9 is still ignored
    expect(a.recommendation.why).toMatch(/propagation from deletion to rule removal was 1200 ms/);
    expect(a.recommendation.preStopSeconds).toBe(2);
  });

  it('a service still routing to the pod when the recording ended leaves the rule removal unknown, said so', async () => {
    const r2 = { service: 'default/web-admin:http', vip: '10.96.0.11:80', endpoint: `${OLD.ip}:8080`, ip: OLD.ip, port: 8080, mode: 'nftables' as const, clock: 'receipt' as const };
    const a = await analyze(scenario(tmp('two-svc-open'), { extra: (w) => w.event(ev('endpoint-rule-added', at(0.02), 'nftables', `${OLD.ip}:8080`, r2)) }));
    const p = oldPod(a);
    expect(p.ruleRemovedAt).toBeNull();
    expect(p.exposureMs).toBeNull();
    expect(p.evidence.join('\n')).toMatch(/default\/web-admin:http on node1 still routed to it when the recording ended[^]*verdict unknown: a service still routed to it/);
  });
});

/** client → old pod: one segment per [seconds, from client?, flags, payload] */
function segments(w: BundleWriter, c: number, list: Array<[number, boolean, number, number?]>): void {
  for (const [s, fromClient, flags, payload] of list) {
    w.packet(fromClient ? pkt(at(s), CLIENT, c, OLD.ip, 8080, flags, payload ?? 0) : pkt(at(s), OLD.ip, 8080, CLIENT, c, flags, payload ?? 0));
  }
}

describe('4. keep-alive and accepted connections', () => {
  it('a second request on a reused connection, reset when the process exits, is killed-in-flight', async () => {
    const a = await analyze(scenario(tmp('keepalive'), {
      extra: (w) => {
        segments(w, 46000, [[1.0, true, TCP.SYN], [1.0001, false, TCP.SYN | TCP.ACK], [1.0002, true, TCP.ACK | TCP.PSH, 80],
          [1.01, false, TCP.ACK | TCP.PSH, 200], [2.1, true, TCP.ACK | TCP.PSH, 80], [2.2306, false, TCP.RST | TCP.ACK]]);
      },
    }));
    const f = a.failures.find((x) => x.client === `${CLIENT}:46000`);
    expect(f?.cause).toBe('killed-in-flight');
    expect(f?.evidence.join('\n')).toMatch(/request unanswered on a reused \(keep-alive\) connection/);
  });

  it('a connection the app accepted long before, reset when it closed at shutdown, is killed-in-flight, not an accept-queue reset', async () => {
    const a = await analyze(scenario(tmp('accepted'), {
      extra: (w) => {
        w.event(ev('accept', at(1.7003), 'strace', `pid:${OLD.pid}`, { pid: OLD.pid, fd: 7, listen_fd: 3, peer: CLIENT, peer_port: 46001 }));
        segments(w, 46001, [[1.7, true, TCP.SYN], [1.7001, false, TCP.SYN | TCP.ACK], [1.7004, true, TCP.ACK | TCP.PSH, 80], [2.0306, false, TCP.RST | TCP.ACK]]);
      },
    }));
    const f = a.failures.find((x) => x.client === `${CLIENT}:46001`)!;
    expect(f.cause).toBe('killed-in-flight');
    expect(f.evidence.join('\n')).not.toMatch(/accept queue/);
    expect(f.evidence.join('\n')).toMatch(/accepted .*at 2026-04-12T13:20:01\.700300Z/);
  });
});

describe('4b. accept queue order', () => {
  it('without accept(2) events: a connection established later was answered first, so this one had left the FIFO accept queue', async () => {
    const a = await analyze(scenario(tmp('fifo'), {
      extra: (w) => {
        segments(w, 46002, [[1.7, true, TCP.SYN], [1.7001, false, TCP.SYN | TCP.ACK], [1.7004, true, TCP.ACK | TCP.PSH, 80]]);
        segments(w, 46003, [[1.75, true, TCP.SYN], [1.7501, false, TCP.SYN | TCP.ACK], [1.7502, true, TCP.ACK | TCP.PSH, 80], [1.76, false, TCP.ACK | TCP.PSH, 200],
          [1.761, true, TCP.ACK | TCP.FIN], [1.762, false, TCP.ACK | TCP.FIN]]);
        segments(w, 46002, [[2.0306, false, TCP.RST | TCP.ACK]]);
        // one established after the app stopped accepting (nothing later was answered): a true accept-queue reset
        segments(w, 46004, [[2.0, true, TCP.SYN], [2.0001, false, TCP.SYN | TCP.ACK], [2.0002, true, TCP.ACK | TCP.PSH, 80], [2.0307, false, TCP.RST | TCP.ACK]]);
      },
    }));
    const f = a.failures.find((x) => x.client === `${CLIENT}:46002`)!;
    expect(f.cause).toBe('killed-in-flight');
    expect(f.evidence.join('\n')).toMatch(/accept queue: 10\.0\.0\.5:46003, whose handshake completed .* was answered at .*FIFO/);
    const q = a.failures.find((x) => x.client === `${CLIENT}:46004`)!;
    expect(q.cause).toBe('listener-closed');
    expect(q.evidence.join('\n')).toMatch(/accept queue; the listener closed/);
  });
});

describe('5. receipt-stamped kube events vs kernel-stamped instants', () => {
  it('300 ms late: deletion after SIGTERM is detected with its size and does not feed the recommendation', async () => {
    const a = await analyze(scenario(tmp('skew300'), { kubeSkew: 0.3 }));
    const p = oldPod(a);
    expect(p.sigtermAt).toBe('2026-04-12T13:20:02.030000Z');
    expect(a.warnings!.join('\n')).toMatch(/deletion of default\/web-7b685bbcdd-cktdt received 270 ms after its SIGTERM/);
    expect(p.evidence.join('\n')).toMatch(/inconsistent order: .*270 ms/);
    // propagation measured from SIGTERM (the deletion came before it): 2.731 - 2.030 = 701 ms
    expect(a.recommendation.why).toMatch(/701 ms/);
    expect(a.recommendation.preStopSeconds).toBe(2);
  });

  it('2.5 s late: SIGTERM is kept and no negative propagation reaches the recommendation', async () => {
    const a = await analyze(scenario(tmp('skew2500'), { kubeSkew: 2.5 }));
    const p = oldPod(a);
    expect(p.sigtermAt).toBe('2026-04-12T13:20:02.030000Z');
    expect(p.verdict).toBe('listener-closed-before-rule-removed');
    expect(a.warnings!.join('\n')).toMatch(/received 2470 ms after its SIGTERM/);
    expect(JSON.stringify(a.recommendation)).not.toMatch(/-\d+(\.\d+)? ms/);
    expect(a.warnings!.join('\n')).toMatch(/programming latency measurement\(s\) negative \(the rule change was received up to 2460 ms before/);
    expect(a.recommendation.why).toMatch(/701 ms/);
  });
});

/** node2's bundle: the same API watch events (received at the same instants: no clock offset), its own rules (removed at +3.2 s) and a client that its kube-proxy DNATs to the old pod */
async function node2Bundle(from: string, path: string, extra?: (w: BundleWriter) => void): Promise<string> {
  const r = await BundleReader.open(from);
  const w = new BundleWriter(path, { createdBy: 'test', overwrite: true });
  try {
    w.setMeta('started_ns', String(at(0)));
    w.setMeta('node', 'node2');
    w.setMeta('hostname', 'node2');
    w.setMeta('node_addrs', { node2: ['192.168.78.2', '10.42.1.1'] });
    for (const [n, c] of [['packets', 'kernel'], ['nftables', 'receipt'], ['conntrack', 'kernel'], ['kube', 'receipt']] as const) w.setSource(n, { status: 'ok', clock: c });
    for (const o of r.k8sObjects()) w.k8sObject({ ...o, ts_ns: o.ts_ns });
    const rule = { service: 'default/web:http', vip: `${VIP}:80`, endpoint: `${OLD.ip}:8080`, ip: OLD.ip, port: 8080, chain: 'endpoint-ABCD1234-default/web/tcp/http__10.42.0.97/8080', mode: 'nftables' as const, clock: 'receipt' as const };
    w.event(ev('endpoint-rule-added', at(0.03), 'nftables', `${OLD.ip}:8080`, rule));
    w.event(ev('endpoint-rule-removed', at(3.2), 'nftables', `${OLD.ip}:8080`, rule));
    REMOTE_AT.forEach((s, i) => {
      const t = at(s);
      w.conntrack({ ts_ns: t + 20_000, type: 'NEW', proto: 'tcp', state: 'SYN_SENT', orig_src: REMOTE, orig_dst: VIP, orig_sport: 47000 + i, orig_dport: 80, reply_src: OLD.ip, reply_dst: REMOTE, reply_sport: 8080, reply_dport: 47000 + i, flags: null, zone: null, raw: `tcp 6 120 SYN_SENT src=${REMOTE}` });
      w.packet(pkt(t + 10_000, REMOTE, 47000 + i, VIP, 80, TCP.SYN, 0, 'cni0'));
    });
    extra?.(w);
  } finally { r.close(); w.close(); }
  return path;
}

describe('6. merge order', () => {
  it('merge A B and merge B A give the same analysis, per-node results for every node, remote failures named by node', async () => {
    const a = scenario(tmp('node1'), { extra: (w) => REMOTE_AT.forEach((s, i) => directRefused(w, s, REMOTE, 47000 + i, true)) });
    const b = await node2Bundle(a, tmp('node2'));
    const ab = tmp('ab'); const ba = tmp('ba');
    await mergeBundles([a, b], ab);
    await mergeBundles([b, a], ba);
    const x = await analyze(ab); const y = await analyze(ba);
    const strip = (an: Analysis) => ({ ...an, recommendation: { ...an.recommendation, verify: [] }, excerpts: undefined });
    expect(strip(y)).toEqual(strip(x));
    const p = oldPod(x);
    // the endpoint stopped being routed when the last node removed it
    expect(p.ruleRemovedAt).toBe('2026-04-12T13:20:03.200000Z');
    expect(p.exposureMs).toBe(1169.5);
    expect(p.nodes!.map((n) => [n.node, n.ruleRemovedAt, n.exposureMs])).toEqual([
      ['node1', '2026-04-12T13:20:02.731000Z', 700.5], ['node2', '2026-04-12T13:20:03.200000Z', 1169.5]]);
    const remote = x.failures.filter((f) => f.client.startsWith(`${REMOTE}:`));
    expect(remote).toHaveLength(3);
    for (const f of remote) { expect(f.node).toBe('node2'); expect(f.cause).toBe('listener-closed'); expect(f.evidence.join('\n')).toMatch(/DNATed on node2/); }
    expect(p.nodes!.find((n) => n.node === 'node2')!.failedConnections).toBe(3);
    expect(x.recommendation.why).toMatch(/1200 ms \(default\/web-7b685bbcdd-cktdt on node2/);
  });

  it('a source off on one node only: the warning names that node first, whatever the other node\'s detail', async () => {
    const a = scenario(tmp('node1s'), { extra: (w) => w.setSource('ebpf', { status: 'ok', clock: 'kernel', detail: `bpftrace ${'x'.repeat(200)}` }) });
    const b = await node2Bundle(a, tmp('node2s'), (w) => w.setSource('ebpf', { status: 'disabled', clock: 'kernel', detail: '--no-ebpf' }));
    for (const files of [[a, b], [b, a]]) {
      const m = tmp('ms'); await mergeBundles(files, m);
      const x = await analyze(m);
      expect((x.warnings ?? []).find((s) => s.startsWith('source ebpf'))).toMatch(/^source ebpf disabled: node2: disabled \(--no-ebpf\); node1: ok/);
    }
  });

  it('a connection from another node\'s own address (masqueraded there) is that node\'s routing, not a kubelet probe', async () => {
    const a = scenario(tmp('node1m'), { extra: (w) => { w.setMeta('node_addrs', { node1: [NODE1_ADDR] }); directRefused(w, 2.5, '192.168.78.2', 49000, true); directRefused(w, 2.6, NODE1_ADDR, 49001, true); } });
    const b = await node2Bundle(a, tmp('node2m'));
    const m = tmp('m'); await mergeBundles([b, a], m);
    const x = await analyze(m);
    const f = x.failures.find((g) => g.client === '192.168.78.2:49000')!;
    expect(f.node).toBe('node2');
    expect(f.cause).toBe('listener-closed');
    expect(f.evidence.join('\n')).toMatch(/already DNATed on another node: from 192\.168\.78\.2, node2's own address/);
    expect(x.failures.some((g) => g.client === `${NODE1_ADDR}:49001`)).toBe(false);
    expect(x.ignored!.some((i) => i.why.startsWith(`${NODE1_ADDR}:49001`))).toBe(true);
  });
});
