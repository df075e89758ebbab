/**
 * The truth counts each failed connection once: a failure the client logged without its local address (its
 * connect itself failed) is the same connection as a conntrack failure on the NodePort that its error names.
 *
 * Real node, local-blackhole (iptables), a run of test/e2e-real.test.ts: 192.168.77.2:49288's handshake completed
 * 3 ms before the pod's listener closed and reset it; the reset reached the client before its event loop saw the
 * connect complete, so Node failed the connect with ECONNRESET (no local address logged). The truth listed it
 * twice — conntrack's reset-at-close and the client's address-less error — and the second matched no failure
 * of the analysis, which (rightly) reported the connection once. Instants below are that run's.
 */
import { describe, expect, it } from 'vitest';
import { buildTruth, type ClientResult, type TruthInput } from '../lab/truth.js';
import type { ConntrackRow } from '../schemas/rows.js';

const T = 1796151808680000000;
const NODE = '192.168.77.1', CLIENT = '192.168.77.2', POD = '10.244.0.2';
const ct = (ts: number, type: string, state: string, sport: number): ConntrackRow => ({
  ts_ns: ts, type, proto: 'tcp', state, orig_src: CLIENT, orig_dst: NODE, orig_sport: sport, orig_dport: 30080,
  reply_src: POD, reply_dst: CLIENT, reply_sport: 8080, reply_dport: sport, flags: null, zone: null, raw: null,
} as ConntrackRow);
/** 49288: established, then reset as the listener closed (conntrack CLOSE without FIN) */
const resetAtClose = [ct(1796151808686422016, 'NEW', 'SYN_SENT', 49288), ct(1796151808686445056, 'UPDATE', 'ESTABLISHED', 49288), ct(1796151808687760000, 'UPDATE', 'CLOSE', 49288)];
/** 49298: a SYN answered by RST (the listener gone, the rule still in) */
const refused = [ct(1796151808784000000, 'NEW', 'SYN_SENT', 49298), ct(1796151808784211000, 'UPDATE', 'CLOSE', 49298)];

function truth(events: ConntrackRow[], clientResults: ClientResult[]) {
  const uid = 'edade4b3', pod = 'default/web-7bd7b4599d-c7nl2';
  const i: TruthInput = {
    scenario: 'local-blackhole', seed: 1, node: 'lab-node', mode: 'iptables',
    service: { namespace: 'default', name: 'web', vip: '10.96.0.10', port: 80, nodePort: 30080, externalTrafficPolicy: 'Local' },
    startNs: T - 10e9, endNs: T + 10e9, recorder: { ran: true, exitCode: 0, reason: null },
    kubelet: [
      { ts_ns: T - 6e9, pod, uid, ip: POD, what: 'container-started' },
      { ts_ns: 1796151808673942000, pod, uid, ip: POD, what: 'deletion-seen' },
      { ts_ns: 1796151808687548000, pod, uid, ip: POD, what: 'backend:listener-closed', detail: { after_ns: 1796151808687678200 } },
    ],
    syncs: [], slices: [], conntrack: { events, skipped: 0, enobufs: 0 }, clientResults, backendPort: 8080,
  };
  return buildTruth(i).failures.map((f) => `${f.client} ${f.kind} ${f.from}${f.error ? ` ${f.error}` : ''}`);
}
const logged = (ts: number, error: string): ClientResult => ({ ts_ns: ts, ok: false, error, target: `${NODE}:30080` });

describe('the truth: a client-log failure without an address and its conntrack twin', () => {
  it('ECONNRESET 3.3 ms after a reset-at-close on the NodePort is that connection: counted once', () => {
    expect(truth(resetAtClose, [logged(1796151808691108400, 'ECONNRESET')])).toEqual([`${CLIENT}:49288 reset-at-close conntrack`]);
  });

  it('ECONNREFUSED pairs with the refused SYN, not with the reset (the failure its error names)', () => {
    expect(truth([...resetAtClose, ...refused], [logged(1796151808691108400, 'ECONNRESET'), logged(1796151808785000000, 'ECONNREFUSED')]))
      .toEqual([`${CLIENT}:49288 reset-at-close conntrack`, `${CLIENT}:49298 refused conntrack`]);
  });

  it('a line the client logged late does not shift the pairing: each refusal counted once (real node, local-blackhole nftables)', () => {
    // that run's four refused NodePort SYNs: conntrack's SYN_SENT and CLOSE, and the client's ECONNREFUSED lines.
    // Only the last line's stamp is known (05.676204288, 2.4 ms after its RST); the first line came more than
    // 100 ms after its RST (05.340481): the nearest-first pairing then gave it 48298's twin, 48298's line 48306's,
    // 48306's line 48320's, and left 48320's own line alone, a second count of 48320 that no failure matched
    const at = (s: number) => 1796170200000000000 + Math.round(s * 1e9);
    const refusedAt = (sport: number, syn: number, close: number) => [ct(at(syn), 'NEW', 'SYN_SENT', sport), ct(at(close), 'UPDATE', 'CLOSE', sport)];
    const events = [...refusedAt(48288, 5.340281, 5.359575), ...refusedAt(48298, 5.52322, 5.52493), ...refusedAt(48306, 5.560907, 5.575956), ...refusedAt(48320, 5.673595, 5.674084)];
    const lines = [logged(at(5.45), 'ECONNREFUSED'), logged(at(5.527), 'ECONNREFUSED'), logged(at(5.5635), 'ECONNREFUSED'), logged(1796170205676204288, 'ECONNREFUSED')];
    expect(truth(events, lines)).toEqual([48288, 48298, 48306, 48320].map((p) => `${CLIENT}:${p} refused conntrack`));
    // one line too many (a refusal conntrack never saw, the node's own REJECT): that one stays, once
    expect(truth(events, [...lines, logged(at(5.78), 'ECONNREFUSED')])).toEqual([...[48288, 48298, 48306, 48320].map((p) => `${CLIENT}:${p} refused conntrack`), '? error client-log ECONNREFUSED']);
  });

  it('an ECONNRESET with no reset in conntrack near it stays a failure of its own, with the error the client logged', () => {
    expect(truth(refused, [logged(1796151808691108400, 'ECONNRESET')])).toEqual([`? error client-log ECONNRESET`, `${CLIENT}:49298 refused conntrack`]);
    expect(truth([], [logged(1796151808691108400, 'timeout')])).toEqual(['? timeout client-log timeout']);
  });
});
