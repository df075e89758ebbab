/**
 * What to change, sized from what was measured and compared with what was recorded: preStop,
 * terminationGracePeriodSeconds, probes, rollout strategy, PodDisruptionBudget, traffic policy. Gives
 * the values, a strategic merge patch and the `kubectl patch` line that applies it, one check per knob
 * (ok/warn/fail with its evidence from this recording) and the commands that verify the fix.
 */
import type { AnalysisCheck, AnalysisRecommendation, RecommendationCurrent } from '../../schemas/analysis.js';
import { ms } from '../util.js';
import { podLabel } from './identity.js';
import type { PodSequence } from './pods.js';
import { resolveIntOrPercent, type Workload } from './workload.js';

/** Margins, stated in the output. */
export const PRESTOP_MARGIN = { factor: 0.5, minMs: 500 } as const;
export const GRACE_MARGIN = { factor: 0.25, minMs: 2000 } as const;
/** A grace period this many times what the recording needs, and at least this long, is called excessive. */
export const GRACE_EXCESSIVE = { factor: 4, minSeconds: 120 } as const;
/**
 * kube-proxy syncs its rules at most once per minSyncPeriod (1 s by default; a burst of 2 syncs may run
 * back to back): a change that arrives after the burst is spent waits for the next slot. One recording
 * can catch only free syncs — on the real node (kube-proxy v1.33.13) local-blackhole measured 221 ms,
 * its patched rerun 37 ms, while the race on the same kube-proxy measured 0.95–1.07 s and a 1 s preStop
 * lost a connection there. So the preStop also covers a held sync: the measured deletion → EndpointSlice
 * update, plus this period.
 */
export const KUBE_PROXY_MIN_SYNC_MS = 1000;
/** Kubernetes versions of the native `sleep` preStop action (KEP-3960): beta on by default, GA. */
export const SLEEP_ACTION = { beta: [1, 30], ga: [1, 32] } as const;

export interface RecommendInput {
  seqs: PodSequence[];
  failures: Array<{ cause: string; service: string | null; backend?: { podKey: string | null } }>;
  workload: Workload | null;
  /** nodes whose rules this bundle recorded */
  nodes: string[];
  /** slowest observed "added" programming latency (ms), for minReadySeconds */
  slowestAddMs: number | null;
  /** the bundle's file name, for the verify commands */
  file: string | null;
}

const atLeast = (v: { major: number; minor: number }, [ma, mi]: readonly [number, number]) => v.major > ma || (v.major === ma && v.minor >= mi);

