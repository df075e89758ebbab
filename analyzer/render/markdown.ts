/**
 * `analyze --format markdown`: the verdict, a table per terminated pod, the failure list and the
 * recommendation, GitHub-flavoured and ready to paste into an issue. Every bundle string is escaped.
 */
import type { Analysis, AnalysisPod } from '../../schemas/analysis.js';
import { nsFromIso } from '../../schemas/analysis.js';
import { escapeMarkdown as md } from './escape.js';

/** The one-line verdict shared by the Markdown and HTML reports. */
export function overallVerdict(a: Analysis): { level: 'fail' | 'ok' | 'unknown'; text: string } {
  const racing = a.pods.filter((p) => p.verdict === 'listener-closed-before-rule-removed');
  const nFail = a.failures.length;
  if (racing.length || nFail) {
    const parts: string[] = [];
    if (racing.length) parts.push(`${racing.length} of ${a.pods.length} pod(s) stopped listening before this node stopped routing to them`);
    if (nFail) parts.push(`${nFail} failed request(s)/connection(s)`);
    return { level: 'fail', text: `UNSAFE: ${parts.join('; ')}` };
  }
  const ignoredTerm = a.pods.filter((p) => p.verdict === 'ignored-sigterm');
  if (ignoredTerm.length) return { level: 'unknown', text: `NO FAILED REQUESTS, BUT ${ignoredTerm.length} of ${a.pods.length} pod(s) ignored SIGTERM and were SIGKILLed at the end of the grace period` };
  if (a.pods.length && a.pods.every((p) => p.verdict === 'safe')) {
    return { level: 'ok', text: `SAFE: all ${a.pods.length} terminated pod(s) kept listening until the rules no longer sent traffic to them; no failed requests` };
  }
  return { level: 'unknown', text: a.pods.length ? 'UNKNOWN: the bundle cannot decide every pod (see evidence)' : 'UNKNOWN: no terminated pod in this bundle' };
}

/** "HH:MM:SS.mmmuuu" of an ISO instant plus the offset from the bundle start. */
export function fmtAt(iso: string | null | undefined, startNs: number | null): string {
  if (!iso) return '—';
  const ns = nsFromIso(iso);
  const clock = iso.replace(/^.*T/, '').replace(/Z$/, '');
  if (ns === null || startNs === null) return clock;
  const rel = (ns - startNs) / 1e9;
  return `${clock} (+${rel.toFixed(3)} s)`;
}

export function podLabel(p: Pick<AnalysisPod, 'namespace' | 'name'>): string {
  return p.namespace ? `${p.namespace}/${p.name}` : p.name;
}

function ms(v: number | null | undefined): string {
  return v === null || v === undefined ? '—' : `${v.toFixed(1)} ms`;
}

