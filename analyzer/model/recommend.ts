/** What to change, sized from what was measured: preStop, terminationGracePeriodSeconds, traffic policy. */
import type { AnalysisRecommendation } from '../../schemas/analysis.js';
import { ms } from '../util.js';
import { podLabel } from './identity.js';
import type { PodSequence } from './pods.js';

/** Margins, stated in the output. */
export const PRESTOP_MARGIN = { factor: 0.5, minMs: 500 } as const;
export const GRACE_MARGIN = { factor: 0.25, minMs: 2000 } as const;

export function recommend(seqs: PodSequence[], failures: Array<{ cause: string; service: string | null }>): AnalysisRecommendation {
  const notes: string[] = [];
  const props: Array<{ pod: string; node: string; ns: number }> = [];
  for (const s of seqs) {
    const start = s.deletion ?? s.sigterm;
    if (start === null) continue;
    for (const [node, at] of s.ruleRemovedByNode) if (at !== null) props.push({ pod: podLabel(s.pod), node, ns: at - start });
    if (!s.ruleRemovedByNode.size && s.ruleRemoved !== null) props.push({ pod: podLabel(s.pod), node: '', ns: s.ruleRemoved - start });
  }
  const drains: Array<{ pod: string; ns: number; killed: boolean }> = [];
  for (const s of seqs) if (s.sigterm !== null && s.exited !== null && s.exited >= s.sigterm) drains.push({ pod: podLabel(s.pod), ns: s.exited - s.sigterm, killed: s.exitSignal === 'SIGKILL' });
  let preStop: number | null = null;
  let grace: number | null = null;
  const why: string[] = [];
  if (props.length) {
    const slow = props.reduce((a, b) => (b.ns > a.ns ? b : a));
    const marginMs = Math.max(PRESTOP_MARGIN.minMs, ms(Math.max(0, slow.ns)) * PRESTOP_MARGIN.factor);
    preStop = Math.max(1, Math.ceil((ms(Math.max(0, slow.ns)) + marginMs) / 1000));
    why.push(`preStop sleep ${preStop}s: slowest propagation from deletion to rule removal was ${ms(slow.ns)} ms (${slow.pod}${slow.node ? ` on ${slow.node}` : ''}, ${props.length} measurement(s) across ${new Set(props.map((p) => p.node)).size} node(s)), plus a margin of max(${PRESTOP_MARGIN.minMs} ms, ${PRESTOP_MARGIN.factor * 100}%) = ${Math.round(marginMs)} ms, rounded up to whole seconds`);
    const drain = drains.length ? drains.reduce((a, b) => (b.ns > a.ns ? b : a)) : null;
    const drainMs = drain ? ms(drain.ns) : 0;
    const gMargin = Math.max(GRACE_MARGIN.minMs, drainMs * GRACE_MARGIN.factor);
    grace = Math.ceil((preStop * 1000 + drainMs + gMargin) / 1000);
    if (drain) {
      why.push(`terminationGracePeriodSeconds ${grace}: preStop ${preStop}s + slowest observed drain (SIGTERM to exit) ${drainMs} ms (${drain.pod}) + margin max(${GRACE_MARGIN.minMs} ms, ${GRACE_MARGIN.factor * 100}%) = ${Math.round(gMargin)} ms, rounded up`);
      if (drain.killed) notes.push(`${drain.pod} was SIGKILLed ${drainMs} ms after SIGTERM: its real drain is longer than that, so the grace period must exceed preStop + ${drainMs} ms by what the app needs to finish in-flight requests`);
    } else {
      why.push(`terminationGracePeriodSeconds ${grace}: preStop ${preStop}s + margin ${Math.round(gMargin)} ms (no SIGTERM→exit drain was observed, so the app's own drain time must be added)`);
    }
  } else {
    why.push('no recommendation: the bundle has no pod with both a deletion/SIGTERM instant and this node\'s rule removal, so the propagation delay was not measured');
  }
  if (failures.some((f) => f.cause === 'no-endpoint')) {
    const svcs = [...new Set(failures.filter((f) => f.cause === 'no-endpoint').map((f) => f.service ?? '?'))];
    notes.push(`${failures.filter((f) => f.cause === 'no-endpoint').length} connection(s) to ${svcs.join(', ')} hit a node with no usable endpoint (externalTrafficPolicy: Local blackhole): keep terminating endpoints serving (kube-proxy ProxyTerminatingEndpoints, GA since 1.28) with a preStop sleep so the load balancer's health check fails first, or use externalTrafficPolicy: Cluster`);
  }
  if (failures.some((f) => f.cause === 'not-ready')) notes.push('connections reached a pod before it listened: add a readinessProbe that checks the listener, so the endpoint becomes ready only once the app accepts');
  if (failures.some((f) => f.cause === 'killed-in-flight')) notes.push('connections were cut when a process was killed: the app must drain in-flight requests within terminationGracePeriodSeconds (stop accepting only after the rule is gone, then finish open requests)');
  return { preStopSeconds: preStop, terminationGracePeriodSeconds: grace, why: why.join('; '), notes };
}
