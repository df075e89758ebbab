/**
 * compareWithTruth: a failure the truth knows only from the client's log (no local address, no backend: `?`)
 * may match a failure the analysis attributed to a backend pod (from packets and ebpf it knows more than the
 * log), when no truth entry names that failure's client, it failed the same way (refused, reset, timed out)
 * within the time tolerance, and the pod it names was exposed then. It must never let a failure the analysis
 * missed pass. Instants from a real-node local-blackhole (nftables) run: the listener closed at 05.1598, the
 * rule went at 05.9310-05.9711, the NodePort client's SYN 48320 was refused by the pod at 05.6737 (RST
 * NO_SOCKET, conntrack DNAT to 10.244.0.2), the client logged ECONNREFUSED at 05.6762.
 */
import { describe, expect, it } from 'vitest';
import type { Analysis, AnalysisFailure } from '../schemas/analysis.js';
import type { Truth, TruthFailure } from '../lab/truth.js';
import { compareWithTruth, EXPECT } from './e2e-truth.js';

const T0 = 1796170200000000000;
const at = (s: number) => T0 + Math.round(s * 1e9);
const iso = (s: number) => new Date(at(s) / 1e6).toISOString().replace('Z', `${String(Math.round(s * 1e9) % 1e6).padStart(6, '0').slice(0, 3)}Z`);
const POD = 'default/web-66c6f4748-8pfng', NP = '192.168.77.1:30080';

function truth(failures: TruthFailure[]): Truth {
  return {
    schema: 'rolltrace.lab-truth/v1', scenario: 'local-blackhole', seed: 1, node: 'lab-node', mode: 'nftables',
    service: { namespace: 'default', name: 'web', vip: '10.96.0.10', port: 80, nodePort: 30080, externalTrafficPolicy: 'Local' },
    startNs: at(0), endNs: at(20), recorder: { ran: true, exitCode: 0, reason: null }, allPods: [], syncs: [],
    pods: [{ namespace: 'default', name: 'web-66c6f4748-8pfng', uid: 'u1', ip: '10.244.0.2', port: 8080, sigtermNs: at(5.0969), sigtermReceivedNs: at(5.1595),
      listenerClosedNs: at(5.159834), listenerClosedAfterNs: at(5.1637), exitNs: at(5.1641), killed: false, killNs: null, deletionSeenNs: at(5.0752),
      preStopStartNs: null, preStopEndNs: null, endpointTerminatingNs: at(5.3437), endpointRemovedNs: at(5.9279),
      ruleRemoved: { syncStartNs: at(5.930984), syncEndNs: at(5.971124), seq: 7 } }],
    failures, conntrack: { events: 0, skipped: 0, enobufs: 0 },
  };
}
const logged = (s: number, error: string): TruthFailure => ({ atNs: at(s), client: '?', service: NP, backendIp: null, backendPort: null, backendPod: null,
  kind: /timeout/.test(error) ? 'timeout' : 'error', from: 'client-log', error });
const fromConntrack = (s: number, client: string): TruthFailure => ({ atNs: at(s), client, service: NP, backendIp: '10.244.0.2', backendPort: 8080, backendPod: POD, kind: 'refused', from: 'conntrack' });
const attributed = (s: number, client: string, error = 'SYN answered by RST'): AnalysisFailure => ({
  at: iso(s), client, service: NP, backend: { ip: '10.244.0.2', port: 8080, pod: POD }, cause: 'listener-closed', evidence: [], via: ['ebpf', 'packets'], error,
});
const analysis = (failures: AnalysisFailure[]): Analysis => ({
  pods: [{ namespace: 'default', name: 'web-66c6f4748-8pfng', ip: '10.244.0.2', deletionAt: null, sigtermAt: null, listenerClosedAt: iso(5.159877), exitedAt: null,
    endpointTerminatingAt: null, endpointRemovedAt: null, ruleRemovedAt: iso(5.952537), exposureMs: 792.66, verdict: 'listener-closed-before-rule-removed', failedConnections: failures.length, evidence: [] }],
  failures,
} as unknown as Analysis);
const problems = (a: Analysis, t: Truth) => compareWithTruth(a, t, EXPECT['local-blackhole']!).problems;

