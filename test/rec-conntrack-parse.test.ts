import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { parseConntrackLine, parseConntrackText } from '../recorder/sources/conntrack/parse.js';

const fx = (f: string) => readFileSync(new URL(`../fixtures/conntrack/${f}`, import.meta.url), 'utf8');

describe('conntrack -E -o timestamp,extended,id parser (golden, real capture)', () => {
  const p = parseConntrackText(fx('events.txt'));

  it('parses every line of the real capture', () => {
    expect(p.malformed).toBe(0);
    expect(p.rows).toHaveLength(11);
    expect(p.rows.map((r) => r.type)).toEqual(['NEW', 'UPDATE', 'UPDATE', 'UPDATE', 'UPDATE', 'UPDATE', 'NEW', 'DESTROY', 'DESTROY', 'DESTROY', 'NEW']);
  });

  it('an accepted connection through DNAT: orig is client -> VIP, reply source is the backend', () => {
    const r = p.rows[0]!;
    expect(r).toMatchObject({
      type: 'NEW', proto: 'tcp', state: 'SYN_SENT',
      orig_src: '10.244.0.5', orig_dst: '10.96.0.10', orig_sport: 38656, orig_dport: 80,
      reply_src: '10.244.0.5', reply_dst: '10.244.0.5', reply_sport: 8080, reply_dport: 38656,
      flags: 'UNREPLIED', zone: null,
    });
    expect(r.ts_ns).toBe(1795292068850436000);
    expect(r.raw).toMatch(/^\[1795292068\.850436\]/);
    expect(p.rows[2]).toMatchObject({ type: 'UPDATE', state: 'ESTABLISHED', flags: 'ASSURED' });
  });

  it('a refused connection (RST from the backend): NEW then DESTROY CLOSE, both UNREPLIED, reply_src the backend', () => {
    const conn = p.rows.filter((r) => r.orig_dst === '10.96.0.20');
    expect(conn.map((r) => [r.type, r.state, r.flags])).toEqual([['NEW', 'SYN_SENT', 'UNREPLIED'], ['DESTROY', 'CLOSE', 'UNREPLIED']]);
    expect(conn.every((r) => r.reply_src === '10.244.0.6' && r.reply_sport === 8081 && r.orig_sport === 34840)).toBe(true);
  });

  it('a DESTROY by conntrack -D keeps its flags; UDP has no state', () => {
    expect(p.rows[9]).toMatchObject({ type: 'DESTROY', state: 'TIME_WAIT', flags: 'ASSURED USERSPACE', orig_sport: 38656 });
    expect(p.rows[10]).toMatchObject({ type: 'NEW', proto: 'udp', state: null, orig_dport: 53, reply_src: '10.96.0.10' });
  });

  it('skips and counts malformed lines; the exit summary is not data', () => {
    const m = parseConntrackText(fx('events-malformed.txt'));
    expect(m.malformed).toBe(4);
    expect(m.rows).toHaveLength(5);
    expect(parseConntrackLine('conntrack v1.4.7 (conntrack-tools): 11 flow events have been shown.').t).toBe('noise');
    expect(parseConntrackLine('[1795292068.851]\t[NEW] ipv4 2 tcp 6 120 SYN_SENT src=1.2.3.4 dst=5.6.7.8 sport=99999 dport=80').t).toBe('malformed');
  });

  it('handles IPv6, zones and lines without -o timestamp (stamped on receipt)', () => {
    const v6 = parseConntrackLine('[1795292068.000001]\t    [NEW] ipv6     10 tcp      6 120 SYN_SENT src=fd00::1 dst=fd00:96::a sport=40000 dport=80 [UNREPLIED] src=fd00:244::5 dst=fd00::1 sport=8080 dport=40000 zone=3 id=1');
    expect(v6.t).toBe('row');
    if (v6.t === 'row') {
      expect(v6.row).toMatchObject({ orig_dst: 'fd00:96::a', reply_src: 'fd00:244::5', zone: 3, ts_ns: 1795292068000001000 });
    }
    const noTs = parseConntrackLine('    [DESTROY] tcp      6 CLOSE src=10.0.0.1 dst=10.96.0.1 sport=1234 dport=443 [UNREPLIED] src=10.244.0.9 dst=10.0.0.1 sport=6443 dport=1234', 42);
    expect(noTs.t === 'row' && noTs.row.ts_ns === 42 && noTs.row.reply_sport === 6443).toBe(true);
    expect(parseConntrackLine('    [DESTROY] tcp 6 CLOSE src=10.0.0.1 dst=10.96.0.1').t).toBe('malformed');
  });
});