/** Renders the analysis only: no I/O. */
export function renderMarkdown(a: Analysis): string {
  const startNs = a.bundle.start ? nsFromIso(a.bundle.start) : null;
  const out: string[] = [];
  const v = overallVerdict(a);
  out.push(`# rolltrace report${a.bundle.node ? ` — node ${md(a.bundle.node)}` : ''}`, '');
  out.push(`**${v.level === 'fail' ? '❌' : v.level === 'ok' ? '✅' : '❔'} ${md(v.text)}**`, '');
  out.push(`Recorded ${md(a.bundle.start ?? '?')} → ${md(a.bundle.end ?? '?')}${a.bundle.nodes?.length ? ` on nodes ${a.bundle.nodes.map(md).join(', ')}` : ''}.`);
  if (a.bundle.sources.length) {
    out.push('', `Sources: ${a.bundle.sources.map((s) => `${md(s.name)} ${md(s.status)} (${s.events}${s.dropped ? `, ${s.dropped} dropped` : ''})`).join(' · ')}`);
  }
  if (a.bundle.closedCleanly === false) out.push('', '> ⚠️ The recorder did not close this bundle cleanly; data up to its last flush is kept.');
  for (const w of a.warnings ?? []) out.push('', `> ⚠️ ${md(w)}`);
  if (a.ignored?.length) {
    out.push('', `<details><summary>${a.ignored.length} signal(s) screened out as not failures of the rollout</summary>`, '');
    for (const x of a.ignored.slice(0, 100)) out.push(`- [${md(x.group)}] ${md(x.why)}`);
    out.push('', '</details>');
  }

  out.push('', '## Recommendation', '');
  const r = a.recommendation;
  const recParts: string[] = [];
  if (r.preStopSeconds !== null) recParts.push(`preStop sleep **${r.preStopSeconds} s**`);
  if (r.terminationGracePeriodSeconds !== null) recParts.push(`terminationGracePeriodSeconds **${r.terminationGracePeriodSeconds}**`);
  if (recParts.length) out.push(`- ${recParts.join(', ')}`);
  out.push(`- ${md(r.why)}`);
  for (const n of r.notes ?? []) out.push(`- ${md(n)}`);
  const c = r.current;
  if (c) {
    out.push('', '| knob | in use | recommended |', '| --- | --- | --- |');
    out.push(`| preStop | ${md(c.preStop ?? 'none')} | ${r.preStopSeconds !== null ? `sleep ${r.preStopSeconds} s` : '—'} |`);
    out.push(`| terminationGracePeriodSeconds | ${c.terminationGracePeriodSeconds ?? '—'} | ${r.terminationGracePeriodSeconds ?? '—'} |`);
    if (c.strategy) out.push(`| strategy | maxSurge ${md(String(c.strategy.maxSurge ?? '?'))}, maxUnavailable ${md(String(c.strategy.maxUnavailable ?? '?'))}, minReadySeconds ${c.strategy.minReadySeconds ?? 0} | ${md(JSON.stringify((r.patch as { spec?: { strategy?: unknown } } | null)?.spec?.strategy ?? 'unchanged'))} |`);
    out.push(`| readinessProbe | ${c.readinessProbe === null ? '—' : c.readinessProbe ? 'yes' : 'no'} | yes, distinct from liveness |`);
    out.push(`| PodDisruptionBudget | ${c.pdb === null ? '—' : c.pdb.length ? c.pdb.map(md).join(', ') : 'none'} | one selecting the pods |`);
    out.push(`| externalTrafficPolicy | ${c.externalTrafficPolicy ? Object.entries(c.externalTrafficPolicy).map(([k, v]) => `${md(k)}: ${md(v ?? 'ClusterIP')}`).join(', ') || '—' : '—'} | see check |`);
    if (c.serverVersion) out.push('', `API server ${md(c.serverVersion)}.`);
  }
  if (r.checks?.length) {
    out.push('', '| check | status | evidence from this recording |', '| --- | --- | --- |');
    const icon = { ok: '✅ ok', warn: '⚠️ warn', fail: '❌ fail' } as const;
    for (const k of r.checks) out.push(`| ${md(k.knob)} | ${icon[k.status]} | ${k.evidence.map(md).join('<br>')} |`);
  }
  if (r.patch) out.push('', 'Strategic merge patch:', '', '```json', JSON.stringify(r.patch, null, 2).replace(/`/g, "'"), '```');
  if (r.kubectl) out.push('', 'Apply it:', '', '```sh', r.kubectl.replace(/`/g, "'"), '```');
  if (r.verify?.length) out.push('', 'Verify (exit 0 when the fix holds):', '', '```sh', ...r.verify.map((v) => v.replace(/`/g, "'")), '```');

  out.push('', `## Terminated pods (${a.pods.length})`);
  for (const p of a.pods) {
    out.push('', `### ${md(podLabel(p))}${p.ip ? ` (${md(p.ip)})` : ''} — ${md(p.verdict)}`, '');
    out.push('| step | when |', '| --- | --- |');
    const rows: Array<[string, string | null]> = [
      ['deletion requested (API)', p.deletionAt],
      ['SIGTERM', p.sigtermAt],
      ['listener closed', p.listenerClosedAt],
      ['endpoint terminating (EndpointSlice)', p.endpointTerminatingAt],
      ['endpoint removed (EndpointSlice)', p.endpointRemovedAt],
      [(a.bundle.nodes?.length ?? 0) > 1 ? 'rule removed (the last recorded node)' : 'rule removed (this node)', p.ruleRemovedAt],
      ['process exited', p.exitedAt],
      ...(p.sigkillAt ? [['SIGKILL', p.sigkillAt] as [string, string | null]] : []),
    ];
    for (const [k, at] of rows) out.push(`| ${k} | ${md(fmtAt(at, startNs))} |`);
    for (const [node, at] of Object.entries(p.ruleRemovedAtByNode ?? {})) out.push(`| rule removed on node ${md(node)} | ${md(fmtAt(at, startNs))} |`);
    for (const n of (p.nodes ?? []).filter((x) => !x.recorded)) out.push(`| ${md(n.node ?? 'other node(s)')}: rules not in this bundle, ${n.failedConnections} failed connection(s) routed from there | ${n.exposureAtLeastMs !== null ? `exposure at least ${ms(n.exposureAtLeastMs)}` : '?'} |`);
    for (const r of p.routes ?? []) out.push(`| ${md(r.path)} path ${md(r.addr)} (${md(r.policy)}) stopped routing${r.fallback ? ' — terminating fallback' : ''} | ${md(r.stoppedAt ? fmtAt(r.stoppedAt, startNs) : 'not before the end')} |`);
    out.push(`| **exposure** (listener closed → rule removed) | **${ms(p.exposureMs)}** |`);
    out.push(`| failed connections | ${p.failedConnections} |`);
    if (p.evidence.length) {
      out.push('', '<details><summary>evidence</summary>', '');
      for (const e of p.evidence) out.push(`- ${md(e)}`);
      out.push('', '</details>');
    }
  }

  out.push('', `## Failures (${a.failures.length})`, '');
  if (!a.failures.length) out.push('No failed request or connection was seen.');
  else {
    out.push('| at | client | service | backend | pod | cause | evidence |', '| --- | --- | --- | --- | --- | --- | --- |');
    // the path a failure took (cluster IP, NodePort, LB/external IP) is shown with its service
    const max = 200;
    for (const f of a.failures.slice(0, max)) {
      const be = f.backend.ip ? `${f.backend.ip}${f.backend.port !== null ? `:${f.backend.port}` : ''}` : '—';
      out.push(`| ${md(fmtAt(f.at, startNs))} | ${md(f.client)} | ${md(f.service ?? '—')}${f.path ? ` (${md(f.path.path)})` : ''} | ${md(be)} | ${md(f.backend.pod ?? '—')} | ${md(f.cause)} | ${f.evidence.map(md).join('<br>')} |`);
    }
    if (a.failures.length > max) out.push('', `…and ${a.failures.length - max} more (see \`rolltrace analyze --format json\`).`);
  }
  if (a.programmingLatency?.length) {
    out.push('', '## Rule programming latency', '', '| EndpointSlice change | endpoint | node | latency |', '| --- | --- | --- | --- |');
    for (const l of a.programmingLatency) out.push(`| ${md(fmtAt(l.at, startNs))} ${md(l.change)} | ${md(l.endpoint)} | ${md(l.node ?? '—')} | ${ms(l.latencyMs)} |`);
  }
  out.push('', '<sub>made by rolltrace from one bundle; every instant is on the recording node\'s clock</sub>', '');
  return out.join('\n');
}
