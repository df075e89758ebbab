/** The text report: verdict first, one paragraph per terminated pod, failures, recommendation, timeline ±1 s around failures. */
import type { Analysis, AnalysisPod, AnalysisRecommendation } from '../../schemas/analysis.js';
import { nsFromIso } from '../../schemas/analysis.js';
import { hasFailures } from '../analyze.js';
import { clean, rel } from '../util.js';

function relIso(isoS: string | null, startNs: number | null): string {
  if (!isoS) return 'unknown';
  const ns = nsFromIso(isoS);
  if (ns === null || startNs === null) return isoS;
  return rel(ns, startNs);
}

/** The one-line head of a pod paragraph, by verdict. */
export function podHead(p: AnalysisPod): string {
  switch (p.verdict) {
    case 'listener-closed-before-rule-removed': return `closed its listener ${p.exposureMs} ms BEFORE this node removed its rule: EXPOSED`;
    case 'safe': return `kept listening ${p.exposureMs === null ? '' : `${-p.exposureMs} ms `}past this node's rule removal: safe`;
    case 'ignored-sigterm': return `IGNORED SIGTERM: neither exited nor closed its listener until SIGKILL${p.killedConnections ? ` (${p.killedConnections} connection(s) cut by it)` : ''}`;
    default: return 'verdict unknown';
  }
}

/** The recommendation's current values, patch, kubectl line, checks and verify commands, as text lines. */
export function recommendationLines(r: AnalysisRecommendation): string[] {
  const L: string[] = [];
  const c = r.current;
  if (c) {
    const strat = c.strategy ? `maxSurge ${c.strategy.maxSurge ?? '?'}, maxUnavailable ${c.strategy.maxUnavailable ?? '?'}, minReadySeconds ${c.strategy.minReadySeconds ?? 0}` : 'unknown';
    const etp = c.externalTrafficPolicy ? Object.entries(c.externalTrafficPolicy).map(([k, v]) => `${k}=${v ?? 'ClusterIP'}`).join(', ') || 'no service recorded' : 'unknown';
    L.push(`  in use${c.deployment ? ` (deployment ${clean(c.deployment)}${c.from === 'pod' ? ', from a pod' : ''})` : ''}: preStop ${c.preStop ? clean(c.preStop, 120) : 'none'}, terminationGracePeriodSeconds ${c.terminationGracePeriodSeconds ?? 'unknown'}, readinessProbe ${c.readinessProbe === null ? 'unknown' : c.readinessProbe ? 'yes' : 'no'}, strategy ${strat}, PDB ${c.pdb === null ? 'unknown' : c.pdb.length ? c.pdb.map((x) => clean(x)).join(', ') : 'none'}, externalTrafficPolicy ${clean(etp, 300)}, server ${c.serverVersion ? clean(c.serverVersion, 60) : 'unknown'}`);
  }
  for (const k of r.checks ?? []) {
    L.push(`  [${k.status.toUpperCase().padEnd(4)}] ${k.knob}`);
    for (const e of k.evidence) L.push(`         ${clean(e, 600)}`);
  }
  if (r.kubectl) L.push('  apply:', `    ${clean(r.kubectl, 4000)}`);
  if (r.verify?.length) { L.push('  verify (exit 0 when the fix holds):'); for (const v of r.verify) L.push(`    ${clean(v, 2000)}`); }
  return L;
}

