/**
 * The merged timeline: events, probe requests, conntrack, facts derived from the kube watch rows and
 * packets (SYN/FIN/RST and ICMP errors, or all) in time order — streamed by a k-way merge of sorted
 * cursors, so memory stays bounded whatever the bundle size.
 */
import { TCP } from '../schemas/rows.js';
import type { BundleReader } from './bundle-reader.js';
import { describeChange, SliceTracker } from './model/slices.js';
import { clean, joinAddr, parseJson, rel, sane, str } from './util.js';

export interface TimelineItem {
  ts_ns: number;
  source: string;
  kind: string;
  subject: string | null;
  fields: Record<string, unknown>;
  pod?: string | null;
}

export interface TimelineOptions { since?: number; until?: number; sources?: string[]; pod?: string; allPackets?: boolean; podTerms?: string[] }

const TCP_FLAGS = Object.entries(TCP) as Array<[string, number]>;

export function tcpFlagNames(f: number | null): string {
  if (f === null || f === undefined) return '';
  const n: string[] = [];
  for (const [k, v] of TCP_FLAGS) if (f & v) n.push(k);
  return n.join(',');
}

/** `ip:port` (`[v6]:port`), or the bare address when the port is unknown — the form failures use for clients. */
function endpoint(ip: string | null | undefined, port: number | null | undefined): string {
  if (port === null || port === undefined) return ip ?? '?';
  return joinAddr(ip, port);
}

function* eventItems(reader: BundleReader, o: TimelineOptions, sources?: string[]): IterableIterator<TimelineItem> {
  for (const e of reader.events({ since: o.since, until: o.until, sources })) {
    const ts = sane(e.ts_ns);
    if (ts === null) continue;
    const j = parseJson(e.attrs);
    yield { ts_ns: ts, source: String(e.source), kind: String(e.kind), subject: e.subject === null ? null : String(e.subject), fields: j.ok ? j.v : { attrs: String(e.attrs) } };
  }
}

function* probeItems(reader: BundleReader, o: TimelineOptions): IterableIterator<TimelineItem> {
  for (const r of reader.probeRequests({ since: o.since, until: o.until })) {
    const ts = sane(r.start_ns);
    if (ts === null) continue;
    const end = sane(r.end_ns);
    const fields: Record<string, unknown> = { local: joinAddr(r.local_addr, r.local_port), remote: r.remote };
    if (r.status !== null) fields.status = r.status;
    if (r.error) fields.error = r.error;
    if (end !== null) fields.duration = `${Math.round((end - ts) / 1e3) / 1e3}ms`;
    yield { ts_ns: ts, source: 'probe', kind: r.outcome === 'ok' ? 'response' : String(r.outcome), subject: r.remote, fields };
  }
}

function* conntrackItems(reader: BundleReader, o: TimelineOptions): IterableIterator<TimelineItem> {
  for (const c of reader.conntrack({ since: o.since, until: o.until })) {
    const ts = sane(c.ts_ns);
    if (ts === null) continue;
    const fields: Record<string, unknown> = {
      orig: `${joinAddr(c.orig_src, c.orig_sport)}>${joinAddr(c.orig_dst, c.orig_dport)}`, reply_src: joinAddr(c.reply_src, c.reply_sport),
    };
    if (c.state) fields.state = c.state;
    if (c.flags) fields.flags = c.flags;
    yield { ts_ns: ts, source: 'conntrack', kind: `conntrack-${String(c.type).toLowerCase()}`, subject: joinAddr(c.orig_src, c.orig_sport), fields };
  }
}