describe('compareWithTruth: a client-log failure without an address vs an attributed failure', () => {
  it('the log\'s refusal matches the refusal the analysis attributed to the pod, 2.5 ms earlier', () => {
    expect(problems(analysis([attributed(5.673736, '192.168.77.2:48320')]), truth([logged(5.676204, 'ECONNREFUSED')]))).toEqual([]);
  });

  it('never a failure another truth entry names: a refusal the analysis missed is still missing', () => {
    // the truth has 48320 from conntrack and a second refusal from the log; the analysis reported only 48320
    for (const logAt of [5.6, 5.776]) { // before 48320 in the truth's order, and after
      const p = problems(analysis([attributed(5.673736, '192.168.77.2:48320')]), truth([fromConntrack(5.674084, '192.168.77.2:48320'), logged(logAt, 'ECONNREFUSED')].sort((x, y) => x.atNs - y.atNs)));
      expect(p, `log line at ${logAt}`).toEqual([expect.stringMatching(/^failure \? -> 192\.168\.77\.1:30080 \(error, backend null\) at \d+: not reported$/)]);
    }
  });

  it('not a failure that failed another way, nor one outside the time tolerance', () => {
    // a timeout the analysis attributed (SYN never answered) is not the log's refusal
    const timedOut = attributed(5.770715, '192.168.77.2:48332', 'SYN never answered (last seen 0 ms after the first SYN)');
    expect(problems(analysis([timedOut]), truth([logged(5.676204, 'ECONNREFUSED')]))).toEqual([
      expect.stringMatching(/: not reported$/), expect.stringMatching(/^false alarm: 192\.168\.77\.2:48332 /)]);
    expect(problems(analysis([attributed(5.673736, '192.168.77.2:48320')]), truth([logged(5.9, 'ECONNREFUSED')]))).toEqual([
      expect.stringMatching(/: not reported$/), expect.stringMatching(/^false alarm: 192\.168\.77\.2:48320 /)]);
    // the log's timeout stamps the end of the attempt, its timeout after the SYN the analysis stamps
    expect(problems(analysis([timedOut]), truth([logged(6.771, 'timeout')]))).toEqual([]);
  });

  it('a pod it names must have been exposed then in the truth', () => {
    // the same refusal attributed to the pod before its listener closed: the truth's timeline contradicts it
    expect(problems(analysis([attributed(5.0, '192.168.77.2:48200')]), truth([logged(5.0025, 'ECONNREFUSED')]))).toEqual([
      expect.stringMatching(/^failure \?: analysis names backend default\/web-66c6f4748-8pfng \(listener-closed\) at \S+, outside that pod's exposure in the truth$/)]);
  });
});

describe('compareWithTruth: address-less client-log failures in the client\'s order', () => {
  // real node, local-blackhole (nftables): the NodePort client's SYNs 100 ms apart went unanswered (no endpoint, ICMP
  // rate-limited); its log stamped their timeouts 1 s later, two of them 28 ms apart (45.250, 45.278: one line late)
  const noEp = (s: number): AnalysisFailure => ({ at: iso(s), client: `192.168.77.2:${53700 + Math.round(s * 100)}`, service: NP, backend: { ip: null, port: null, pod: null },
    cause: 'no-endpoint', evidence: [], via: ['packets'], error: 'SYN never answered (last seen 0 ms after the first SYN)' });
  const syns = [44.029, 44.177, 44.278, 44.378, 44.477, 44.579, 44.679];
  const logs = [45.029, 45.250, 45.278, 45.395, 45.477, 45.581, 45.682];

  it('each timeout matches the earliest unmatched unanswered SYN: a late line does not shift the rest', () => {
    const a = { ...analysis(syns.map(noEp)), pods: [] } as unknown as Analysis;
    expect(problems(a, { ...truth(logs.map((s) => logged(s, 'timeout'))), pods: [] })).toEqual([]);
  });

  it('one SYN the analysis missed still leaves one timeout unmatched', () => {
    const a = { ...analysis(syns.filter((s) => s !== 44.378).map(noEp)), pods: [] } as unknown as Analysis;
    expect(problems(a, { ...truth(logs.map((s) => logged(s, 'timeout'))), pods: [] })).toEqual([expect.stringMatching(/^failure \? -> 192\.168\.77\.1:30080 \(timeout, backend null\) at \d+: not reported$/)]);
  });
});