export function verdictLine(a: Analysis): string {
  const exposed = a.pods.filter((p) => p.verdict === 'listener-closed-before-rule-removed');
  const unknown = a.pods.filter((p) => p.verdict === 'unknown');
  const ignoredTerm = a.pods.filter((p) => p.verdict === 'ignored-sigterm');
  if (hasFailures(a)) {
    const parts: string[] = [];
    parts.push(`${a.failures.length} failed connection(s)`);
    if (exposed.length) {
      const worst = Math.max(...exposed.map((p) => p.exposureMs ?? 0));
      parts.push(`${exposed.length} pod(s) closed the listener before this node removed the rule (worst gap ${worst} ms)`);
    }
    const causes = new Map<string, number>();
    for (const f of a.failures) causes.set(f.cause, (causes.get(f.cause) ?? 0) + 1);
    if (causes.size) parts.push(`causes: ${[...causes].map(([c, n]) => `${c} ${n}`).join(', ')}`);
    if (ignoredTerm.length) parts.push(`${ignoredTerm.length} pod(s) ignored SIGTERM until SIGKILL`);
    return `VERDICT: FAILURES — ${parts.join('; ')}`;
  }
  if (!a.pods.length) return 'VERDICT: CLEAN — no failed connection; no terminated pod in this bundle';
  if (ignoredTerm.length) return `VERDICT: CLEAN, BUT ${ignoredTerm.length} POD(S) IGNORED SIGTERM — no failed connection; they were SIGKILLed at the end of the grace period (see why below)`;
  if (unknown.length) return `VERDICT: CLEAN, PARTLY UNKNOWN — no failed connection; ${a.pods.length - unknown.length} pod(s) safe, ${unknown.length} pod(s) unknown (see why below)`;
  return `VERDICT: CLEAN — no failed connection; all ${a.pods.length} terminated pod(s) kept listening until this node removed the rule`;
}