/** Facts from watch rows: pod IP assigned, deletion requested, deleted; slice entry changes. */
function* kubeItems(reader: BundleReader, o: TimelineOptions): IterableIterator<TimelineItem> {
  const pods = new Map<string, { ip: string | null; deleting: boolean; ready: boolean }>();
  const tracker = new SliceTracker();
  // read from the start so slice diffs and pod state are right, emit only inside the range
  for (const r of reader.k8sObjects({ until: o.until })) {
    const ts = sane(r.ts_ns);
    if (ts === null) continue;
    const emit = o.since === undefined || ts >= o.since;
    if (r.kind === 'EndpointSlice') {
      const ch = tracker.push(ts, String(r.event_type), r.namespace, r.name, r.object);
      if (emit && ch.length) yield { ts_ns: ts, source: 'kube', kind: 'slice-modified', subject: `${r.namespace ?? ''}/${r.name ?? ''}`, fields: { changes: `[${ch.map(describeChange).join(' ')}]`, slice: r.name } };
      continue;
    }
    if (r.kind !== 'Pod') {
      if (emit) yield { ts_ns: ts, source: 'kube', kind: `${String(r.kind).toLowerCase()}-${String(r.event_type).toLowerCase()}`, subject: `${r.namespace ?? ''}/${r.name ?? ''}`, fields: { rv: r.resource_version } };
      continue;
    }
    const j = parseJson(r.object);
    if (!j.ok) continue;
    const md = (j.v.metadata ?? {}) as Record<string, unknown>;
    const st = (j.v.status ?? {}) as Record<string, unknown>;
    const uid = str(md.uid) ?? `${r.namespace}/${r.name}`;
    const prev = pods.get(uid) ?? { ip: null, deleting: false, ready: false };
    const ip = str(st.podIP);
    const ready = Array.isArray(st.conditions) && (st.conditions as Array<Record<string, unknown>>).some((c) => c && c.type === 'Ready' && c.status === 'True');
    const deleting = !!str(md.deletionTimestamp);
    const base = { namespace: md.namespace, pod: md.name, pod_ip: ip ?? prev.ip };
    const items: TimelineItem[] = [];
    if (!pods.has(uid)) items.push({ ts_ns: ts, source: 'kube', kind: 'pod-seen', subject: `${md.namespace}/${md.name}`, fields: { ...base, phase: st.phase } });
    if (ip && ip !== prev.ip) items.push({ ts_ns: ts, source: 'kube', kind: 'pod-ip', subject: `${md.namespace}/${md.name}`, fields: base });
    if (ready !== prev.ready) items.push({ ts_ns: ts, source: 'kube', kind: ready ? 'pod-ready' : 'pod-not-ready', subject: `${md.namespace}/${md.name}`, fields: base });
    if (deleting && !prev.deleting) items.push({ ts_ns: ts, source: 'kube', kind: 'terminating', subject: `${md.namespace}/${md.name}`, fields: { deletion_timestamp: md.deletionTimestamp, ...base } });
    if (r.event_type === 'DELETED') items.push({ ts_ns: ts, source: 'kube', kind: 'deleted', subject: `${md.namespace}/${md.name}`, fields: base });
    pods.set(uid, { ip: ip ?? prev.ip, deleting: deleting || prev.deleting, ready });
    if (r.event_type === 'DELETED') pods.delete(uid);
    if (emit) yield* items;
  }
}

function* packetItems(reader: BundleReader, o: TimelineOptions): IterableIterator<TimelineItem> {
  const where = o.allPackets ? undefined : "((proto = 'tcp' AND (tcp_flags & 7) != 0) OR (proto = 'icmp' AND icmp_type IN (3, 11, 12)) OR (proto = 'icmp6' AND icmp_type < 128))";
  // --packets on a chunked bundle (schema 3): every frame, decoded from the chunks (the table is only the index)
  const rows = o.allPackets && reader.hasChunks() ? reader.packets({ since: o.since, until: o.until }) : reader.packets({ since: o.since, until: o.until, withData: false, where });
  for (const p of rows) {
    const ts = sane(p.ts_ns);
    if (ts === null) continue;
    const subject0 = `${endpoint(p.src, p.sport)}>${endpoint(p.dst, p.dport)}`;
    const fields: Record<string, unknown> = { flow: subject0, iface: p.iface, proto: p.proto };
    if (p.proto === 'tcp') { fields.flags = tcpFlagNames(p.tcp_flags); if (p.payload_len) fields.len = p.payload_len; }
    if (p.icmp_type !== null) { fields.icmp = `${p.icmp_type}/${p.icmp_code ?? 0}`; if (p.inner_src) fields.quoted = `${endpoint(p.inner_src, p.inner_sport)}>${endpoint(p.inner_dst, p.inner_dport)}`; }
    const subject = subject0;
    const kind = p.proto === 'tcp' ? (p.tcp_flags ?? 0) & TCP.RST ? 'rst' : ((p.tcp_flags ?? 0) & TCP.SYN) ? ((p.tcp_flags ?? 0) & TCP.ACK ? 'syn-ack' : 'syn') : ((p.tcp_flags ?? 0) & TCP.FIN) ? 'fin' : 'packet'
      : p.icmp_type !== null ? 'icmp' : 'packet';
    yield { ts_ns: ts, source: 'packets', kind, subject, fields };
  }
}

