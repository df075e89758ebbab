/**
 * The failure detector's connection table: a connection idle for 60 s of capture is forgotten at the next
 * sweep (a later RST on it is no failure), one touched since is not; both directions of one 4-tuple are
 * two connections; a port read as text is the same port; unanswered SYNs time out after 3 s.
 */
import { describe, expect, it } from 'vitest';
import { FailureDetector } from '../analyzer/model/failures.js';
import { TCP, type StoredPacketRow } from '../schemas/rows.js';

const pkt = (ts: number, src: string, sport: number | string, dst: string, dport: number, flags: number, payload = 0): StoredPacketRow => ({
  id: 0, ts_ns: ts, iface: 'eth0', linktype: 1, caplen: 0, len: 0, l3: 'ip4', src, dst, proto: 'tcp', sport, dport, tcp_flags: flags, seq: null, ack: null,
  payload_len: payload, icmp_type: null, icmp_code: null, inner_src: null, inner_dst: null, inner_sport: null, inner_dport: null, inner_proto: null, data: null,
} as unknown as StoredPacketRow);

const S = 1e9;
const C = '10.244.0.5', B = '10.244.0.9';
/** handshake and a request at 1 s, no response */
const opened = [pkt(1 * S, C, 41000, B, 8080, TCP.SYN), pkt(1 * S + 1e5, B, 8080, C, 41000, TCP.SYN | TCP.ACK), pkt(1 * S + 2e5, C, 41000, B, 8080, TCP.PSH | TCP.ACK, 80)];
/** unrelated segments every 0.5 s (they match no connection): the sweeps run */
const filler = (from: number, to: number) => {
  const out: StoredPacketRow[] = [];
  for (let t = from; t < to; t += 0.5 * S) out.push(pkt(t, '10.0.0.1', 5000, '10.0.0.2', 6000, TCP.ACK));
  return out;
};
const kinds = (d: FailureDetector) => d.candidates().map((c) => `${c.client}:${c.cport} ${[...c.kinds].join(',')}`);

function run(rows: StoredPacketRow[]): FailureDetector {
  const d = new FailureDetector();
  for (const p of rows.sort((a, b) => a.ts_ns - b.ts_ns)) d.packet(p);
  d.sweep(d.lastTs, true);
  return d;
}