/** Renders the analysis only (timeline excerpts come from `a.excerpts`): no I/O. */
export function renderText(a: Analysis, file: string): string {
  const startNs = a.bundle.start ? nsFromIso(a.bundle.start) : null;
  const L: string[] = [];
  L.push(verdictLine(a));
  L.push(`bundle: ${clean(file)}  node ${a.bundle.node ?? 'unknown'}  ${a.bundle.start ?? '?'} .. ${a.bundle.end ?? '?'}${a.bundle.closedCleanly === false ? '  (not closed cleanly)' : ''}`);
  L.push(`sources: ${a.bundle.sources.map((s) => `${s.name}=${s.status}(${s.events}${s.dropped ? `, ${s.dropped} dropped` : ''})`).join(' ') || 'none recorded'}`);
  L.push('');
  L.push(`PODS (${a.pods.length} terminated)`);
  for (const p of a.pods) {
    const name = `${p.namespace ? `${p.namespace}/` : ''}${p.name}`;
    const head = podHead(p);
    L.push(`  ${name} (${p.ip ?? 'ip unknown'}): ${head}; ${p.failedConnections} failed connection(s).`);
    L.push(`    deletion ${relIso(p.deletionAt, startNs)}, SIGTERM ${relIso(p.sigtermAt, startNs)}, listener closed ${relIso(p.listenerClosedAt, startNs)}, exited ${relIso(p.exitedAt, startNs)}${p.sigkillAt ? ` (SIGKILL ${relIso(p.sigkillAt, startNs)})` : ''};`
      + ` slice terminating ${relIso(p.endpointTerminatingAt, startNs)}, removed ${relIso(p.endpointRemovedAt, startNs)}; rule removed ${relIso(p.ruleRemovedAt, startNs)}.`);
    if (p.routes?.length) L.push(`    paths: ${p.routes.map((r) => `${r.path} ${clean(r.addr, 100)} (${r.policy}) ${r.stoppedAt ? `stopped ${relIso(r.stoppedAt, startNs)}` : 'still routed at the end'}${r.fallback ? ' [terminating fallback]' : ''}`).join('; ')}.`);
    const perNode = p.nodes ?? [];
    if (perNode.length > 1 || perNode.some((n) => !n.recorded)) {
      L.push(`    per node: ${perNode.map((n) => n.recorded
        ? `${clean(n.node ?? 'this node', 100)} rule removed ${relIso(n.ruleRemovedAt, startNs)}${n.exposureMs !== null ? ` (exposure ${n.exposureMs} ms)` : ''}, ${n.failedConnections} failed`
        : `${n.node ? clean(n.node, 100) : 'other node(s)'} (rules not in this bundle): ${n.failedConnections} failed${n.exposureAtLeastMs !== null ? `, exposure at least ${n.exposureAtLeastMs} ms` : ''}`).join('; ')}.`);
    }
    for (const e of p.evidence) L.push(`      - ${clean(e, 600)}`);
  }
  L.push('');
  L.push(`FAILURES (${a.failures.length})`);
  for (const f of a.failures.slice(0, 200)) {
    const at = relIso(f.at, startNs);
    L.push(`  ${at}  ${clean(f.client)} -> ${f.service ? `service ${clean(f.service)}` : 'service unknown'} -> backend ${f.backend.ip ? `${f.backend.ip}:${f.backend.port ?? '?'}` : 'unknown'}${f.backend.pod ? ` (${clean(f.backend.pod)})` : ''}  cause=${f.cause}${f.node !== undefined && f.node !== a.bundle.node ? `  routed-by=${f.node ? clean(f.node, 100) : 'unknown remote node'}` : ''}${f.path ? `  path=${f.path.path}:${clean(f.path.addr, 100)}` : ''}  via=${(f.via ?? []).join(',')}${f.error ? `  error=${JSON.stringify(clean(f.error, 120))}` : ''}`);
    for (const e of f.evidence) L.push(`      - ${clean(e, 600)}`);
  }
  if (a.failures.length > 200) L.push(`  ... ${a.failures.length - 200} more (see --format json)`);
  L.push('');
  L.push('RECOMMENDATION');
  const r = a.recommendation;
  L.push(`  preStop sleep: ${r.preStopSeconds === null ? 'unknown' : `${r.preStopSeconds}s`}   terminationGracePeriodSeconds: ${r.terminationGracePeriodSeconds === null ? 'unknown' : r.terminationGracePeriodSeconds}`);
  for (const w of r.why.split('; ')) L.push(`    ${clean(w, 600)}`);
  for (const n of r.notes ?? []) L.push(`  note: ${clean(n, 600)}`);
  L.push(...recommendationLines(r));
  if (a.programmingLatency?.length) {
    L.push('');
    L.push('NETWORK PROGRAMMING LATENCY (slice change received -> this node\'s rules)');
    for (const l of a.programmingLatency.slice(0, 50)) L.push(`  ${relIso(l.at, startNs)}  ${l.change.padEnd(7)} ${clean(l.endpoint).padEnd(16)} ${l.latencyMs === null ? 'not reflected' : `${l.latencyMs} ms`}${l.node ? `  node ${clean(l.node)}` : ''}`);
  }
  const x = a.excerpts;
  if (x && (x.failureWindows.length || x.error)) {
    L.push('');
    L.push(`TIMELINE AROUND FAILURES (±1 s${x.windowsTotal > x.failureWindows.length ? `, first ${x.failureWindows.length} of ${x.windowsTotal} windows` : ''})`);
    for (const w of x.failureWindows) {
      for (const l of w.lines) L.push(`  ${clean(l.text, 2000)}`);
      if (w.truncated) L.push('  ...');
      L.push('  --');
    }
    if (x.error) L.push(`  (timeline unavailable: ${clean(x.error, 200)})`);
  }
  if (a.warnings?.length) {
    L.push('');
    L.push('WARNINGS');
    for (const w of a.warnings) L.push(`  - ${clean(w, 400)}`);
  }
  if (a.ignored?.length) {
    L.push('');
    L.push(`IGNORED (${a.ignored.length}: not failures of the rollout; --format json lists them all)`);
    for (const x of a.ignored.slice(0, 20)) L.push(`  - [${clean(x.group, 40)}] ${clean(x.why, 400)}`);
    if (a.ignored.length > 20) L.push(`  - ... ${a.ignored.length - 20} more`);
  }
  return L.join('\n') + '\n';
}