function wants(o: TimelineOptions, s: string): boolean {
  return !o.sources?.length || o.sources.includes(s);
}

function hasTerm(hay: string, terms: string[]): boolean {
  for (const t of terms) {
    let i = hay.indexOf(t);
    while (i >= 0) {
      const before = hay[i - 1] ?? ' ';
      const after = hay.slice(i + t.length, i + t.length + 2);
      if (!/[0-9A-Za-z.-]/.test(before) && !/^([0-9A-Za-z-]|\.[0-9])/.test(after)) return true;
      i = hay.indexOf(t, i + 1);
    }
  }
  return false;
}

/** The cheap subject test first; the fields are serialized only when it fails. */
function matchesPod(it: TimelineItem, terms: string[]): boolean {
  if (it.subject && hasTerm(it.subject, terms)) return true;
  return hasTerm(JSON.stringify(it.fields), terms);
}

/** Time-ordered merge of every stream, lazily. */
export function* timelineItems(reader: BundleReader, opts: TimelineOptions): IterableIterator<TimelineItem> {
  const streams: IterableIterator<TimelineItem>[] = [];
  const evSources = opts.sources?.length ? opts.sources.filter((s) => !['probe', 'conntrack', 'packets'].includes(s) || s === 'packets') : undefined;
  if (!opts.sources?.length || (evSources && evSources.length)) streams.push(eventItems(reader, opts, evSources?.length ? evSources : undefined));
  if (wants(opts, 'probe')) streams.push(probeItems(reader, opts));
  if (wants(opts, 'conntrack')) streams.push(conntrackItems(reader, opts));
  if (wants(opts, 'kube')) streams.push(kubeItems(reader, opts));
  if (wants(opts, 'packets')) {
    // a recorded bundle's index is built before any stream starts: it is written while no statement of
    // the connection is open (the streams below read concurrently)
    reader.ensurePacketIndex();
    streams.push(packetItems(reader, opts));
  }
  const heads: Array<TimelineItem | null> = streams.map((s) => { const n = s.next(); return n.done ? null : n.value; });
  const terms = opts.pod ? [opts.pod, ...(opts.podTerms ?? [])].filter((t) => t.length > 0) : null;
  for (;;) {
    let bi = -1;
    for (let i = 0; i < heads.length; i++) { const h = heads[i]; if (h && (bi < 0 || h.ts_ns < heads[bi]!.ts_ns)) bi = i; }
    if (bi < 0) return;
    const it = heads[bi]!;
    const n = streams[bi]!.next();
    heads[bi] = n.done ? null : n.value;
    if (terms && !matchesPod(it, terms)) continue;
    yield it;
  }
}

function fmtValue(v: unknown): string {
  let s: string;
  if (v === null || v === undefined) s = 'null';
  else if (typeof v === 'string') s = v;
  else if (typeof v === 'number' || typeof v === 'boolean') s = String(v);
  else s = JSON.stringify(v);
  s = clean(s, 200);
  return /\s/.test(s) || s === '' ? JSON.stringify(s) : s;
}

/** `+12.825s  [source]  kind  key=value …`, control characters neutralized. */
export function formatTimelineLine(item: TimelineItem, startNs: number): string {
  const kv = Object.entries(item.fields ?? {})
    .filter(([, v]) => v !== undefined && v !== null && v !== '')
    .map(([k, v]) => `${clean(k, 40)}=${fmtValue(v)}`);
  if (item.subject && !kv.length) kv.push(`subject=${fmtValue(item.subject)}`);
  const src = `[${clean(item.source, 30)}]`;
  return `${rel(item.ts_ns, startNs).padStart(9)}  ${src.padEnd(13)}  ${clean(item.kind, 40)}  ${kv.join(' ')}`.trimEnd();
}

export function parseInstant(text: string, startNs: number): number {
  const t = text.trim();
  if (/^[+]?\d+(\.\d+)?$/.test(t)) return startNs + Number(t.replace(/^\+/, '')) * 1e9;
  const ms = Date.parse(t);
  if (Number.isNaN(ms)) return NaN;
  const frac = /\.(\d+)/.exec(t)?.[1] ?? '';
  return ms * 1e6 + (frac.length > 3 ? Number(frac.slice(3, 9).padEnd(6, '0')) : 0);
}