describe('failure detector connection table', () => {
  it('a connection idle for more than 60 s is forgotten: a RST on it later is no failure', () => {
    const d = run([...opened, ...filler(1.5 * S, 62.5 * S), pkt(62.5 * S, B, 8080, C, 41000, TCP.RST)]);
    expect(kinds(d)).toEqual([]);
  });

  it('idle for less than 60 s, or touched since, it is remembered: the RST is a failure', () => {
    expect(kinds(run([...opened, ...filler(1.5 * S, 59 * S), pkt(59 * S, B, 8080, C, 41000, TCP.RST)]))).toEqual([`${C}:41000 rst-before-response`]);
    const touched = pkt(30 * S, C, 41000, B, 8080, TCP.ACK);
    expect(kinds(run([...opened, touched, ...filler(1.5 * S, 62.5 * S), pkt(62.5 * S, B, 8080, C, 41000, TCP.RST)]))).toEqual([`${C}:41000 rst-before-response`]);
  });

  it('both directions of one 4-tuple are two connections', () => {
    // C:41000 -> B:8080 and B:8080 -> C:41000 both SYN; one side's own RST ends its connection, its next RST resets the other's
    const bothThenResets = (from: 'C' | 'B') => {
      const [x, xp, y, yp] = from === 'C' ? [C, 41000, B, 8080] : [B, 8080, C, 41000];
      return run([
        pkt(1 * S, C, 41000, B, 8080, TCP.SYN),
        pkt(1 * S + 1e5, B, 8080, C, 41000, TCP.SYN),
        pkt(1 * S + 2e5, x, xp, y, yp, TCP.RST),
        pkt(1 * S + 3e5, x, xp, y, yp, TCP.RST | TCP.ACK),
      ]);
    };
    expect(kinds(bothThenResets('C'))).toEqual([`${B}:8080 syn-rst`]);
    expect(kinds(bothThenResets('B'))).toEqual([`${C}:41000 syn-rst`]);
  });

  it('a port read as text is the same port', () => {
    const d = run([pkt(1 * S, C, 41000, B, 8080, TCP.SYN), pkt(1 * S + 1e5, B, 8080, C, '41000' as unknown as number, TCP.RST | TCP.ACK)]);
    expect(kinds(d)).toEqual([`${C}:41000 syn-rst`]);
  });

  it('SYNs unanswered for 3 s time out, in order; one answered in time does not', () => {
    const d = run([
      pkt(1 * S, C, 41001, B, 8080, TCP.SYN),
      pkt(1 * S, C, 41002, B, 8080, TCP.SYN),
      pkt(1.2 * S, C, 41003, B, 8080, TCP.SYN), pkt(3.9 * S, B, 8080, C, 41003, TCP.SYN | TCP.ACK),
      ...filler(1.5 * S, 6 * S),
    ]);
    expect(kinds(d)).toEqual([`${C}:41001 syn-timeout`, `${C}:41002 syn-timeout`]);
    expect(d.candidates().map((c) => c.ts)).toEqual([1 * S, 1 * S]);
  });

  describe('a connection at rest (handshake done, payload both ways) comes back as it was', () => {
    /** handshake at 1 s, a request, its response: done */
    const done = [...opened, pkt(1 * S + 3e5, B, 8080, C, 41000, TCP.PSH | TCP.ACK, 100)];
    const iso = (ns: number) => new Date(ns / 1e6).toISOString().replace('Z', '');

    it('a keep-alive request then a reset: unanswered, with the first handshake\'s times and the responses counted', () => {
      const d = run([...done, ...filler(1.5 * S, 5 * S), pkt(5 * S, C, 41000, B, 8080, TCP.PSH | TCP.ACK, 80), pkt(6 * S, B, 8080, C, 41000, TCP.RST)]);
      expect(kinds(d)).toEqual([`${C}:41000 reused-unanswered`]);
      const c = d.candidates()[0]!;
      expect([c.ts, c.synTs, c.establishedTs, c.answeredAt]).toEqual([6 * S, 1 * S, 1 * S + 1e5, 1 * S + 3e5]);
      expect(c.evidence[0]).toContain(`after 1 response(s) on it (request sent ${iso(5 * S)}`);
    });

    it('a reset with no request pending is no failure; forgotten after 60 s idle, remembered before', () => {
      expect(kinds(run([...done, ...filler(1.5 * S, 5 * S), pkt(6 * S, B, 8080, C, 41000, TCP.RST)]))).toEqual([]);
      const late = (t: number) => [pkt(t, C, 41000, B, 8080, TCP.PSH | TCP.ACK, 80), pkt(t + 1e5, B, 8080, C, 41000, TCP.RST)];
      expect(kinds(run([...done, ...filler(1.5 * S, 59 * S), ...late(59 * S)]))).toEqual([`${C}:41000 reused-unanswered`]);
      expect(kinds(run([...done, ...filler(1.5 * S, 62.5 * S), ...late(62.5 * S)]))).toEqual([]);
    });

    it('a SYN on its 4-tuple opens a new connection: its own times, not the old one\'s', () => {
      const d = run([...done, pkt(3 * S, C, 41000, B, 8080, TCP.SYN), ...filler(1.5 * S, 8 * S)]);
      expect(kinds(d)).toEqual([`${C}:41000 syn-timeout`]);
      expect([d.candidates()[0]!.synTs, d.candidates()[0]!.establishedTs]).toEqual([3 * S, null]);
    });

    it('an ICMP error about it names its handshake', () => {
      const icmp = { ...pkt(2 * S, B, 0, C, 0, 0), proto: 'icmp', sport: null, dport: null, tcp_flags: null, icmp_type: 3, icmp_code: 1,
        inner_src: C, inner_sport: 41000, inner_dst: B, inner_dport: 8080, inner_proto: 'tcp' } as unknown as StoredPacketRow;
      const d = run([...done, ...filler(1.5 * S, 2 * S), icmp]);
      expect(kinds(d)).toEqual([`${C}:41000 icmp-unreachable`]);
      expect([d.candidates()[0]!.synTs, d.candidates()[0]!.establishedTs]).toEqual([1 * S, 1 * S + 1e5]);
    });
  });
});
