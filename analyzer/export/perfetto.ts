/**
 * Chrome trace-event JSON (object form) that ui.perfetto.dev and chrome://tracing load.
 * One process per terminated pod (lifecycle instants, the exposure window as a span, failures) and
 * one process per bundle source (its events as instants, one thread per event kind); probe requests
 * are spans; SYN/RST/FIN packets and ICMP errors are instants on the packets process.
 * Timestamps are microseconds relative to the bundle start (fractions keep the nanoseconds).
 */
import type { Analysis } from '../../schemas/analysis.js';
import { nsFromIso } from '../../schemas/analysis.js';
import { TCP } from '../../schemas/rows.js';
import type { BundleReader } from '../bundle-reader.js';
import { capStrings } from '../util.js';

export interface TraceEvent {
  name: string;
  ph: 'M' | 'i' | 'X';
  pid: number;
  tid: number;
  ts?: number;
  dur?: number;
  s?: 't' | 'p' | 'g';
  cat?: string;
  args?: Record<string, unknown>;
}
export interface ChromeTrace { traceEvents: TraceEvent[]; displayTimeUnit: 'ms'; metadata?: Record<string, unknown> }

const POD_PID_BASE = 1;
const SOURCE_PID_BASE = 1000;
const MAX_EVENTS = 1_000_000;

