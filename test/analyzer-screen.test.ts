/**
 * What is not a failure of the rollout: health checks straight to a not-ready pod, kernel resets seen
 * only by ebpf that the packets contradict or that cannot be a refused connection, resets from an IP
 * outside every pod's tenure. Each is counted in `warnings`, never reported as a failure; the
 * service-routed failures of the same bundles stay.
 */
import { dirname } from 'node:path';
import { rmSync } from 'node:fs';
import Database from 'better-sqlite3';
import { afterAll, describe, expect, it } from 'vitest';
import { analyzeBundle } from '../analyzer/analyze.js';
import { BundleReader } from '../analyzer/bundle-reader.js';
import type { Analysis } from '../schemas/analysis.js';
import { ev } from '../schemas/events.js';
import { TCP, type PacketRow } from '../schemas/rows.js';
import type { BundleWriter } from '../recorder/bundle-writer.js';
import { at, NEW, OLD, scenario, tmpBundle, VIP } from './analyzer-synth.js';

const NODE_IP = '10.42.0.1';
const files: string[] = [];
afterAll(() => { for (const f of files) rmSync(dirname(f), { recursive: true, force: true }); });

async function analyze(path: string): Promise<Analysis> {
  files.push(path);
  const r = await BundleReader.open(path);
  try { return await analyzeBundle(r); } finally { r.close(); }
}

function pkt(ts: number, src: string, sport: number, dst: string, dport: number, flags: number, payload = 0): PacketRow {
  return {
    ts_ns: ts, iface: 'cni0', linktype: 1, caplen: 54 + payload, len: 54 + payload, l3: 'ip4', src, dst, proto: 'tcp', sport, dport,
    tcp_flags: flags, seq: 1, ack: 0, payload_len: payload, icmp_type: null, icmp_code: null,
    inner_src: null, inner_dst: null, inner_proto: null, inner_sport: null, inner_dport: null, data: null,
  };
}
const rst = (w: BundleWriter, s: number, from: string, dport: number) =>
  w.event(ev('tcp-reset-sent', at(s), 'ebpf', null, { saddr: from, sport: 8080, daddr: NODE_IP, dport, reason: 'NO_SOCKET', pid: 1, comm: 'swapper/0' }));