/** Shell single-quoting (the patch JSON goes inside '…'). */
export function shq(s: string): string {
  return /^[A-Za-z0-9_@%+=:,./-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`;
}

interface Measured {
  props: Array<{ pod: string; node: string; ns: number }>;
  /** deletion → the EndpointSlice update marking the endpoint terminating (receipt), per pod */
  slices: Array<{ pod: string; ns: number }>;
  drains: Array<{ pod: string; ns: number; killed: boolean }>;
  ignored: PodSequence[];
}

function measure(seqs: PodSequence[]): Measured {
  const props: Measured['props'] = [];
  for (const s of seqs) {
    // reconciled start (deletion, or SIGTERM when the deletion's receipt came after it); an impossible
    // (negative) propagation is reported by the pod and never sizes anything
    const start = s.propagationStart;
    if (start === null) continue;
    for (const [node, at] of s.ruleRemovedByNode) if (at !== null && at >= start - 1e6) props.push({ pod: podLabel(s.pod), node, ns: at - start });
    if (!s.ruleRemovedByNode.size && s.ruleRemoved !== null && s.ruleRemoved >= start - 1e6) props.push({ pod: podLabel(s.pod), node: '', ns: s.ruleRemoved - start });
  }
  const slices: Measured['slices'] = [];
  for (const s of seqs) {
    if (s.propagationStart !== null && s.endpointTerminating !== null) slices.push({ pod: podLabel(s.pod), ns: Math.max(0, s.endpointTerminating - s.propagationStart) });
  }
  const drains: Measured['drains'] = [];
  for (const s of seqs) if (s.sigterm !== null && s.exited !== null && s.exited >= s.sigterm) drains.push({ pod: podLabel(s.pod), ns: s.exited - s.sigterm, killed: s.exitSignal === 'SIGKILL' });
  return { props, slices, drains, ignored: seqs.filter((s) => s.verdict === 'ignored-sigterm') };
}

function currentOf(w: Workload | null): RecommendationCurrent {
  const c = w?.containers ?? [];
  const preStops = c.map((x) => x.preStopSeconds).filter((x): x is number => x !== null);
  return {
    deployment: w?.deployment ? `${w.deployment.namespace}/${w.deployment.name}` : null,
    from: w?.podSpecFrom ?? null,
    replicas: w?.deployment?.replicas ?? null,
    containers: c.map((x) => x.name),
    preStopSeconds: preStops.length ? Math.min(...preStops) : null,
    preStop: c.find((x) => x.preStop)?.preStop ?? null,
    terminationGracePeriodSeconds: w?.terminationGracePeriodSeconds ?? null,
    readinessProbe: c.length ? c.some((x) => !!x.readiness) : null,
    livenessProbe: c.length ? c.some((x) => !!x.liveness) : null,
    startupProbe: c.length ? c.some((x) => !!x.startup) : null,
    strategy: w?.deployment ? { type: w.deployment.strategyType, maxSurge: w.deployment.maxSurge, maxUnavailable: w.deployment.maxUnavailable, minReadySeconds: w.deployment.minReadySeconds } : null,
    pdb: w ? w.pdbs.map((p) => `${p.namespace}/${p.name}`) : null,
    externalTrafficPolicy: w ? Object.fromEntries(w.services.map((s) => [`${s.namespace}/${s.name}`, s.type === 'NodePort' || s.type === 'LoadBalancer' ? s.externalTrafficPolicy ?? 'Cluster' : null])) : null,
    serverVersion: w?.server?.gitVersion ?? null,
  };
}

/** The verify loop: the recorder's own command line with a new --out, else one built from the Deployment. */
function verifyCommands(w: Workload | null, file: string | null): string[] {
  const base = (file ?? 'rollout.rtb').replace(/^.*\//, '').replace(/\.rtb(\.gz)?$/, '');
  const out = `${base}-fixed.rtb`;
  let rec: string[] | null = null;
  if (w?.argv && w.argv[0] === 'record' && w.createdBy !== 'merge') {
    rec = [];
    const a = w.argv.slice(1);
    for (let i = 0; i < a.length; i++) {
      const x = a[i]!;
      if (x === '--out') { i++; continue; }
      if (x === '--duration') { i++; continue; }
      if (x.startsWith('--out=') || x.startsWith('--duration=')) continue;
      rec.push(x);
    }
    if (!rec.includes('--restart')) rec.push('--restart');
    if (!rec.includes('--until-rollout-complete')) rec.push('--until-rollout-complete');
  } else if (w?.deployment) {
    rec = ['--namespace', w.deployment.namespace, '--deployment', w.deployment.name, '--restart', '--until-rollout-complete'];
  }
  if (!rec) return [];
  return [`rolltrace record --out ${shq(out)} ${rec.map(shq).join(' ')}`, `rolltrace analyze ${shq(out)}`];
}

export function recommend(input: RecommendInput): AnalysisRecommendation {
  const { seqs, failures, workload: w } = input;
  const notes: string[] = [];
  const why: string[] = [];
  const checks: AnalysisCheck[] = [];
  const m = measure(seqs);
  const current = currentOf(w);
  const nodesMeasured = new Set(m.props.map((p) => p.node));
  // ---- preStop from the slowest propagation (deletion → this node's rule removal), on every node recorded
  let preStop: number | null = null;
  let slowMs: number | null = null;
  /** a removal held by kube-proxy's sync period: the slowest deletion → EndpointSlice update + the period */
  let heldMs: number | null = null;
  let heldText = '';
  if (m.props.length) {
    const slow = m.props.reduce((a, b) => (b.ns > a.ns ? b : a));
    slowMs = ms(Math.max(0, slow.ns));
    const slice = m.slices.length ? m.slices.reduce((a, b) => (b.ns > a.ns ? b : a)) : null;
    heldMs = Math.round(((slice ? ms(slice.ns) : 0) + KUBE_PROXY_MIN_SYNC_MS) * 1000) / 1000;
    heldText = `kube-proxy holds a change up to its minSyncPeriod (${KUBE_PROXY_MIN_SYNC_MS} ms by default) after a sync: a held removal takes deletion → EndpointSlice update ${slice ? `${ms(slice.ns)} ms (slowest measured, ${slice.pod})` : '(not recorded: 0 ms assumed)'} + ${KUBE_PROXY_MIN_SYNC_MS} ms = ${heldMs} ms`;
    const sizing = Math.max(slowMs, heldMs);
    const marginMs = Math.max(PRESTOP_MARGIN.minMs, sizing * PRESTOP_MARGIN.factor);
    preStop = Math.max(1, Math.ceil((sizing + marginMs) / 1000));
    const nodeList = [...nodesMeasured].filter(Boolean);
    const measured = `slowest propagation from deletion to rule removal was ${ms(slow.ns)} ms (${slow.pod}${slow.node ? ` on ${slow.node}` : ''}, ${m.props.length} measurement(s) across ${nodesMeasured.size} node(s))`;
    why.push(`preStop sleep ${preStop}s: ${measured}${heldMs > slowMs ? `; ${heldText}` : ''}, plus a margin of max(${PRESTOP_MARGIN.minMs} ms, ${PRESTOP_MARGIN.factor * 100}%) = ${Math.round(marginMs)} ms, rounded up to whole seconds`);
    if (input.nodes.length <= 1 && nodesMeasured.size <= 1) {
      notes.push(`this bundle saw one node (${input.nodes[0] ?? nodeList[0] ?? 'this node'}): every other node's kube-proxy programs its rules on its own schedule and may be slower; record on every node (deploy/) and \`rolltrace merge\` the bundles to size preStop from the slowest node`);
    } else {
      notes.push(`preStop sized from the slowest of ${Math.max(nodesMeasured.size, input.nodes.length)} node(s) (${[...new Set([...input.nodes, ...nodeList])].join(', ')})`);
    }
    if (current.preStopSeconds !== null && current.preStopSeconds > preStop) {
      why.push(`the preStop in use (${current.preStopSeconds}s) is longer than needed; it is kept`);
      preStop = current.preStopSeconds;
    }
  } else {
    why.push('no recommendation: the bundle has no pod with both a deletion/SIGTERM instant and this node\'s rule removal, so the propagation delay was not measured');
  }
  // ---- grace ≥ preStop + drain, never below the one in use unless the recording shows it is excessive
  let grace: number | null = null;
  const drain = m.drains.filter((d) => !d.killed).reduce<Measured['drains'][number] | null>((a, b) => (!a || b.ns > a.ns ? b : a), null);
  const killed = m.drains.filter((d) => d.killed);
  // a SIGKILLed drain lasted at least until the SIGKILL: a lower bound, said as such
  const killedMax = killed.length ? killed.reduce((a, b) => (b.ns > a.ns ? b : a)) : null;
  if (preStop !== null) {
    const lowerBound = killedMax !== null && (!drain || killedMax.ns > drain.ns);
    const drainMs = lowerBound ? ms(killedMax!.ns) : drain ? ms(drain.ns) : 0;
    const gMargin = Math.max(GRACE_MARGIN.minMs, drainMs * GRACE_MARGIN.factor);
    const needed = Math.ceil((preStop * 1000 + drainMs + gMargin) / 1000);
    const inUse = current.terminationGracePeriodSeconds;
    const basis = lowerBound
      ? `preStop ${preStop}s + at least ${drainMs} ms of drain (${killedMax!.pod} was still running when SIGKILLed that long after SIGTERM: a lower bound, not a measurement) + margin max(${GRACE_MARGIN.minMs} ms, ${GRACE_MARGIN.factor * 100}%) = ${Math.round(gMargin)} ms, rounded up`
      : drain
      ? `preStop ${preStop}s + slowest observed drain (SIGTERM to exit) ${drainMs} ms (${drain.pod}) + margin max(${GRACE_MARGIN.minMs} ms, ${GRACE_MARGIN.factor * 100}%) = ${Math.round(gMargin)} ms, rounded up`
      : `preStop ${preStop}s + margin ${Math.round(gMargin)} ms (no SIGTERM→exit drain was observed, so the app's own drain time must be added)`;
    if (inUse === null) {
      grace = needed;
      why.push(`terminationGracePeriodSeconds ${grace}: ${basis}`);
    } else if (needed > inUse) {
      grace = needed;
      why.push(`terminationGracePeriodSeconds ${grace} (was ${inUse}): ${basis}`);
    } else if (!killed.length && drain && inUse >= GRACE_EXCESSIVE.minSeconds && inUse >= needed * GRACE_EXCESSIVE.factor) {
      grace = needed;
      why.push(`terminationGracePeriodSeconds ${grace} (was ${inUse}): ${basis}; the ${inUse}s in use is excessive: every observed pod exited on its own within ${drainMs} ms of SIGTERM, and a node drain or a stuck pod waits the whole grace period`);
    } else {
      grace = inUse;
      why.push(`terminationGracePeriodSeconds ${grace}: the ${inUse}s in use already covers ${basis.replace(/, rounded up$/, '')} = ${needed}s, so it is kept`);
    }
    if (killedMax) {
      const k = killedMax;
      notes.push(`${k.pod} was SIGKILLed ${ms(k.ns)} ms after SIGTERM: its real drain is longer than that (or it ignores SIGTERM), so the grace period cannot be sized from this recording; make the app exit on SIGTERM once in-flight requests are done`);
    }
  }
  // ---- failures by cause
  const noEp = failures.filter((f) => f.cause === 'no-endpoint');
  if (noEp.length) {
    const svcs = [...new Set(noEp.map((f) => f.service ?? '?'))];
    notes.push(`${noEp.length} connection(s) to ${svcs.join(', ')} hit a node with no usable endpoint (externalTrafficPolicy: Local blackhole): keep terminating endpoints serving (kube-proxy ProxyTerminatingEndpoints, GA since 1.28) with a preStop sleep so the load balancer's health check fails first, or use externalTrafficPolicy: Cluster`);
  }
  if (failures.some((f) => f.cause === 'not-ready')) notes.push('connections reached a pod before it listened: add a readinessProbe that checks the listener, so the endpoint becomes ready only once the app accepts');
  if (failures.some((f) => f.cause === 'killed-in-flight')) notes.push('connections were cut when a process was killed: the app must drain in-flight requests within terminationGracePeriodSeconds (stop accepting only after the rule is gone, then finish open requests)');

  // ---- checks
  const exposed = seqs.filter((s) => s.verdict === 'listener-closed-before-rule-removed');
  const closedFails = failures.filter((f) => f.cause === 'listener-closed').length;
  {
    const ev: string[] = [];
    if (slowMs !== null) ev.push(`slowest propagation (deletion → rule removal) ${slowMs} ms across ${Math.max(1, nodesMeasured.size)} node(s)`);
    ev.push(current.preStop ? `preStop in use: ${current.preStop}` : w?.containers.length ? 'no preStop hook in the recorded pod template' : templateMissing(w));
    for (const s of exposed.slice(0, 5)) ev.push(`${podLabel(s.pod)} closed its listener ${ms(s.exposureNs ?? 0)} ms before this node removed its rule`);
    if (closedFails) ev.push(`${closedFails} connection(s) refused by a closed listener`);
    const covered = current.preStopSeconds !== null && slowMs !== null && current.preStopSeconds * 1000 >= slowMs;
    const coversHeld = covered && heldMs !== null && current.preStopSeconds! * 1000 >= heldMs;
    const status = exposed.length || closedFails ? 'fail' : coversHeld ? 'ok' : slowMs === null ? 'warn' : current.preStopSeconds === null ? 'warn' : covered ? 'warn' : 'fail';
    if (status === 'warn' && slowMs !== null && current.preStopSeconds === null) ev.push('every pod kept listening until its rule was gone, without a preStop: the app\'s own shutdown delay covered the propagation this time');
    if (current.preStopSeconds !== null && slowMs !== null && !covered) ev.push(`preStop ${current.preStopSeconds}s is shorter than the measured propagation`);
    else if (current.preStopSeconds !== null && heldMs !== null && !coversHeld) ev.push(`preStop ${current.preStopSeconds}s covers this recording's propagation but not a removal held by kube-proxy: ${heldText}`);
    checks.push({ knob: 'preStop', status, evidence: ev });
  }
  {
    const ev: string[] = [];
    let status: AnalysisCheck['status'] = 'ok';
    const inUse = current.terminationGracePeriodSeconds;
    if (inUse !== null) ev.push(`terminationGracePeriodSeconds in use: ${inUse}`);
    for (const s of m.ignored.slice(0, 5)) {
      const k = s.sigkill ?? s.exited;
      ev.push(`SIGKILL ${k !== null && s.sigterm !== null ? `${(ms(k - s.sigterm) / 1000).toFixed(1)} s` : ''} after SIGTERM: ${podLabel(s.pod)} neither exited nor closed its listener in between — the app ignores SIGTERM (or drains longer than the grace period)`.replace('SIGKILL  after', 'SIGKILL after'));
    }
    for (const k of killed.filter((k) => !m.ignored.some((s) => podLabel(s.pod) === k.pod)).slice(0, 5)) ev.push(`${k.pod} was SIGKILLed ${ms(k.ns)} ms after SIGTERM, before it finished draining`);
    if (killed.length) status = 'fail';
    if (drain) ev.push(`slowest observed drain (SIGTERM → exit) ${ms(drain.ns)} ms (${drain.pod})`);
    if (inUse !== null && preStop !== null && drain && inUse * 1000 < preStop * 1000 + ms(drain.ns)) {
      status = 'fail';
      ev.push(`${inUse}s < preStop ${preStop}s + drain ${ms(drain.ns)} ms: the kubelet would SIGKILL before the drain ends`);
    }
    if (!drain && !killed.length) { status = 'warn'; ev.push('no SIGTERM → exit was observed (strace/ebpf missing or no pod terminated): the drain time is unknown'); }
    checks.push({ knob: 'grace', status, evidence: ev });
  }
  {
    const ev: string[] = [];
    let status: AnalysisCheck['status'];
    const reps = w?.deployment?.replicas ?? null;
    if (w?.pdbs.length) {
      status = 'ok';
      for (const p of w.pdbs) ev.push(`PodDisruptionBudget ${p.namespace}/${p.name}: ${p.minAvailable !== null ? `minAvailable ${p.minAvailable}` : `maxUnavailable ${p.maxUnavailable ?? '?'}`}`);
      if (reps === 1) { status = 'warn'; ev.push('1 replica: the PDB either blocks node drains or allows an outage; run at least 2 replicas'); }
    } else {
      status = 'warn';
      ev.push(w ? 'no PodDisruptionBudget selecting these pods was recorded: a node drain may evict every replica at once' : 'PodDisruptionBudgets not recorded (kube source missing)');
      if (w?.deployment) ev.push(`e.g. kubectl create poddisruptionbudget ${w.deployment.name} -n ${w.deployment.namespace} --selector=${Object.entries(w.deployment.labels).map(([k, v]) => `${k}=${v}`).join(',')} --max-unavailable=1`);
    }
    checks.push({ knob: 'pdb', status, evidence: ev });
  }
  const patchStrategy: Record<string, unknown> = {};
  {
    const ev: string[] = [];
    let status: AnalysisCheck['status'] = 'ok';
    const d = w?.deployment;
    if (!d) { status = 'warn'; ev.push('Deployment not recorded (kube source missing, or not a Deployment)'); } else {
      const reps = d.replicas ?? 1;
      const mu = resolveIntOrPercent(d.maxUnavailable, reps, false);
      const ms_ = resolveIntOrPercent(d.maxSurge, reps, true);
      ev.push(`strategy ${d.strategyType ?? 'RollingUpdate'}, maxSurge ${d.maxSurge ?? '?'} (${ms_ ?? '?'}), maxUnavailable ${d.maxUnavailable ?? '?'} (${mu ?? '?'}), minReadySeconds ${d.minReadySeconds ?? 0}, ${reps} replica(s)`);
      if (d.strategyType === 'Recreate') { status = 'fail'; ev.push('Recreate stops every pod before starting new ones: an outage on every rollout'); patchStrategy.type = 'RollingUpdate'; patchStrategy.rollingUpdate = { maxSurge: 1, maxUnavailable: 0 }; }
      else if (mu !== null && mu > 0) {
        status = mu >= reps || noEp.length ? 'fail' : 'warn';
        ev.push(mu >= reps ? `maxUnavailable ${mu} of ${reps} replica(s): the rollout may remove every ready pod before a new one is ready` : `maxUnavailable ${mu}: the rollout removes ready pods before their replacements are ready`);
        patchStrategy.rollingUpdate = { maxUnavailable: 0, maxSurge: ms_ && ms_ > 0 ? d.maxSurge : 1 };
      }
      if (!d.minReadySeconds) {
        if (status === 'ok') status = 'warn';
        ev.push(`minReadySeconds 0: an old pod may be removed as soon as its replacement is Ready, before every node routes to the new one${input.slowestAddMs !== null ? ` (slowest observed programming of an added endpoint ${input.slowestAddMs} ms)` : ''}`);
      }
    }
    checks.push({ knob: 'strategy', status, evidence: ev });
  }
  {
    const ev: string[] = [];
    let status: AnalysisCheck['status'] = 'ok';
    const cs = w?.containers ?? [];
    const notReady = failures.filter((f) => f.cause === 'not-ready').length;
    if (!cs.length) { status = 'warn'; ev.push(templateMissing(w)); }
    for (const c of cs) {
      if (!c.readiness) { status = notReady ? 'fail' : status === 'ok' ? 'warn' : status; ev.push(`container ${c.name}: no readinessProbe — the endpoint is Ready as soon as the container starts`); }
      else if (c.liveness && JSON.stringify(c.readiness) === JSON.stringify(c.liveness)) { if (status === 'ok') status = 'warn'; ev.push(`container ${c.name}: readinessProbe identical to livenessProbe — a slow or draining app gets restarted instead of taken out of rotation`); }
      else ev.push(`container ${c.name}: readinessProbe ${describeProbe(c.readiness)}${c.liveness ? `, livenessProbe ${describeProbe(c.liveness)}` : ''}${c.startup ? `, startupProbe ${describeProbe(c.startup)}` : ''}`);
    }
    if (notReady) ev.push(`${notReady} connection(s) reached a pod before it listened`);
    for (const s of seqs) {
      const last = s.pod.uid ? w?.readyAfterDeletion.get(s.pod.uid) : undefined;
      if (last !== undefined && s.sigterm !== null && last > s.sigterm) ev.push(`${podLabel(s.pod)}: Ready stayed true ${ms(last - s.sigterm)} ms after SIGTERM (the readiness probe does not fail during shutdown; the EndpointSlice marks a terminating pod not ready anyway)`);
    }
    const slowStart = seqs.map((s) => (s.firstListen !== null && s.pod.createdNs !== null ? s.firstListen - s.pod.createdNs : null)).filter((x): x is number => x !== null && x > 10e9);
    if (slowStart.length && cs.some((c) => c.liveness && !c.startup)) { if (status === 'ok') status = 'warn'; ev.push(`a pod took ${ms(Math.max(...slowStart))} ms to listen: add a startupProbe so the livenessProbe does not kill slow starts`); }
    checks.push({ knob: 'probes', status, evidence: ev });
  }
  {
    const ev: string[] = [];
    let status: AnalysisCheck['status'] = 'ok';
    const svcs = w?.services ?? [];
    if (!w) { status = 'warn'; ev.push('Services not recorded (kube source missing)'); }
    for (const s of svcs) {
      const ext = s.type === 'NodePort' || s.type === 'LoadBalancer';
      if (ext && s.externalTrafficPolicy === 'Local') {
        status = noEp.length ? 'fail' : 'warn';
        ev.push(`Service ${s.namespace}/${s.name} (${s.type}) externalTrafficPolicy: Local — a node whose last local endpoint terminates drops external traffic unless the load balancer's health check (healthCheckNodePort) takes the node out first; a preStop sleep longer than the health check's interval × failure threshold covers it`);
      } else ev.push(`Service ${s.namespace}/${s.name} (${s.type})${ext ? ` externalTrafficPolicy: ${s.externalTrafficPolicy ?? 'Cluster'}` : ''}`);
    }
    if (w && !svcs.length) ev.push('no Service selecting these pods was recorded');
    if (noEp.length) ev.push(`${noEp.length} connection(s) dropped or rejected with no usable endpoint on this node`);
    checks.push({ knob: 'trafficPolicy', status, evidence: ev });
  }

  // ---- the patch
  let patch: Record<string, unknown> | null = null;
  let kubectl: string | null = null;
  const podPatch: Record<string, unknown> = {};
  const targets = w?.containers.filter((c) => c.ports.length) ?? [];
  const cs = targets.length ? targets : w?.containers ?? [];
  const server = w?.server ?? null;
  const native = server !== null && atLeast(server, SLEEP_ACTION.beta);
  const containerPatch = new Map<string, Record<string, unknown>>();
  const forContainer = (name: string) => { let x = containerPatch.get(name); if (!x) { x = { name }; containerPatch.set(name, x); } return x; };
  if (preStop !== null && cs.length && (current.preStopSeconds === null || current.preStopSeconds < preStop)) {
    for (const c of cs) forContainer(c.name).lifecycle = { preStop: native ? { sleep: { seconds: preStop } } : { exec: { command: ['sleep', String(preStop)] } } };
    if (native) why.push(`preStop as the native sleep action: the recorded API server is ${server!.gitVersion} (sleep action ${atLeast(server!, SLEEP_ACTION.ga) ? 'GA since 1.32' : 'beta, on by default since 1.30'})`);
    else notes.push(`preStop as exec \`sleep ${preStop}\`${server ? `: the recorded API server ${server.gitVersion} predates the native sleep action (1.30)` : ': the API server version was not recorded; on 1.30+ use lifecycle.preStop.sleep.seconds instead'}; distroless and scratch images have no \`sleep\` binary — there the exec hook fails and the container gets SIGTERM at once`);
  }
  // a container serving a port without a readinessProbe: a TCP check of that port (Ready once it accepts)
  for (const c of targets) {
    if (c.readiness) continue;
    forContainer(c.name).readinessProbe = { tcpSocket: { port: c.ports[0] }, periodSeconds: 1, failureThreshold: 3 };
    why.push(`readinessProbe tcpSocket :${c.ports[0]} for container ${c.name}: it had none, so its endpoint was Ready before it accepted connections${failures.some((f) => f.cause === 'not-ready') ? ' (connections reached it before it listened)' : ''}; replace it with an HTTP check of the app's own readiness where there is one`);
  }
  if (containerPatch.size) podPatch.containers = [...containerPatch.values()];
  if (grace !== null && grace !== current.terminationGracePeriodSeconds && cs.length) podPatch.terminationGracePeriodSeconds = grace;
  const specPatch: Record<string, unknown> = {};
  if (Object.keys(podPatch).length) specPatch.template = { spec: podPatch };
  if (Object.keys(patchStrategy).length) specPatch.strategy = patchStrategy;
  if (Object.keys(specPatch).length) {
    patch = { spec: specPatch };
    if (w?.deployment) kubectl = `kubectl patch deployment ${shq(w.deployment.name)} -n ${shq(w.deployment.namespace)} --type strategic -p ${shq(JSON.stringify(patch))}`;
  } else if (preStop !== null && !cs.length) {
    notes.push(`no patch: ${templateMissing(w)}`);
  }
  return {
    preStopSeconds: preStop, terminationGracePeriodSeconds: grace, why: why.join('; '), notes,
    current, patch, kubectl, checks, verify: verifyCommands(w, input.file),
  };
}

function templateMissing(w: Workload | null): string {
  if (!w || w.podSpecFrom === null) return 'pod template not recorded (kube source missing, or no Deployment/Pod of the rollout recorded)';
  return `the recorded ${w.podSpecFrom === 'deployment' ? 'pod template' : 'pod spec'} lists no container`;
}

function describeProbe(p: Record<string, unknown>): string {
  const h = p.httpGet as { path?: string; port?: unknown } | undefined;
  const kind = h ? `httpGet ${h.path ?? '/'}:${String(h.port ?? '?')}` : p.tcpSocket ? 'tcpSocket' : p.exec ? 'exec' : p.grpc ? 'grpc' : '?';
  return `${kind} every ${p.periodSeconds ?? 10}s`;
}
