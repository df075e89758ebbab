/**
 * Compares `rolltrace analyze --format json` of a lab bundle with the lab's truth file (issue 3).
 * Returns the list of disagreements (empty = the analysis matches the truth) and a summary for logs.
 */
import type { Analysis, AnalysisFailure } from '../schemas/analysis.js';
import { nsFromIso } from '../schemas/analysis.js';
import type { Truth } from '../lab/truth.js';
import { join } from 'node:path';
import { expect } from 'vitest';
import { RULE_RECEIPT_SLACK_NS } from '../analyzer/model/failures.js';

/** listener close: the analysis must be within 5 ms of the backend's own log line */
export const LISTENER_TOLERANCE_NS = 5e6;
/**
 * Rule removal: the nftables source stamps `nft monitor` lines on receipt (it has no kernel stamp).
 * The monitor is notified when the sync's transaction commits, i.e. before `nft -f` (or
 * iptables-restore) returns and the lab stamps syncEnd; what comes after the commit is the pipe read
 * plus the JSON parse in the recorder, a few ms, 25-37 ms when this 2-core machine is shared (a CI run
 * stamped one 26.3 ms after syncEnd). We allow the analysis' own bound on that receipt lag, syncEnd +
 * 50 ms: still far below the ~700 ms gap the analysis measures, and far from the previous or next sync
 * (≥ 300 ms apart in these scenarios), so a removal from the wrong sync cannot pass.
 */
export { RULE_RECEIPT_SLACK_NS };

export interface Expectation {
  failures: 'some' | 'none';
  cause: 'listener-closed' | 'no-endpoint' | 'killed-in-flight' | 'not-ready' | null;
  /** verdict of every terminated pod; null: not checked (depends on which pod the rollout hit) */
  verdict: 'listener-closed-before-rule-removed' | 'safe' | 'unknown' | 'ignored-sigterm' | null;
}

export const EXPECT: Record<string, Expectation> = {
  race: { failures: 'some', cause: 'listener-closed', verdict: 'listener-closed-before-rule-removed' },
  iptables: { failures: 'some', cause: 'listener-closed', verdict: 'listener-closed-before-rule-removed' },
  prestop: { failures: 'none', cause: null, verdict: 'safe' },
  'grace-too-short': { failures: 'some', cause: 'killed-in-flight', verdict: 'ignored-sigterm' },
  'not-ready': { failures: 'some', cause: 'not-ready', verdict: null },
  'local-blackhole': { failures: 'some', cause: 'no-endpoint', verdict: null },
};

/**
 * A client-log failure is stamped when the attempt ended: a refusal right after its SYN, a timeout
 * the client's timeout later (lab/backend/client.mjs --timeout-ms, 1000 by default). The analysis
 * stamps a timeout at its SYN. Matching allows ±200 ms around that (the client is a Node process on a
 * shared machine; its log stamps come from its event loop), and the SYNs are 100 ms apart, so each
 * truth entry is matched to one analysis failure, the earliest still unmatched in that window: the client connects one at a time and its log is
 * in that order, while its event loop stamps some lines late. Nearest first let one late line (real node,
 * local-blackhole nftables: two timeouts logged 28 ms apart for SYNs 100 ms apart) take its successor's
 * failure, each later line the next one's, and the last matched nothing.
 */
export const CLIENT_TIMEOUT_NS = 1e9;

/** a truth failure's expected cause: refused/timeout with no backend → no-endpoint; refused at a backend pod → listener-closed */
function expectedCause(tf: Truth['failures'][number], exp: Expectation): Expectation['cause'] {
  if (tf.kind === 'closed-at-kill') return 'killed-in-flight';
  if (tf.kind === 'reset-at-close') return 'listener-closed';
  if (!tf.backendPod) return exp.cause === 'no-endpoint' ? 'no-endpoint' : exp.cause;
  // refused by, or (real node) timed out into, a pod the rules still sent it to
  if (exp.cause === 'no-endpoint' && (tf.kind === 'refused' || tf.kind === 'timeout')) return 'listener-closed';
  return exp.cause;
}

/**
 * intervals in which the truth's kube-proxy syncs routed the scenario's service to no endpoint at all
 * (only that service: a real node also programs `default/kubernetes`)
 */
export function noEndpointWindows(t: Truth): Array<[number, number]> {
  const eps = new Set<string>();
  const out: Array<[number, number]> = [];
  let emptySince: number | null = null;
  const mine = (r: string) => r.startsWith(`${t.service.namespace}/${t.service.name}:`);
  for (const s of [...t.syncs].sort((x, y) => x.startNs - y.startNs)) {
    if (s.error) continue;
    const had = eps.size;
    for (const r of s.removed) if (mine(r)) eps.delete(r);
    for (const r of s.added) if (mine(r)) eps.add(r);
    if (had > 0 && eps.size === 0) emptySince = s.startNs;
    else if (emptySince !== null && eps.size > 0) { out.push([emptySince, s.endNs]); emptySince = null; }
  }
  if (emptySince !== null) out.push([emptySince, t.endNs]);
  return out;
}