describe('health checks', () => {
  it('a connection from the node straight to a terminating pod (conntrack: no DNAT) cut at shutdown is a health check; the same through the VIP is a failure', async () => {
    const ct = (sport: number, dst: string, dport: number) => ({ ts_ns: at(2.05) + 50_000, type: 'NEW' as const, proto: 'tcp', state: 'SYN_SENT', orig_src: NODE_IP, orig_dst: dst, orig_sport: sport, orig_dport: dport, reply_src: OLD.ip, reply_dst: NODE_IP, reply_sport: 8080, reply_dport: sport, flags: 'UNREPLIED', zone: null, raw: null });
    const conn = (w: BundleWriter, sport: number) => {
      // handshake and a request at +2.05 (after the deletion at +2.0), then a reset before any response
      w.packet(pkt(at(2.05), NODE_IP, sport, OLD.ip, 8080, TCP.SYN));
      w.packet(pkt(at(2.05) + 30_000, OLD.ip, 8080, NODE_IP, sport, TCP.SYN | TCP.ACK));
      w.packet(pkt(at(2.05) + 60_000, NODE_IP, sport, OLD.ip, 8080, TCP.ACK));
      w.packet(pkt(at(2.05) + 90_000, NODE_IP, sport, OLD.ip, 8080, TCP.PSH | TCP.ACK, 120));
      w.packet(pkt(at(2.06), OLD.ip, 8080, NODE_IP, sport, TCP.RST | TCP.ACK));
    };
    const a = await analyze(scenario(tmpBundle('health-terminating'), {
      extra: (w) => {
        w.conntrack(ct(51500, OLD.ip, 8080));
        conn(w, 51500);
        w.conntrack(ct(51501, VIP, 80));
        conn(w, 51501);
      },
    }));
    expect(a.failures.find((f) => f.client === `${NODE_IP}:51500`)).toBeUndefined();
    expect(a.ignored?.some((x) => x.group === 'health-check' && x.why.includes(`${NODE_IP}:51500 -> ${OLD.ip}:8080`) && /terminating/.test(x.why))).toBe(true);
    const viaVip = a.failures.find((f) => f.client === `${NODE_IP}:51501`);
    expect(viaVip?.service).toBe(`${VIP}:80`);
    expect(viaVip?.backend.pod).toBe(`default/${OLD.name}`);
  });

  it('... also before the deletion was received, after the SIGTERM that follows it (a watch 100 ms late)', async () => {
    // real node, local-blackhole (iptables): the deletion received 109 ms after the SIGTERM, the kubelet's probe
    // refused 41 ms after the close, in between; here the kube rows come 100 ms late: deletion at +2.1, SIGTERM +2.03
    const ct = { ts_ns: at(2.05) + 50_000, type: 'NEW' as const, proto: 'tcp', state: 'SYN_SENT', orig_src: NODE_IP, orig_dst: OLD.ip, orig_sport: 51600, orig_dport: 8080, reply_src: OLD.ip, reply_dst: NODE_IP, reply_sport: 8080, reply_dport: 51600, flags: 'UNREPLIED', zone: null, raw: null };
    const a = await analyze(scenario(tmpBundle('health-terminating-late'), {
      kubeSkew: 0.1,
      extra: (w) => {
        w.conntrack(ct);
        w.packet(pkt(at(2.05), NODE_IP, 51600, OLD.ip, 8080, TCP.SYN));
        w.packet(pkt(at(2.05) + 60_000, OLD.ip, 8080, NODE_IP, 51600, TCP.RST | TCP.ACK));
        rst(w, 2.05 + 30e-6, OLD.ip, 51600);
      },
    }));
    expect(a.pods[0]!.deletionAt! > a.pods[0]!.sigtermAt!).toBe(true);
    expect(a.failures.find((f) => f.client === `${NODE_IP}:51600`)).toBeUndefined();
    expect(a.ignored?.some((x) => x.group === 'health-check' && x.why.includes(`${NODE_IP}:51600 -> ${OLD.ip}:8080`) && /terminating/.test(x.why))).toBe(true);
  });

  it('a SYN from the node straight to a not-ready pod IP (no DNAT) is a health check, not a failure', async () => {
    const a = await analyze(scenario(tmpBundle('health'), {
      notReady: true,
      extra: (w) => {
        // kubelet readiness probe at +1.2: NEW listens only at +1.8 and is Ready at +1.45
        w.conntrack({ ts_ns: at(1.2) + 50_000, type: 'NEW', proto: 'tcp', state: 'SYN_SENT', orig_src: NODE_IP, orig_dst: NEW.ip, orig_sport: 51000, orig_dport: 8080, reply_src: NEW.ip, reply_dst: NODE_IP, reply_sport: 8080, reply_dport: 51000, flags: 'UNREPLIED', zone: null, raw: null });
        w.packet(pkt(at(1.2), NODE_IP, 51000, NEW.ip, 8080, TCP.SYN));
        w.packet(pkt(at(1.2) + 60_000, NEW.ip, 8080, NODE_IP, 51000, TCP.RST | TCP.ACK));
        rst(w, 1.2 + 30e-6, NEW.ip, 51000);
      },
    }));
    expect(a.failures.find((f) => f.client === `${NODE_IP}:51000`)).toBeUndefined();
    expect(a.warnings?.some((x) => /^1 connection\(s\) straight to not-ready pods/.test(x))).toBe(true);
    expect(a.ignored?.some((x) => x.group === 'health-check' && x.why.includes(`${NODE_IP}:51000 -> ${NEW.ip}:8080`))).toBe(true);
    // the probe through the VIP that reached NEW before it listened stays a not-ready failure
    const nr = a.failures.filter((f) => f.cause === 'not-ready');
    expect(nr).toHaveLength(1);
    expect(nr[0]!.service).toBe('10.96.0.10:80');
  });
});

