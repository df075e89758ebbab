/**
 * The timeline excerpts the reports show, taken once at analysis time so renderers take the analysis
 * only and do no I/O: the merged timeline ±1 s around failures (text), and per pod the probe results
 * and RSTs of its address around its termination (html swimlanes).
 */
import { nsFromIso, type Analysis, type AnalysisPod, type ExcerptLine } from '../../schemas/analysis.js';
import type { BundleReader } from '../bundle-reader.js';
import { formatTimelineLine, timelineItems, type TimelineItem } from '../timeline.js';
import { clean, iso } from '../util.js';

export const MAX_WINDOWS = 10;
export const MAX_LINES_PER_WINDOW = 150;
export const MAX_TRAFFIC_MARKS = 3000;
/** across every pod: the excerpts travel in the JSON analysis too */
export const MAX_TRAFFIC_MARKS_TOTAL = 20000;

type Excerpts = NonNullable<Analysis['excerpts']>;

/** Whether a packet/conntrack row is of a failed client: exact endpoints of its flow (`a>b`) or subject. */
function ofClient(it: TimelineItem, clients: Set<string>): boolean {
  if (it.subject !== null && clients.has(it.subject)) return true;
  const flow = it.fields.flow ?? it.fields.orig;
  if (typeof flow !== 'string') return false;
  const gt = flow.indexOf('>');
  if (gt < 0) return clients.has(flow);
  return clients.has(flow.slice(0, gt)) || clients.has(flow.slice(gt + 1));
}

function failureWindows(reader: BundleReader, a: Analysis, startNs: number, out: Excerpts): void {
  const wins: Array<[number, number]> = [];
  for (const f of a.failures) {
    const t = nsFromIso(f.at);
    if (t === null) continue;
    const last = wins[wins.length - 1];
    if (last && t - 1e9 <= last[1]) last[1] = Math.max(last[1], t + 1e9);
    else wins.push([t - 1e9, t + 1e9]);
  }
  out.windowsTotal = wins.length;
  const clients = new Set(a.failures.map((f) => f.client));
  try {
    for (const [s, e] of wins.slice(0, MAX_WINDOWS)) {
      const lines: ExcerptLine[] = [];
      let truncated = false;
      for (const it of timelineItems(reader, { since: s, until: e })) {
        // keep the window readable: packets and conntrack only for failed clients, RSTs and ICMP errors
        if ((it.source === 'packets' || it.source === 'conntrack') && it.kind !== 'rst' && it.kind !== 'icmp' && !ofClient(it, clients)) continue;
        if (lines.length >= MAX_LINES_PER_WINDOW) { truncated = true; break; }
        lines.push({ at: iso(it.ts_ns) ?? '', source: clean(it.source, 30), kind: clean(it.kind, 40), text: formatTimelineLine(it, startNs) });
      }
      out.failureWindows.push({ since: iso(s) ?? '', until: iso(e) ?? '', lines, truncated });
    }
  } catch (e) {
    // the timeline illustrates the findings; a table it cannot read must not cost the report
    out.error = clean((e as Error)?.message ?? String(e), 200);
  }
}

/** The time span the html swimlane of a pod shows: its key instants and failures, padded 12 %. */
export function podSpan(a: Analysis, p: AnalysisPod, failuresOf: (a: Analysis, p: AnalysisPod) => Array<[Analysis['failures'][number], number]>): [number, number] | null {
  const ts: number[] = [];
  const add = (x: string | null | undefined) => { const n = x ? nsFromIso(x) : null; if (n !== null) ts.push(n); };
  for (const x of [p.deletionAt, p.endpointTerminatingAt, p.endpointRemovedAt, p.ruleRemovedAt, p.sigtermAt, p.listenerClosedAt, p.exitedAt]) add(x);
  for (const x of Object.values(p.ruleRemovedAtByNode ?? {})) add(x);
  for (const [f] of failuresOf(a, p)) add(f.at);
  if (!ts.length) return null;
  let t0 = Math.min(...ts), t1 = Math.max(...ts);
  const span = Math.max(t1 - t0, 50e6);
  t0 -= span * 0.12; t1 += span * 0.12;
  return [t0, t1];
}

export function failuresOfPod(a: Analysis, p: AnalysisPod): Array<[Analysis['failures'][number], number]> {
  const key = p.namespace ? `${p.namespace}/${p.name}` : p.name;
  return a.failures.map((f, i) => [f, i] as [Analysis['failures'][number], number])
    .filter(([f]) => f.backend.pod === key || f.backend.pod === p.name || (!f.backend.pod && !!p.ip && f.backend.ip === p.ip));
}

function traffic(reader: BundleReader, a: Analysis, out: Excerpts): void {
  let budget = MAX_TRAFFIC_MARKS_TOTAL;
  for (const p of a.pods) {
    const span = podSpan(a, p, failuresOfPod);
    const marks: Excerpts['traffic'][number]['marks'] = [];
    let truncated = false;
    const cap = Math.min(MAX_TRAFFIC_MARKS, budget);
    if (span) {
      const [since, until] = span;
      try {
        for (const r of reader.probeRequests({ since, until })) {
          if (marks.length >= cap) { truncated = true; break; }
          const ok = r.outcome === 'ok';
          marks.push({ at: iso(r.start_ns) ?? '', kind: ok ? 'probe-ok' : 'probe-failed',
            title: clean(`probe ${r.local_addr ?? '?'}:${r.local_port ?? '?'} → ${r.remote}: ${r.outcome}${r.status ? ` ${r.status}` : ''}${r.error ? ` ${r.error}` : ''}`, 300) });
        }
        if (p.ip && !truncated) {
          let n = 0;
          for (const k of reader.packets({ since, until, withData: false, where: 'proto = \'tcp\' AND (tcp_flags & 4) != 0' })) {
            if (k.src !== p.ip && k.dst !== p.ip) continue;
            if (++n > cap || marks.length >= cap) { truncated = true; break; }
            marks.push({ at: iso(k.ts_ns) ?? '', kind: 'rst', title: clean(`RST ${k.src}:${k.sport} → ${k.dst}:${k.dport} on ${k.iface ?? '?'}`, 300) });
          }
        }
      } catch {
        // traffic marks only illustrate the verdict; a table that cannot be read leaves them out
      }
    }
    budget -= marks.length;
    out.traffic.push({ pod: p.namespace ? `${p.namespace}/${p.name}` : p.name, marks, truncated });
  }
}

export function takeExcerpts(reader: BundleReader, a: Analysis, startNs: number | null): Excerpts {
  const out: Excerpts = { failureWindows: [], windowsTotal: 0, traffic: [] };
  if (a.failures.length && startNs !== null) failureWindows(reader, a, startNs, out);
  traffic(reader, a, out);
  return out;
}
