import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { conntrackFailures } from '../lab/conntrack.js';
import { parseConntrackLine, parseConntrackText } from '../recorder/sources/conntrack/parse.js';
import type { ConntrackRow } from '../schemas/rows.js';

// the lab reads conntrack with the recorder's parser: rows where p.t === 'row', the rest counted
const parseConntrack = (text: string) => { const r = parseConntrackText(text); return { events: r.rows, skipped: r.malformed }; };
const row = (l: string): ConntrackRow => { const p = parseConntrackLine(l); if (p.t !== 'row') throw new Error(`not a row: ${l}`); return p.row; };

describe('lab conntrack reader', () => {
  it('parses real conntrack -E -o timestamp,extended output and counts malformed lines', () => {
    const { events, skipped } = parseConntrack(readFileSync('fixtures/lab/conntrack-refused-and-ok.txt', 'utf8'));
    expect(events).toHaveLength(8);
    expect(skipped).toBe(2);
    expect(events[0]).toMatchObject({ type: 'NEW', proto: 'tcp', state: 'SYN_SENT', flags: 'UNREPLIED', orig_src: '127.0.0.1', orig_dport: 8080, reply_sport: 8080 });
    expect(events[0]!.ts_ns).toBe(1795292166855727000);
    expect(events[7]).toMatchObject({ type: 'DESTROY', state: 'CLOSE', orig_dport: 8081 });
  });

  it('finds the refused connection (SYN_SENT -> CLOSE) and not the completed one', () => {
    const { events } = parseConntrack(readFileSync('fixtures/lab/conntrack-refused-and-ok.txt', 'utf8'));
    const f = conntrackFailures(events, (_ip, port) => port === 8080 || port === 8081);
    expect(f).toEqual([{ atNs: 1795292166874492000, client: '127.0.0.1:46366', service: '127.0.0.1:8081', backendIp: null, backendPort: null, kind: 'refused' }]);
  });

  it('attributes a refused DNATed connection to the backend in the reply tuple', () => {
    const lines = [
      '[1795292601.229000]\t    [NEW] ipv4     2 tcp      6 120 SYN_SENT src=10.244.0.1 dst=10.96.0.10 sport=28422 dport=80 [UNREPLIED] src=10.244.0.3 dst=10.244.0.1 sport=8080 dport=28422',
      '[1795292601.229455]\t[DESTROY] ipv4     2 tcp      6 120 CLOSE src=10.244.0.1 dst=10.96.0.10 sport=28422 dport=80 [UNREPLIED] src=10.244.0.3 dst=10.244.0.1 sport=8080 dport=28422',
    ];
    const evs = lines.map(row);
    const f = conntrackFailures(evs, (ip, port) => ip === '10.96.0.10' && port === 80);
    expect(f).toEqual([{ atNs: 1795292601229455000, client: '10.244.0.1:28422', service: '10.96.0.10:80', backendIp: '10.244.0.3', backendPort: 8080, kind: 'refused' }]);
    expect(conntrackFailures(evs, () => false)).toEqual([]);
  });

  it('a connection queued for accept and reset when the listener closed is a failure; a normal close is not', () => {
    // shaped like the race bundle's 10.244.0.1:21123: SYN_SENT -> SYN_RECV -> ESTABLISHED -> CLOSE (RST), 3 ms after the handshake
    const flow = (sport: number, last: string) => [
      `[1795297958.996752]\t    [NEW] ipv4     2 tcp      6 120 SYN_SENT src=10.244.0.1 dst=10.96.0.10 sport=${sport} dport=80 [UNREPLIED] src=10.244.0.2 dst=10.244.0.1 sport=8080 dport=${sport}`,
      `[1795297958.996769]\t [UPDATE] ipv4     2 tcp      6 60 SYN_RECV src=10.244.0.1 dst=10.96.0.10 sport=${sport} dport=80 src=10.244.0.2 dst=10.244.0.1 sport=8080 dport=${sport}`,
      `[1795297958.996775]\t [UPDATE] ipv4     2 tcp      6 432000 ESTABLISHED src=10.244.0.1 dst=10.96.0.10 sport=${sport} dport=80 src=10.244.0.2 dst=10.244.0.1 sport=8080 dport=${sport} [ASSURED]`,
      `[1795297958.999907]\t [UPDATE] ipv4     2 tcp      6 10 ${last} src=10.244.0.1 dst=10.96.0.10 sport=${sport} dport=80 src=10.244.0.2 dst=10.244.0.1 sport=8080 dport=${sport} [ASSURED]`,
    ].map(row);
    const svc = (ip: string, port: number) => ip === '10.96.0.10' && port === 80;
    const closes = [{ ip: '10.244.0.2', atNs: 1795297958999800000 }];
    expect(conntrackFailures(flow(21123, 'CLOSE'), svc, [], 300e6, closes)).toEqual([
      { atNs: 1795297958999907000, client: '10.244.0.1:21123', service: '10.96.0.10:80', backendIp: '10.244.0.2', backendPort: 8080, kind: 'reset-at-close' },
    ]);
    // a FIN exchange at the same instant is an orderly close; a reset long after the close is not this
    expect(conntrackFailures(flow(21124, 'FIN_WAIT'), svc, [], 300e6, closes)).toEqual([]);
    expect(conntrackFailures(flow(21125, 'CLOSE'), svc, [], 300e6, [{ ip: '10.244.0.2', atNs: 1795297958000000000 }])).toEqual([]);
  });
});

const KILL = 1796143216713675500;
describe('closed-at-kill on a loaded node', () => {
  // real node, grace-too-short (iptables): containerd logged "Kill container" 283 ms before the SIGKILL was
  // generated (ebpf), the app's sockets closed 295 ms after the log line and containerd's exit event came at
  // +386 ms. The rows are the recorder's conntrack rows of one slow request cut by that kill; the lab's own
  // reader stamps on receipt too, here placed 25 ms later (past the 300 ms window after the log line).
  const rows = (JSON.parse(readFileSync(new URL('../fixtures/conntrack/grace-too-short-killed-late.json', import.meta.url), 'utf8')) as ConntrackRow[])
    .map((r) => ({ ...r, ts_ns: r.ts_ns > KILL ? r.ts_ns + 25e6 : r.ts_ns }));
  const isService = (ip: string, port: number) => ip === '10.96.0.10' && port === 80;
  it('a connection cut when the killed process died, after the window from the logged kill, is closed-at-kill when the exit is known', () => {
    expect(conntrackFailures(rows, isService, [{ ip: '10.244.0.2', atNs: KILL }])).toEqual([]);
    const f = conntrackFailures(rows, isService, [{ ip: '10.244.0.2', atNs: KILL, untilNs: KILL + 386e6 + 50e6 }]);
    expect(f).toMatchObject([{ client: '192.168.77.1:42468', kind: 'closed-at-kill', backendIp: '10.244.0.2' }]);
  });
});