export function buildPerfetto(a: Analysis | null, reader: BundleReader): ChromeTrace {
  const range = reader.timeRange();
  const startNs = reader.metaNumber('started_ns') ?? range?.start ?? 0;
  const origin = Math.min(startNs, range?.start ?? startNs);
  const us = (ns: number) => Math.round(ns - origin) / 1e3;
  const ev: TraceEvent[] = [];
  const meta = (pid: number, name: string, sortIndex: number) => {
    ev.push({ name: 'process_name', ph: 'M', pid, tid: 0, args: { name } });
    ev.push({ name: 'process_sort_index', ph: 'M', pid, tid: 0, args: { sort_index: sortIndex } });
  };
  const thread = (pid: number, tid: number, name: string) => ev.push({ name: 'thread_name', ph: 'M', pid, tid, args: { name } });

  // ---- pods (from the analysis)
  const pods = a?.pods ?? [];
  pods.forEach((p, i) => {
    const pid = POD_PID_BASE + i;
    const label = p.namespace ? `${p.namespace}/${p.name}` : p.name;
    meta(pid, `pod ${label}${p.ip ? ` (${p.ip})` : ''}`, i);
    thread(pid, 1, 'lifecycle'); thread(pid, 2, 'exposure'); thread(pid, 3, 'failures');
    const inst = (iso: string | null, name: string, cat: string) => {
      const ns = iso ? nsFromIso(iso) : null;
      if (ns !== null) ev.push({ name, ph: 'i', s: 't', pid, tid: 1, ts: us(ns), cat, args: { at: iso } });
    };
    inst(p.deletionAt, 'deletion requested', 'api');
    inst(p.endpointTerminatingAt, 'endpoint terminating', 'api');
    inst(p.endpointRemovedAt, 'endpoint removed', 'api');
    inst(p.sigtermAt, 'SIGTERM', 'process');
    inst(p.listenerClosedAt, 'listener closed', 'process');
    inst(p.exitedAt, 'process exit', 'process');
    inst(p.ruleRemovedAt, 'rule removed (this node)', 'rules');
    for (const [node, at] of Object.entries(p.ruleRemovedAtByNode ?? {})) inst(at, `rule removed on ${node}`, 'rules');
    const lc = p.listenerClosedAt ? nsFromIso(p.listenerClosedAt) : null;
    const rr = p.ruleRemovedAt ? nsFromIso(p.ruleRemovedAt) : null;
    if (lc !== null && rr !== null && rr > lc) {
      ev.push({ name: 'exposure window', ph: 'X', pid, tid: 2, ts: us(lc), dur: Math.round(rr - lc) / 1e3, cat: 'exposure',
        args: { exposureMs: p.exposureMs, verdict: p.verdict, from: 'listener closed', to: 'rule removed' } });
    }
    const key = label;
    for (const f of a?.failures ?? []) {
      if (f.backend.pod !== key && !(f.backend.pod === null && p.ip && f.backend.ip === p.ip)) continue;
      const ns = nsFromIso(f.at);
      if (ns !== null) ev.push({ name: `failure: ${f.cause}`, ph: 'i', s: 't', pid, tid: 3, ts: us(ns), cat: 'failure', args: { client: f.client, service: f.service, backend: f.backend, evidence: f.evidence } });
    }
  });

  // ---- sources
  const srcPid = new Map<string, number>();
  const tids = new Map<string, number>();
  const pidOf = (source: string) => {
    let pid = srcPid.get(source);
    if (pid === undefined) {
      pid = SOURCE_PID_BASE + srcPid.size;
      srcPid.set(source, pid);
      meta(pid, `source ${source}`, 100 + srcPid.size);
    }
    return pid;
  };
  const tidOf = (pid: number, name: string) => {
    const k = `${pid}\u0000${name}`;
    let t = tids.get(k);
    if (t === undefined) { t = tids.size + 1; tids.set(k, t); thread(pid, t, name); }
    return t;
  };
  let truncated = false;
  const room = () => { if (ev.length < MAX_EVENTS) return true; truncated = true; return false; };
  for (const r of reader.eventsParsed()) {
    if (!room()) break;
    const pid = pidOf(r.source);
    ev.push({ name: r.subject ? `${r.kind} ${r.subject}` : r.kind, ph: 'i', s: 't', pid, tid: tidOf(pid, r.kind), ts: us(r.ts_ns), cat: r.kind, args: r.a as Record<string, unknown> });
  }
  for (const q of reader.probeRequests()) {
    if (!room()) break;
    const pid = pidOf('probe');
    const end = q.end_ns ?? q.start_ns;
    ev.push({ name: `probe ${q.outcome}${q.error ? ` ${q.error}` : q.status ? ` ${q.status}` : ''}`, ph: 'X', pid, tid: tidOf(pid, q.outcome === 'ok' ? 'requests ok' : 'requests failed'),
      ts: us(q.start_ns), dur: Math.max(0, Math.round(end - q.start_ns) / 1e3), cat: 'probe', args: { local: `${q.local_addr}:${q.local_port}`, remote: q.remote, status: q.status, error: q.error } });
  }
  for (const k of reader.packets({ withData: false, where: `(proto = 'tcp' AND (tcp_flags & ${TCP.SYN | TCP.RST | TCP.FIN}) != 0) OR icmp_type IN (3, 1)` })) {
    if (!room()) break;
    const pid = pidOf('packets');
    const f = k.tcp_flags ?? 0;
    const what = k.proto === 'tcp' ? [f & TCP.SYN ? 'SYN' : '', f & TCP.RST ? 'RST' : '', f & TCP.FIN ? 'FIN' : '', f & TCP.ACK ? 'ACK' : ''].filter(Boolean).join('+') : `${k.proto} type ${k.icmp_type}`;
    ev.push({ name: `${what} ${k.src}:${k.sport ?? ''} > ${k.dst}:${k.dport ?? ''}`, ph: 'i', s: 't', pid, tid: tidOf(pid, k.iface ?? 'unknown'), ts: us(k.ts_ns), cat: 'packet',
      args: { iface: k.iface, len: k.len, flags: f } });
  }
  capStrings(ev); // names and args copy bundle strings: a damaged one may be 40 MB
  return { traceEvents: ev, displayTimeUnit: 'ms', metadata: { 'rolltrace-bundle-start-ns': String(origin), truncated, node: reader.metaValue('node') ?? null } };
}