describe('kernel resets seen only by ebpf', () => {
  it('packets show the connection completed, or never saw it while carrying the pod: not failures', async () => {
    const a = await analyze(scenario(tmpBundle('ebpf-only'), {
      extra: (w) => {
        // a finished exchange with NEW, then a late RST for it
        const t = at(3.0);
        w.packet(pkt(t, NODE_IP, 52000, NEW.ip, 8080, TCP.SYN));
        w.packet(pkt(t + 100_000, NEW.ip, 8080, NODE_IP, 52000, TCP.SYN | TCP.ACK));
        w.packet(pkt(t + 200_000, NODE_IP, 52000, NEW.ip, 8080, TCP.ACK | TCP.PSH, 80));
        w.packet(pkt(t + 300_000, NEW.ip, 8080, NODE_IP, 52000, TCP.ACK | TCP.PSH | TCP.FIN, 150));
        w.packet(pkt(t + 400_000, NODE_IP, 52000, NEW.ip, 8080, TCP.ACK | TCP.FIN));
        rst(w, 3.1, NEW.ip, 52000);
        // an RST for a flow no captured packet carried, while NEW's traffic was captured
        rst(w, 3.2, NEW.ip, 52001);
        // an RST from OLD's IP 2.4 s after OLD was DELETED (+2.6): no pod held the address
        rst(w, 5.0, OLD.ip, 52002);
      },
    }));
    expect(a.failures.map((f) => f.client).filter((c) => c.startsWith(NODE_IP))).toEqual([]);
    expect(a.failures).toHaveLength(2); // the two refused probes of the race
    const w = [...a.warnings!, ...a.ignored!.map((x) => x.why)].join('\n');
    expect(w).toMatch(/2 kernel reset\(s\) seen only by ebpf ignored/);
    expect(w).toMatch(/52000 .*the packets show this connection \(5 packets, handshake completed, response sent, FIN\)/);
    expect(w).toMatch(/52001 .*no packet of this connection crossed the captured interface/);
    expect(w).toMatch(/1 kernel reset\(s\) from a pod IP outside every pod's observed tenure/);
    expect(w).toMatch(/52002 .*outside its observed tenure of default\/web-7b685bbcdd-cktdt/);
  });

  it('without packets: NO_SOCKET while the listener was open is not a failure; after the close it is, with what it cannot prove', async () => {
    const path = scenario(tmpBundle('ebpf-nopackets'), {
      failAt: [],
      extra: (w) => {
        // the recorder reports listeners found at attach as listen events (how=proc)
        w.event(ev('listen', at(0.01), 'strace', `pid:${OLD.pid}`, { pid: OLD.pid, fd: 3, addr: '0.0.0.0', port: 8080, how: 'proc', netns: OLD.netns }));
        rst(w, 1.0, OLD.ip, 53000); // OLD listening since before the recording, closes at +2.0305
        rst(w, 2.3, OLD.ip, 53001); // after the close, before the rule removal at +2.731
      },
    });
    const db = new Database(path);
    db.exec('DELETE FROM packets; DELETE FROM conntrack');
    db.close();
    const a = await analyze(path);
    expect(a.failures.map((f) => f.client)).toEqual([`${NODE_IP}:53001`]);
    const f = a.failures[0]!;
    expect(f.cause).toBe('listener-closed');
    expect(f.backend.pod).toBe(`default/${OLD.name}`);
    expect(f.evidence.some((e) => e.startsWith('ebpf-only:') && e.includes('cannot tell') && e.includes('packets were not captured'))).toBe(true);
    expect(a.ignored?.some((x) => x.why.includes('53000') && x.why.includes('NO_SOCKET while default/web-7b685bbcdd-cktdt listened'))).toBe(true);
  });
});

describe('a socketless reset to a client this network namespace never saw', () => {
  // real node, a concurrent test's netns on the same host: its pod 10.244.0.5 refused 198.18.72.219 there,
  // and tcp:tcp_send_reset (host-wide, no netns without a socket) put that reset in this bundle
  const foreign = (w: BundleWriter, s: number, client: string, dport: number) =>
    w.event(ev('tcp-reset-sent', at(s), 'ebpf', null, { saddr: OLD.ip, sport: 8080, daddr: client, dport, reason: 'NO_SOCKET', pid: 1, comm: 'swapper/0' }));
  it('is not a failure when conntrack (complete, recording flows around it) and the capture never saw the client; one conntrack saw is kept', async () => {
    const a = await analyze(scenario(tmpBundle('ebpf-foreign'), {
      extra: (w) => {
        foreign(w, 2.3, '198.18.72.219', 12814);
        // the same, from a client this namespace's conntrack tracked (an unanswered SYN through the VIP)
        w.conntrack({ ts_ns: at(2.3) - 40_000, type: 'NEW', proto: 'tcp', state: 'SYN_SENT', orig_src: '198.18.72.220', orig_dst: VIP, orig_sport: 12815, orig_dport: 80,
          reply_src: OLD.ip, reply_dst: '198.18.72.220', reply_sport: 8080, reply_dport: 12815, flags: 'UNREPLIED', zone: null, raw: null });
        foreign(w, 2.3, '198.18.72.220', 12815);
      },
    }));
    expect(a.failures.find((f) => f.client.startsWith('198.18.72.219'))).toBeUndefined();
    expect(a.ignored?.some((x) => x.group === 'reset-artifact' && x.why.includes('198.18.72.219:12814')
      && x.why.includes("198.18.72.219 appears nowhere in this network namespace's conntrack") && x.why.includes('another network namespace'))).toBe(true);
    const kept = a.failures.find((f) => f.client === '198.18.72.220:12815');
    expect(kept?.backend.pod).toBe(`default/${OLD.name}`);
  });
});

describe('kernel resets of another network namespace', () => {
  it('an ebpf-only RST from the pod\'s address sent in a namespace the pod never used is not a failure; one from its own is', async () => {
    // seen on the real node while other labs ran: their pods hold the same 10.244.0.x addresses, and the
    // tracepoint reports every namespace's resets (NO_SOCKET: the namespace of the device that received the SYN)
    const path = scenario(tmpBundle('ebpf-netns'), {
      failAt: [],
      extra: (w) => {
        w.event(ev('tcp-reset-sent', at(2.3), 'ebpf', null, { saddr: OLD.ip, sport: 8080, daddr: '10.244.1.2', dport: 42016, reason: 'NO_SOCKET', pid: 12246, comm: 'node', netns: 4026533121 }));
        w.event(ev('tcp-reset-sent', at(2.4), 'ebpf', null, { saddr: OLD.ip, sport: 8080, daddr: NODE_IP, dport: 53002, reason: 'NO_SOCKET', pid: 1, comm: 'swapper/0', netns: OLD.netns }));
      },
    });
    const db = new Database(path);
    db.exec('DELETE FROM packets; DELETE FROM conntrack');
    db.close();
    const a = await analyze(path);
    expect(a.failures.map((f) => f.client)).toEqual([`${NODE_IP}:53002`]);
    expect(a.ignored?.some((x) => x.group === 'reset-artifact' && x.why.includes('10.244.1.2:42016') && x.why.includes(`sent in network namespace 4026533121, not default/${OLD.name}'s (${OLD.netns})`))).toBe(true);
  });
});

describe('receipt-stamped rule changes', () => {
  it('a probe refused with no backend just before the no-endpoint rule was received is no-endpoint, saying so', async () => {
    const a = await analyze(scenario(tmpBundle('noep-receipt'), {
      failAt: [],
      extra: (w) => {
        // the service lost its last endpoint: the reject rule was received 3.8 ms after the refusal
        w.event(ev('no-endpoint-rule-added', at(5.0), 'nftables', 'default/web:http', { service: 'default/web:http', vip: `${VIP}:80`, node_port: null, action: 'reject', mode: 'nftables' }));
        w.probeRequest({ start_ns: at(5.0) - 4_800_000, end_ns: at(5.0) - 3_800_000, local_addr: '10.0.0.5', local_port: 29001, remote: `${VIP}:80`, outcome: 'error', status: null, error: 'ECONNREFUSED' });
        // long before the rule: no backend and nothing to go on stays unknown
        w.probeRequest({ start_ns: at(4.5), end_ns: at(4.5) + 1_000_000, local_addr: '10.0.0.5', local_port: 29000, remote: `${VIP}:80`, outcome: 'error', status: null, error: 'ECONNREFUSED' });
      },
    }));
    const near = a.failures.find((f) => f.client === '10.0.0.5:29001');
    expect(near?.cause).toBe('no-endpoint');
    expect(near?.evidence.join('\n')).toMatch(/received 3\.8 ms after this failure, within the receipt delay of nft monitor/);
    expect(a.failures.find((f) => f.client === '10.0.0.5:29000')?.cause).toBe('unknown');
  });
});
