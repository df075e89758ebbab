/** The text report: verdict first, one paragraph per terminated pod, failures, recommendation, timeline ±1 s around failures. */
import type { Analysis } from '../../schemas/analysis.js';
import { nsFromIso } from '../../schemas/analysis.js';
import type { BundleReader } from '../bundle-reader.js';
import { hasFailures } from '../analyze.js';
import { formatTimelineLine, timelineItems, type TimelineItem } from '../timeline.js';
import { clean, rel } from '../util.js';

const MAX_WINDOWS = 10;
const MAX_LINES_PER_WINDOW = 150;

function relIso(isoS: string | null, startNs: number | null): string {
  if (!isoS) return 'unknown';
  const ns = nsFromIso(isoS);
  if (ns === null || startNs === null) return isoS;
  return rel(ns, startNs);
}

/** Whether a packet/conntrack row is of a failed client: exact endpoints of its flow (`a>b`) or subject. */
function ofClient(it: TimelineItem, clients: Set<string>): boolean {
  if (it.subject !== null && clients.has(it.subject)) return true;
  const flow = it.fields.flow ?? it.fields.orig;
  if (typeof flow !== 'string') return false;
  const gt = flow.indexOf('>');
  if (gt < 0) return clients.has(flow);
  return clients.has(flow.slice(0, gt)) || clients.has(flow.slice(gt + 1));
}

export function verdictLine(a: Analysis): string {
  const exposed = a.pods.filter((p) => p.verdict === 'listener-closed-before-rule-removed');
  const unknown = a.pods.filter((p) => p.verdict === 'unknown');
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
    return `VERDICT: FAILURES — ${parts.join('; ')}`;
  }
  if (!a.pods.length) return 'VERDICT: CLEAN — no failed connection; no terminated pod in this bundle';
  if (unknown.length) return `VERDICT: CLEAN, PARTLY UNKNOWN — no failed connection; ${a.pods.length - unknown.length} pod(s) safe, ${unknown.length} pod(s) unknown (see why below)`;
  return `VERDICT: CLEAN — no failed connection; all ${a.pods.length} terminated pod(s) kept listening until this node removed the rule`;
}

export function renderText(a: Analysis, reader: BundleReader | null, file: string): string {
  const startNs = a.bundle.start ? nsFromIso(a.bundle.start) : null;
  const L: string[] = [];
  L.push(verdictLine(a));
  L.push(`bundle: ${clean(file)}  node ${a.bundle.node ?? 'unknown'}  ${a.bundle.start ?? '?'} .. ${a.bundle.end ?? '?'}${a.bundle.closedCleanly === false ? '  (not closed cleanly)' : ''}`);
  L.push(`sources: ${a.bundle.sources.map((s) => `${s.name}=${s.status}(${s.events}${s.dropped ? `, ${s.dropped} dropped` : ''})`).join(' ') || 'none recorded'}`);
  L.push('');
  L.push(`PODS (${a.pods.length} terminated)`);
  for (const p of a.pods) {
    const name = `${p.namespace ? `${p.namespace}/` : ''}${p.name}`;
    const head = p.verdict === 'listener-closed-before-rule-removed'
      ? `closed its listener ${p.exposureMs} ms BEFORE this node removed its rule: EXPOSED`
      : p.verdict === 'safe' ? `kept listening ${p.exposureMs === null ? '' : `${-p.exposureMs} ms `}past this node's rule removal: safe` : 'verdict unknown';
    L.push(`  ${name} (${p.ip ?? 'ip unknown'}): ${head}; ${p.failedConnections} failed connection(s).`);
    L.push(`    deletion ${relIso(p.deletionAt, startNs)}, SIGTERM ${relIso(p.sigtermAt, startNs)}, listener closed ${relIso(p.listenerClosedAt, startNs)}, exited ${relIso(p.exitedAt, startNs)};`
      + ` slice terminating ${relIso(p.endpointTerminatingAt, startNs)}, removed ${relIso(p.endpointRemovedAt, startNs)}; rule removed ${relIso(p.ruleRemovedAt, startNs)}.`);
    for (const e of p.evidence) L.push(`      - ${clean(e, 600)}`);
  }
  L.push('');
  L.push(`FAILURES (${a.failures.length})`);
  for (const f of a.failures.slice(0, 200)) {
    const at = relIso(f.at, startNs);
    L.push(`  ${at}  ${clean(f.client)} -> ${f.service ? `service ${clean(f.service)}` : 'service unknown'} -> backend ${f.backend.ip ? `${f.backend.ip}:${f.backend.port ?? '?'}` : 'unknown'}${f.backend.pod ? ` (${clean(f.backend.pod)})` : ''}  cause=${f.cause}  via=${(f.via ?? []).join(',')}${f.error ? `  error=${JSON.stringify(clean(f.error, 120))}` : ''}`);
    for (const e of f.evidence) L.push(`      - ${clean(e, 600)}`);
  }
  if (a.failures.length > 200) L.push(`  ... ${a.failures.length - 200} more (see --format json)`);
  L.push('');
  L.push('RECOMMENDATION');
  const r = a.recommendation;
  L.push(`  preStop sleep: ${r.preStopSeconds === null ? 'unknown' : `${r.preStopSeconds}s`}   terminationGracePeriodSeconds: ${r.terminationGracePeriodSeconds === null ? 'unknown' : r.terminationGracePeriodSeconds}`);
  for (const w of r.why.split('; ')) L.push(`    ${clean(w, 600)}`);
  for (const n of r.notes ?? []) L.push(`  note: ${clean(n, 600)}`);
  if (a.programmingLatency?.length) {
    L.push('');
    L.push('NETWORK PROGRAMMING LATENCY (slice change received -> this node\'s rules)');
    for (const l of a.programmingLatency.slice(0, 50)) L.push(`  ${relIso(l.at, startNs)}  ${l.change.padEnd(7)} ${clean(l.endpoint).padEnd(16)} ${l.latencyMs === null ? 'not reflected' : `${l.latencyMs} ms`}${l.node ? `  node ${clean(l.node)}` : ''}`);
  }
  if (reader && a.failures.length && startNs !== null) {
    const wins: Array<[number, number]> = [];
    for (const f of a.failures) {
      const t = nsFromIso(f.at);
      if (t === null) continue;
      const last = wins[wins.length - 1];
      if (last && t - 1e9 <= last[1]) last[1] = Math.max(last[1], t + 1e9);
      else wins.push([t - 1e9, t + 1e9]);
    }
    const clients = new Set(a.failures.map((f) => f.client));
    L.push('');
    L.push(`TIMELINE AROUND FAILURES (±1 s${wins.length > MAX_WINDOWS ? `, first ${MAX_WINDOWS} of ${wins.length} windows` : ''})`);
    try {
      for (const [s, e] of wins.slice(0, MAX_WINDOWS)) {
        let n = 0;
        for (const it of timelineItems(reader, { since: s, until: e })) {
          // keep the window readable: packets and conntrack only for failed clients, RSTs and ICMP errors
          if ((it.source === 'packets' || it.source === 'conntrack') && it.kind !== 'rst' && it.kind !== 'icmp' && !ofClient(it, clients)) continue;
          if (++n > MAX_LINES_PER_WINDOW) { L.push('  ...'); break; }
          L.push(`  ${formatTimelineLine(it, startNs)}`);
        }
        L.push('  --');
      }
    } catch (e) {
      // the timeline illustrates the findings above; a table it cannot read must not cost the report
      L.push(`  (timeline unavailable: ${clean((e as Error)?.message ?? String(e), 200)})`);
    }
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
