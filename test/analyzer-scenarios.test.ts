import { spawnSync } from 'node:child_process';
import { readFileSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import Ajv2020 from 'ajv/dist/2020.js';
import { afterAll, describe, expect, it } from 'vitest';
import { analyzeBundle, hasFailures } from '../analyzer/analyze.js';
import { BundleReader } from '../analyzer/bundle-reader.js';
import { FailureDetector, resolveFailure } from '../analyzer/model/failures.js';
import { buildIdentity, Identity } from '../analyzer/model/identity.js';
import { emptyFacts } from '../analyzer/model/facts.js';
import type { Analysis } from '../schemas/analysis.js';
import { ev } from '../schemas/events.js';
import { TCP, type StoredPacketRow } from '../schemas/rows.js';
import { at, CLIENT, flow, NEW, OLD, pod, scenario, tmpBundle, VIP } from './analyzer-synth.js';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
const schema = JSON.parse(readFileSync(join(ROOT, 'schemas/analysis.schema.json'), 'utf8'));
const ajv = new (Ajv2020 as unknown as typeof Ajv2020.default)({ allErrors: true, strict: false });
const validate = ajv.compile(schema);
const files: string[] = [];
afterAll(() => { for (const f of files) rmSync(dirname(f), { recursive: true, force: true }); });

async function analyze(path: string): Promise<Analysis> {
  files.push(path);
  const r = await BundleReader.open(path);
  try {
    const a = await analyzeBundle(r);
    const ok = validate(JSON.parse(JSON.stringify(a)));
    if (!ok) throw new Error(`schema: ${ajv.errorsText(validate.errors)}`);
    return a;
  } finally { r.close(); }
}

function cli(args: string[]) {
  return spawnSync(process.execPath, [join(ROOT, 'bin/rolltrace.mjs'), ...args], { encoding: 'utf8', timeout: 60_000 });
}

describe('race: listener closes at SIGTERM, rule removed ~700 ms later', () => {
  it('measures the gap from the kernel-stamped close, names the backend of both failures', async () => {
    const a = await analyze(scenario(tmpBundle('race')));
    expect(a.pods).toHaveLength(1);
    const p = a.pods[0]!;
    expect(p.name).toBe(OLD.name);
    expect(p.ip).toBe(OLD.ip);
    expect(p.verdict).toBe('listener-closed-before-rule-removed');
    // ebpf close at +2.0305 preferred over strace at +2.0310; removal at +2.731 (not the stale chain at +3.9)
    expect(p.exposureMs).toBeCloseTo(700.5, 1);
    expect(p.ruleRemovedAt).toBe('2026-04-12T13:20:02.731000Z');
    expect(p.evidence.some((e) => e.includes('[strace]') && e.includes('closed'))).toBe(true);
    expect(p.evidence.some((e) => e.includes('stale chain'))).toBe(true);
    expect(p.sigtermAt).toBe('2026-04-12T13:20:02.030000Z');
    expect(p.deletionAt).toBe('2026-04-12T13:20:02.000000Z');
    expect(p.endpointTerminatingAt).toBe('2026-04-12T13:20:02.020000Z');
    expect(p.endpointRemovedAt).toBe('2026-04-12T13:20:02.200000Z');
    expect(p.failedConnections).toBe(2);
    expect(a.failures).toHaveLength(2);
    for (const f of a.failures) {
      expect(f.cause).toBe('listener-closed');
      expect(f.service).toBe(`${VIP}:80`);
      expect(f.backend).toEqual({ ip: OLD.ip, port: 8080, pod: `default/${OLD.name}` });
      expect(f.via).toEqual(['conntrack', 'packets', 'probe']);
      expect(f.client.startsWith(`${CLIENT}:`)).toBe(true);
    }
    expect(a.recommendation.preStopSeconds).toBe(2);
    expect(a.recommendation.why).toContain('731 ms');
    expect(a.programmingLatency?.find((l) => l.change === 'removed')?.latencyMs).toBe(711);
    expect(hasFailures(a)).toBe(true);
  });

  it('CLI: text verdict first, exit 1; json validates; timeline in +s [source] kind style', () => {
    const f = scenario(tmpBundle('race-cli'));
    files.push(f);
    const t = cli(['analyze', f]);
    expect(t.status).toBe(1);
    expect(t.stdout.split('\n')[0]).toMatch(/^VERDICT: FAILURES — 2 failed connection/);
    expect(t.stdout).toMatch(/\+2\.100s\s+\[packets\]\s+rst\s+flow=10\.42\.0\.97:8080>10\.0\.0\.5:\d+/);
    const j = cli(['analyze', f, '--format', 'json']);
    expect(j.status).toBe(1);
    expect(validate(JSON.parse(j.stdout))).toBe(true);
    const tl = cli(['timeline', f, '--source', 'nftables', '--since', '+2.5']);
    expect(tl.status).toBe(0);
    const lines = tl.stdout.trim().split('\n');
    expect(lines).toHaveLength(2);
    expect(lines[0]).toMatch(/^\s*\+2\.731s\s+\[nftables\]\s+endpoint-rule-removed\s+service=default\/web:http/);
  });
});

describe('prestop: listener closes 10 s after SIGTERM', () => {
  it('is safe with zero failures and exit 0', async () => {
    const f = scenario(tmpBundle('prestop'), { closeAfter: 10 });
    const a = await analyze(f);
    expect(a.failures).toHaveLength(0);
    expect(a.pods[0]!.verdict).toBe('safe');
    expect(a.pods[0]!.exposureMs).toBeCloseTo(-9299.5, 1);
    expect(hasFailures(a)).toBe(false);
    const t = cli(['analyze', f]);
    expect(t.status).toBe(0);
    expect(t.stdout.split('\n')[0]).toMatch(/^VERDICT: CLEAN/);
  });
});

describe('iptables mode', () => {
  it('labels rule evidence with the mode and KUBE-SEP chain', async () => {
    const a = await analyze(scenario(tmpBundle('iptables'), { mode: 'iptables' }));
    const p = a.pods[0]!;
    expect(p.verdict).toBe('listener-closed-before-rule-removed');
    expect(p.evidence.find((e) => e.startsWith('rule removed'))).toMatch(/iptables, KUBE-SEP-ABCDEFGH12345678/);
  });
});

describe('local-blackhole', () => {
  it('ICMP admin-prohibited with no backend is no-endpoint, with traffic-policy advice', async () => {
    const a = await analyze(scenario(tmpBundle('blackhole'), { blackhole: true, failAt: [] }));
    expect(a.failures).toHaveLength(1);
    const f = a.failures[0]!;
    expect(f.cause).toBe('no-endpoint');
    expect(f.backend).toEqual({ ip: null, port: null, pod: null });
    expect(f.service).toBe('10.0.0.1:30080');
    expect(f.via).toEqual(['packets', 'probe']);
    expect(a.recommendation.notes?.join(' ')).toMatch(/externalTrafficPolicy/);
  });
});

describe('ICMP classification per address family', () => {
  const row = (o: Partial<StoredPacketRow>): StoredPacketRow => ({
    id: 0, ts_ns: at(2), iface: 'eth0', linktype: 1, caplen: 0, len: 0, l3: 'ip6', src: null, dst: null, proto: 'tcp', sport: null, dport: null,
    tcp_flags: null, seq: null, ack: null, payload_len: 0, icmp_type: null, icmp_code: null,
    inner_src: null, inner_dst: null, inner_proto: null, inner_sport: null, inner_dport: null, data: null, ...o,
  });
  const facts = emptyFacts();
  const resolve = (proto: 'icmp' | 'icmp6', src: string, client: string, svc: string, type: number, code: number) => {
    const d = new FailureDetector();
    d.packet(row({ l3: proto === 'icmp6' ? 'ip6' : 'ip4', src: client, sport: 41000, dst: svc, dport: 80, tcp_flags: TCP.SYN }));
    d.packet(row({ ts_ns: at(2.0001), l3: proto === 'icmp6' ? 'ip6' : 'ip4', proto, src, dst: client, icmp_type: type, icmp_code: code,
      inner_src: client, inner_dst: svc, inner_proto: 'tcp', inner_sport: 41000, inner_dport: 80 }));
    const cs = d.candidates();
    expect(cs).toHaveLength(1);
    return resolveFailure(cs[0]!, { id: new Identity(), facts, seqs: new Map(), vips: new Set([svc]), conntrack: () => null });
  };

  it('an ICMPv6 admin-prohibited reject (type 1 code 1) with no backend is no-endpoint', () => {
    const f = resolve('icmp6', 'fd00::1', 'fd00::5', 'fd00::10', 1, 1);
    expect(f.c.icmp?.name).toBe('admin-prohibited');
    expect(f.cause).toBe('no-endpoint');
    expect(f.backend.ip).toBeNull();
    expect(f.service).toBe('[fd00::10]:80');
  });

  it('codes are read per family: ICMPv6 code 3 (address unreachable) is not ICMPv4 port-unreachable', () => {
    expect(resolve('icmp6', 'fd00::1', 'fd00::5', 'fd00::10', 1, 3).cause).toBe('unknown');
    expect(resolve('icmp6', 'fd00::1', 'fd00::5', 'fd00::10', 1, 4).cause).toBe('no-endpoint'); // v6 port-unreachable
    expect(resolve('icmp', '10.0.0.1', CLIENT, VIP, 3, 13).cause).toBe('no-endpoint');
    expect(resolve('icmp', '10.0.0.1', CLIENT, VIP, 3, 1).cause).toBe('unknown'); // v4 host-unreachable
  });
});

describe('no-endpoint: the reject rule received with a later burst', () => {
  // real node, local-blackhole (iptables): kube-proxy's sync at 24.340-24.397 removed the service's last endpoint
  // (its KUBE-SEP delete line received 24.384) and added the REJECT; a monitor line after the burst closed deferred
  // the diff, and the REJECT came with the next burst's, stamped 24.972. The probe refused at 24.646 (no packet, no
  // conntrack: rejected on the node) was `unknown`
  const rule = (s: number, added: boolean, ip: string) => ({ ts: at(s), source: 'nftables', added, ip, port: 8080, service: 'default/web:http', vip: `${VIP}:80`, mode: 'iptables', node: null, chain: null, clock: 'receipt' });
  const reject = (s: number) => ({ ts: at(s), added: true, service: 'default/web:http', vip: `${VIP}:80`, action: 'reject', node_port: null });
  const listed = (s: number, ip: string, ready: boolean) => ({ ts: at(s), namespace: 'default', slice: 'web-x', service: 'web', ports: [8080], change: 'modified' as const, ip, ready, serving: ready, terminating: false, podUid: null, podName: null, node: null });
  const refused = (rules: ReturnType<typeof rule>[], noEp: ReturnType<typeof reject>[], sliceChanges: ReturnType<typeof listed>[] = []) => {
    const d = new FailureDetector();
    d.probe({ start_ns: at(2.54), end_ns: at(2.646), local_addr: CLIENT, local_port: 22090, remote: `${VIP}:80`, outcome: 'error', status: null, error: 'ECONNREFUSED' });
    const cs = d.candidates();
    expect(cs).toHaveLength(1);
    return resolveFailure(cs[0]!, { id: new Identity(), facts: { ...emptyFacts(), rules, noEp, sliceChanges }, seqs: new Map(), vips: new Set([`${VIP}:80`]), conntrack: () => null });
  };

  it('no endpoint in the rules since the last one\'s removal before the failure: no-endpoint, saying so', () => {
    const f = refused([rule(0.5, true, OLD.ip), rule(2.384, false, OLD.ip)], [reject(2.972)]);
    expect(f.cause).toBe('no-endpoint');
    expect(f.evidence.join('\n')).toMatch(/routed default\/web:http to no endpoint since its last endpoint's removal at \S+, and kube-proxy rejects a service with no endpoint in that same sync \(the reject rule was received with a later snapshot/);
    // the endpoint was in the rules from the start (no addition event): its removal still emptied them
    expect(refused([rule(2.384, false, OLD.ip)], [reject(2.972)], [listed(0.4, OLD.ip, true), listed(2.19, OLD.ip, false)]).cause).toBe('no-endpoint');
  });

  it('not when an endpoint was still routed at the failure, or one came back before the reject', () => {
    expect(refused([rule(0.5, true, OLD.ip), rule(0.6, true, NEW.ip), rule(2.384, false, OLD.ip)], [reject(2.972)]).cause).toBe('unknown');
    expect(refused([rule(0.5, true, OLD.ip), rule(2.7, false, OLD.ip)], [reject(2.972)]).cause).toBe('unknown');
    expect(refused([rule(0.5, true, OLD.ip), rule(2.384, false, OLD.ip), rule(2.9, true, NEW.ip)], [reject(2.972)]).cause).toBe('unknown');
    expect(refused([rule(0.5, true, OLD.ip), rule(2.384, false, OLD.ip)], []).cause).toBe('unknown');
    // from the start, with another endpoint the slices still listed ready: maybe still routed to it
    expect(refused([rule(2.384, false, OLD.ip)], [reject(2.972)], [listed(0.4, OLD.ip, true), listed(0.4, NEW.ip, true)]).cause).toBe('unknown');
  });
});

describe('grace-too-short', () => {
  it('SIGKILL with an open connection is killed-in-flight', async () => {
    const a = await analyze(scenario(tmpBundle('grace'), { killed: true, failAt: [] }));
    expect(a.failures).toHaveLength(1);
    expect(a.failures[0]!.cause).toBe('killed-in-flight');
    expect(a.failures[0]!.backend.pod).toBe(`default/${OLD.name}`);
    expect(a.pods[0]!.evidence.join(' ')).toContain('SIGKILL');
    expect(a.recommendation.notes?.join(' ')).toMatch(/SIGKILLed/);
  });
});

describe('not-ready', () => {
  it('RST from the new pod before its listen event is not-ready', async () => {
    const a = await analyze(scenario(tmpBundle('notready'), { notReady: true, failAt: [] }));
    const f = a.failures.find((x) => x.backend.ip === NEW.ip)!;
    expect(f).toBeDefined();
    expect(f.cause).toBe('not-ready');
    expect(f.backend.pod).toBe(`default/${NEW.name}`);
    expect(a.recommendation.notes?.join(' ')).toMatch(/readinessProbe/);
  });
});

describe('without the kube source', () => {
  it('names pods by IP, still measures the gap and the backend', async () => {
    const a = await analyze(scenario(tmpBundle('nokube'), { withKube: false }));
    const p = a.pods.find((x) => x.ip === OLD.ip)!;
    expect(p.name).toBe(OLD.ip);
    expect(p.namespace).toBeNull();
    expect(p.deletionAt).toBeNull();
    expect(p.verdict).toBe('listener-closed-before-rule-removed');
    expect(a.failures).toHaveLength(2);
    expect(a.failures.every((f) => f.backend.pod === OLD.ip && f.cause === 'listener-closed')).toBe(true);
    expect(a.warnings?.join(' ')).toMatch(/named by IP/);
  });
});

describe('IP reuse', () => {
  it('a packet resolves to the pod that held the IP at that instant', async () => {
    const REUSED = { uid: 'uid-reuse-0003', name: 'web-reused-x1', ip: OLD.ip };
    const f = scenario(tmpBundle('reuse'), {
      extra: (w) => {
        w.k8sObject({ ts_ns: at(3.3), kind: 'Pod', namespace: 'default', name: REUSED.name, uid: REUSED.uid, resource_version: '30', event_type: 'ADDED', object: pod(REUSED, { createdAt: 3.2 }) });
        w.event(ev('process-attached', at(3.31), 'strace', 'pid:4300', { pid: 4300, pod_uid: REUSED.uid, netns: 4026532003, addrs: [REUSED.ip] }));
        w.event(ev('listen', at(3.6), 'strace', 'pid:4300', { pid: 4300, addr: '0.0.0.0', port: 8080, how: 'syscall' }));
        flow(w, 3.45, 45000, REUSED.ip, 'refused');
      },
    });
    files.push(f);
    const r = await BundleReader.open(f);
    try {
      const id = buildIdentity(r, at(10));
      expect(id.podAt(OLD.ip, at(2.1))?.pod.uid).toBe(OLD.uid);
      expect(id.podAt(OLD.ip, at(3.45))?.pod.uid).toBe(REUSED.uid);
    } finally { r.close(); }
    const a = await analyze(f);
    const early = a.failures.filter((x) => x.backend.pod === `default/${OLD.name}`);
    const late = a.failures.find((x) => x.backend.pod === `default/${REUSED.name}`)!;
    expect(early).toHaveLength(2);
    expect(late.cause).toBe('not-ready');
    expect(a.pods.find((p) => p.name === OLD.name)!.failedConnections).toBe(2);
  });
});