const ms = (ns: number) => `${(ns / 1e6).toFixed(3)} ms`;

type FailKind = 'refused' | 'reset' | 'timeout';
/** how an address-less client-log failure failed: its kind, or the error the client logged */
export function clientLogKind(tf: Truth['failures'][number]): FailKind | null {
  if (tf.kind === 'timeout') return 'timeout';
  return /ECONNREFUSED/.test(tf.error ?? '') ? 'refused' : /ECONNRESET/.test(tf.error ?? '') ? 'reset' : null;
}
/** how an analysis failure failed, from its error text (packet summary or probe error) */
export function analysisKind(f: AnalysisFailure): FailKind | null {
  const e = f.error ?? '';
  if (/never answered|timeout|ETIMEDOUT/i.test(e)) return 'timeout';
  if (/answered by RST|ECONNREFUSED|unreachable/i.test(e)) return 'refused';
  if (/reset|RST|ECONNRESET/i.test(e)) return 'reset';
  return null;
}

export function compareWithTruth(a: Analysis, t: Truth, exp: Expectation): { problems: string[]; summary: string[] } {
  const problems: string[] = [];
  const summary: string[] = [];
  // terminated pods
  for (const tp of t.pods) {
    const key = `${tp.namespace}/${tp.name}`;
    const ap = a.pods.find((p) => `${p.namespace}/${p.name}` === key);
    if (!ap) { problems.push(`pod ${key}: terminated in the truth, missing from the analysis`); continue; }
    const closed = ap.listenerClosedAt ? nsFromIso(ap.listenerClosedAt) : null;
    if (tp.listenerClosedNs !== null) {
      if (closed === null) problems.push(`pod ${key}: listenerClosedAt null, truth ${tp.listenerClosedNs}`);
      else {
        // the backend stamps right before and right after its close(2): the kernel's close lies between
        // (a descheduled backend can widen that window); 5 ms from the window, as issue 3 asks
        const lo = tp.listenerClosedNs;
        const hi = Math.max(lo, tp.listenerClosedAfterNs ?? lo);
        const off = closed < lo ? closed - lo : closed > hi ? closed - hi : 0;
        if (Math.abs(off) > LISTENER_TOLERANCE_NS) problems.push(`pod ${key}: listenerClosedAt off by ${ms(off)} from the truth's close window of ${ms(hi - lo)} (> 5 ms)`);
      }
    }
    const rule = ap.ruleRemovedAt ? nsFromIso(ap.ruleRemovedAt) : null;
    if (tp.ruleRemoved) {
      const { syncStartNs: s, syncEndNs: e } = tp.ruleRemoved;
      if (rule === null) problems.push(`pod ${key}: ruleRemovedAt null, truth sync ${tp.ruleRemoved.seq}`);
      else if (rule < s || rule > e + RULE_RECEIPT_SLACK_NS) problems.push(`pod ${key}: ruleRemovedAt ${ms(rule - s)} from sync ${tp.ruleRemoved.seq} start, window ${ms(e - s)} + ${ms(RULE_RECEIPT_SLACK_NS)}`);
    } else if (rule !== null) problems.push(`pod ${key}: ruleRemovedAt ${ap.ruleRemovedAt} but the truth has no sync removing it`);
    if (exp.verdict && ap.verdict !== exp.verdict) problems.push(`pod ${key}: verdict ${ap.verdict}, expected ${exp.verdict}`);
    summary.push(`pod ${key}: closed ${closed !== null && tp.listenerClosedNs !== null ? `Δ${ms(closed - tp.listenerClosedNs)}` : `${ap.listenerClosedAt}/${tp.listenerClosedNs}`}, rule ${rule !== null && tp.ruleRemoved ? `sync+${ms(rule - tp.ruleRemoved.syncStartNs)} (window ${ms(tp.ruleRemoved.syncEndNs - tp.ruleRemoved.syncStartNs)})` : String(ap.ruleRemovedAt)}, exposure ${ap.exposureMs} ms, verdict ${ap.verdict}, failed ${ap.failedConnections}`);
  }
  // failures: same set of client ip:port, same backend pod, right cause
  const used = new Set<AnalysisFailure>();
  const byClient = new Map(a.failures.map((f) => [f.client, f]));
  // clients the truth names: their failures are those entries' own, never an address-less entry's
  const claimed = new Set(t.failures.filter((f) => f.client !== '?').map((f) => f.client));
  for (const tf of t.failures) {
    let af = tf.client !== '?' ? byClient.get(tf.client) : undefined;
    // the client's log has no local address for a refused or timed-out connect: match it by service and
    // time (the log stamps the end of the attempt; a timeout's SYN went out up to its timeout earlier).
    // The analysis may know more than the log: a failure it attributed to a backend pod (packets, ebpf)
    // qualifies too, if no truth entry names its client and it failed the same way (refused, reset or
    // timed out); a backend it names must then lie inside that pod's exposure in the truth (below)
    if (tf.client === '?') {
      const want = clientLogKind(tf);
      af = a.failures.filter((f) => !used.has(f) && f.service === tf.service && (!f.backend.pod || (want !== null && !claimed.has(f.client) && analysisKind(f) === want)))
        .map((f) => ({ f, d: tf.atNs - (nsFromIso(f.at) ?? 0) - (tf.kind === 'timeout' ? CLIENT_TIMEOUT_NS : 0) }))
        .filter((x) => x.d >= -200e6 && x.d <= 200e6)
        .sort((x, y) => y.d - x.d)[0]?.f;
    }
    if (!af) { problems.push(`failure ${tf.client} -> ${tf.service} (${tf.kind}, backend ${tf.backendPod}) at ${tf.atNs}: not reported`); continue; }
    used.add(af);
    // a failure the truth knows only from the client's log has no backend in the truth: the analysis may
    // name one, if the truth's own timeline of that pod says its listener was closed and its rule still in
    if (!tf.backendPod && tf.from === 'client-log' && af.backend.pod && af.cause === 'listener-closed') {
      const tp = t.pods.find((p) => `${p.namespace}/${p.name}` === af.backend.pod);
      const at = nsFromIso(af.at) ?? 0;
      const slack = 10e6;
      if (!tp || tp.listenerClosedNs === null || at < tp.listenerClosedNs - slack || at > (tp.ruleRemoved?.syncEndNs ?? Infinity) + slack) {
        problems.push(`failure ${tf.client}: analysis names backend ${af.backend.pod} (listener-closed) at ${af.at}, outside that pod's exposure in the truth`);
      }
      continue;
    }
    if ((af.backend.pod ?? null) !== (tf.backendPod ?? null)) problems.push(`failure ${tf.client}: backend pod ${af.backend.pod}, truth ${tf.backendPod}`);
    // conntrack cannot see whether the app had already accepted a connection that was reset as it shut
    // down: reset in the accept queue at the close (listener-closed) or accepted and aborted when the
    // process exited with it unserved (killed-in-flight; the kernel says TCP_ABORT_ON_CLOSE). Either is right.
    if (tf.kind === 'reset-at-close' && (af.cause === 'listener-closed' || af.cause === 'killed-in-flight')) continue;
    const want = expectedCause(tf, exp);
    if (want && af.cause !== want) problems.push(`failure ${tf.client}: cause ${af.cause}, expected ${want}`);
  }
  const noEp = noEndpointWindows(t);
  let provenNoEp = 0;
  for (const af of a.failures) {
    if (used.has(af)) continue;
    // the truth sees failures only in conntrack and the client netns' log: a SYN rejected by the
    // no-endpoint rule is never confirmed in conntrack, so the recorder's own probe failing while the
    // truth's syncs left the service with no endpoint at all is a failure the truth cannot list
    const at = nsFromIso(af.at) ?? 0;
    if (af.cause === 'no-endpoint' && !af.backend.pod && noEp.some(([s, e]) => at >= s && at <= e)) { provenNoEp++; continue; }
    problems.push(`false alarm: ${af.client} -> ${af.service} backend ${af.backend.ip}:${af.backend.port} (${af.backend.pod}) cause ${af.cause} at ${af.at} via ${af.via?.join(',')}`);
  }
  if (provenNoEp) summary.push(`${provenNoEp} no-endpoint failure(s) beyond the truth's list, inside the truth's own no-endpoint window(s)`);
  if (exp.failures === 'none' && t.failures.length) problems.push(`the truth has ${t.failures.length} failures, the scenario expects none`);
  if (exp.failures === 'some' && !t.failures.length) problems.push('the truth has no failure, the scenario expects some');
  summary.push(`failures: truth ${t.failures.length}, analysis ${a.failures.length} (${[...new Set(a.failures.map((f) => f.cause))].join(',') || '-'})`);
  return { problems, summary };
}

/**
 * Two nodes' bundles merged in both orders (`merge A B`, `merge B A`) and analyzed: the analyses must agree
 * (up to the bundle-specific verify commands and excerpts); returns the first, with both nodes in it.
 */
export async function mergedBothOrders(cli: (args: string[]) => Promise<{ code: number; stdout: string }>, out1: string, out2: string, dir: string): Promise<Analysis> {
  const ab = join(dir, 'ab.rtb'), ba = join(dir, 'ba.rtb');
  expect((await cli(['merge', out1, out2, '--out', ab])).code).toBe(0);
  expect((await cli(['merge', out2, out1, '--out', ba])).code).toBe(0);
  const x = JSON.parse((await cli(['analyze', ab, '--format', 'json'])).stdout) as Analysis;
  const y = JSON.parse((await cli(['analyze', ba, '--format', 'json'])).stdout) as Analysis;
  const stripOrder = (a: Analysis) => ({ ...a, excerpts: undefined, recommendation: { ...a.recommendation, verify: [] } });
  expect(stripOrder(y)).toEqual(stripOrder(x));
  expect(x.bundle.nodes).toEqual(['lab-node', 'lab-node2']);
  return x;
}
