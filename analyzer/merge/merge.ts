/**
 * Merge bundles recorded on several nodes into one bundle.
 *
 * Clock offsets: every node's recorder receives the same API watch events (same object, same
 * resourceVersion, same event type). For node B against the reference node R (the first bundle),
 * d_i = recv_B,i − recv_R,i = θ_B + (λ_B,i − λ_R,i), where θ_B is B's clock offset and λ the watch
 * delivery latency to each node. offset_B = median(d_i) — robust to a few slow deliveries; its error is
 * the median latency difference between the two nodes (0 when both are served alike, at most the
 * largest delivery latency L otherwise; the observed spread max(d) − min(d) ≤ 2L shows how large L
 * can be). Every timestamp of B is then shifted by −offset_B. The stats per node are kept in meta.
 *
 * Rows keep their node: events get attrs.recorded_on (and attrs.node when the kind has no `node`
 * attribute of its own, e.g. endpoint-rule-*); packets' iface becomes `node/iface`; API-derived rows
 * every node received (k8s_objects; pod-, endpoint-changed and rollout- events) are kept once, at the
 * earliest corrected receive time, with attrs.received_by listing the nodes.
 */
import { basename, resolve } from 'node:path';
import { writeWholeBundle } from '../../schemas/db.js';
import { InputError } from '../../schemas/errors.js';
import { META_KEYS, type EventRow, type K8sObjectRow } from '../../schemas/rows.js';
import { asInputError, copyError } from '../analyze.js';
import { BundleReader } from '../bundle-reader.js';
import { FrameStore } from '../../schemas/decode/chunks.js';
import { dbChunkSink } from '../chunk-sink.js';

export interface OffsetStats { samples: number; offset_ns: number; median_abs_dev_ns: number | null; min_ns: number | null; max_ns: number | null; note?: string }

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

type K8sKeyed = Pick<K8sObjectRow, 'ts_ns' | 'kind' | 'namespace' | 'name' | 'uid' | 'resource_version' | 'event_type'>;
export function k8sKey(r: K8sKeyed): string | null {
  if (!r.resource_version) return null;
  return [r.kind, r.namespace ?? '', r.name ?? '', r.uid ?? '', r.resource_version, r.event_type === 'RELIST' || r.event_type === 'LIST' ? 'LIST' : r.event_type].join('\u0000');
}

/** First receive time of every (object, resourceVersion, event type). */
export function receiveTimes(rows: Iterable<K8sKeyed>): Map<string, number> {
  const m = new Map<string, number>();
  for (const r of rows) {
    if (r.event_type === 'BOOKMARK') continue;
    const k = k8sKey(r);
    if (k && !m.has(k)) m.set(k, r.ts_ns);
  }
  return m;
}

/** offset of `other` relative to `ref`: median of receive-time differences over the events both received. */
export function estimateOffset(ref: Map<string, number>, other: Map<string, number>): OffsetStats {
  const d: number[] = [];
  for (const [k, t] of other) { const r = ref.get(k); if (r !== undefined) d.push(t - r); }
  if (!d.length) return { samples: 0, offset_ns: 0, median_abs_dev_ns: null, min_ns: null, max_ns: null, note: 'no API event received by both nodes: offset unknown, 0 assumed' };
  const med = Math.round(median(d));
  return { samples: d.length, offset_ns: med, median_abs_dev_ns: Math.round(median(d.map((x) => Math.abs(x - med)))), min_ns: Math.min(...d), max_ns: Math.max(...d) };
}

const SHARED_KINDS = new Set(['pod-created', 'pod-ready', 'pod-terminating', 'pod-deleted', 'endpoint-changed', 'rollout-restart', 'rollout-complete']);
/** kinds whose attrs already have a `node` with another meaning (the pod's or the endpoint's node) */
const HAS_OWN_NODE = new Set(['pod-created', 'pod-ready', 'pod-terminating', 'pod-deleted', 'endpoint-changed']);

export interface MergeResult { nodes: string[]; offsets: Record<string, number>; stats: Record<string, OffsetStats>; rows: Record<string, number>; deduplicated: number }

export async function mergeBundles(files: string[], out: string): Promise<MergeResult> {
  if (files.length < 2) throw new InputError('merge needs at least two bundles');
  const outAbs = resolve(out);
  for (const f of files) if (resolve(f) === outAbs) throw new InputError(`--out must differ from the input ${f}`);
  const readers: BundleReader[] = [];
  try {
    for (const f of files) readers.push(await BundleReader.open(f).catch((e: unknown) => { throw asInputError(e, f); }));
    const named = readers.map((r, i) => r.metaValue(META_KEYS.node) ?? r.metaValue(META_KEYS.hostname) ?? basename(files[i]!).replace(/\.rtb(\.gz)?$/, ''));
    const dup = named.find((n, i) => named.indexOf(n) !== i);
    if (dup) throw new InputError(`two bundles come from node ${dup}; merge takes one bundle per node`);
    // the result must not depend on argument order: bundles are taken in node-name order, and the
    // reference clock is the first node's by name
    const order = named.map((n, i) => ({ n, i })).sort((a, b) => (a.n < b.n ? -1 : a.n > b.n ? 1 : 0)).map((x) => x.i);
    const nodes = order.map((i) => named[i]!);
    const sortedReaders = order.map((i) => readers[i]!);
    files = order.map((i) => files[i]!);
    readers.splice(0, readers.length, ...sortedReaders);

    const times = readers.map((r) => receiveTimes(r.k8sObjects()));
    const stats: Record<string, OffsetStats> = {};
    const offsets: Record<string, number> = {};
    nodes.forEach((n, i) => {
      stats[n] = i === 0 ? { samples: times[0]!.size, offset_ns: 0, median_abs_dev_ns: 0, min_ns: 0, max_ns: 0, note: 'reference node' } : estimateOffset(times[0]!, times[i]!);
      offsets[n] = stats[n]!.offset_ns;
    });

    const rows: Record<string, number> = { events: 0, packets: 0, conntrack: 0, k8s_objects: 0, nft_snapshots: 0, probe_requests: 0 };
    let deduplicated = 0;
    writeWholeBundle(out, { createdBy: 'merge' }, (db) => {
      // ---- API rows every node received: keep once, earliest corrected time
      const k8sSeen = new Map<string, number>();
      const insK8s = db.prepare(`INSERT INTO k8s_objects(ts_ns, kind, namespace, name, uid, resource_version, event_type, object)
        VALUES (@ts_ns, @kind, @namespace, @name, @uid, @resource_version, @event_type, @object)`);
      const allK8s: Array<K8sObjectRow & { node: string }> = [];
      readers.forEach((r, i) => { for (const o of r.k8sObjects()) allK8s.push({ ...o, ts_ns: o.ts_ns - offsets[nodes[i]!]!, node: nodes[i]! }); });
      allK8s.sort((a, b) => a.ts_ns - b.ts_ns);
      for (const o of allK8s) {
        const k = k8sKey(o);
        if (k && o.event_type !== 'BOOKMARK') {
          if (k8sSeen.has(k)) { deduplicated++; continue; }
          k8sSeen.set(k, o.ts_ns);
        }
        insK8s.run({ ts_ns: o.ts_ns, kind: o.kind, namespace: o.namespace, name: o.name, uid: o.uid, resource_version: o.resource_version, event_type: o.event_type, object: o.object });
        rows.k8s_objects!++;
      }

      // ---- events
      const insEv = db.prepare('INSERT INTO events(ts_ns, source, kind, subject, attrs) VALUES (?, ?, ?, ?, ?)');
      const all: Array<EventRow & { node: string; a: Record<string, unknown> }> = [];
      readers.forEach((r, i) => {
        for (const e of r.eventsParsed<Record<string, unknown>>()) all.push({ ...e, ts_ns: e.ts_ns - offsets[nodes[i]!]!, node: nodes[i]! });
      });
      all.sort((a, b) => a.ts_ns - b.ts_ns || nodes.indexOf(a.node) - nodes.indexOf(b.node));
      const shared = new Map<string, Record<string, unknown>>();
      const keep: Array<{ e: (typeof all)[number]; a: Record<string, unknown> }> = [];
      for (const e of all) {
        const a: Record<string, unknown> = { ...e.a };
        if (SHARED_KINDS.has(e.kind)) {
          const key = `${e.kind}\u0000${e.subject ?? ''}\u0000${JSON.stringify(e.a)}`;
          const first = shared.get(key);
          if (first) {
            const by = first.received_by as string[];
            if (!by.includes(e.node)) by.push(e.node);
            deduplicated++;
            continue;
          }
          a.received_by = [e.node];
          shared.set(key, a);
        }
        a.recorded_on = e.node;
        if (!HAS_OWN_NODE.has(e.kind) && !('node' in a)) a.node = e.node;
        keep.push({ e, a });
      }
      for (const { e, a } of keep) { insEv.run(Math.round(e.ts_ns), e.source, e.kind, e.subject, JSON.stringify(a)); rows.events!++; }

      // ---- per-node tables
      const insPkt = db.prepare(`INSERT INTO packets(ts_ns, iface, linktype, caplen, len, l3, src, dst, proto, sport, dport, tcp_flags, seq, ack,
        payload_len, icmp_type, icmp_code, inner_src, inner_dst, inner_proto, inner_sport, inner_dport, data)
        VALUES (@ts_ns, @iface, @linktype, @caplen, @len, @l3, @src, @dst, @proto, @sport, @dport, @tcp_flags, @seq, @ack,
        @payload_len, @icmp_type, @icmp_code, @inner_src, @inner_dst, @inner_proto, @inner_sport, @inner_dport, @data)`);
      const insCt = db.prepare(`INSERT INTO conntrack(ts_ns, type, proto, state, orig_src, orig_dst, orig_sport, orig_dport, reply_src, reply_dst,
        reply_sport, reply_dport, flags, zone, raw) VALUES (@ts_ns, @type, @proto, @state, @orig_src, @orig_dst, @orig_sport, @orig_dport,
        @reply_src, @reply_dst, @reply_sport, @reply_dport, @flags, @zone, @raw)`);
      const insNft = db.prepare('INSERT INTO nft_snapshots(ts_ns, format, reason, ruleset) VALUES (@ts_ns, @format, @reason, @ruleset)');
      const insProbe = db.prepare(`INSERT INTO probe_requests(start_ns, end_ns, local_addr, local_port, remote, outcome, status, error)
        VALUES (@start_ns, @end_ns, @local_addr, @local_port, @remote, @outcome, @status, @error)`);
      const chunks = dbChunkSink(db);
      readers.forEach((r, i) => {
        const node = nodes[i]!;
        const off = offsets[node]!;
        // chunked inputs (schema 3) merge into chunks, each node's frames on `node/iface`, the index rebuilt
        const store = r.hasChunks() ? new FrameStore(chunks) : null;
        for (const p of r.packets()) {
          if (store && p.data instanceof Uint8Array) {
            store.frame(`${node}/${p.iface ?? 'unknown'}`, p.linktype, p.ts_ns - off, p.data.length, p.len, p.data);
            rows.packets!++;
            continue;
          }
          const { id: _id, ...rest } = p;
          insPkt.run({ ...rest, ts_ns: p.ts_ns - off, iface: `${node}/${p.iface ?? 'unknown'}`, data: p.data ? Buffer.from(p.data as Uint8Array) : null });
          rows.packets!++;
        }
        store?.flush();
        // every row names its node (analyze reads which node DNATed a connection from it)
        for (const c of r.conntrack()) { const { id: _id, ...rest } = c; insCt.run({ ...rest, ts_ns: c.ts_ns - off, raw: c.raw === null ? `[${node}]` : `[${node}] ${c.raw}` }); rows.conntrack!++; }
        for (const s of r.nftSnapshots()) { const { id: _id, ...rest } = s; insNft.run({ ...rest, ts_ns: s.ts_ns - off, reason: `${node}:${s.reason ?? ''}` }); rows.nft_snapshots!++; }
        for (const q of r.probeRequests()) { const { id: _id, ...rest } = q; insProbe.run({ ...rest, start_ns: q.start_ns - off, end_ns: q.end_ns === null ? null : q.end_ns - off }); rows.probe_requests!++; }
      });

      // ---- sources: one row per source, counts summed, per-node detail
      // a node where the source is not ok is named first: the analysis's warning quotes the detail's start
      const bySrc = new Map<string, { status: string; detail: Array<{ ok: boolean; text: string }>; events: number; dropped: number; clock: Set<string> }>();
      readers.forEach((r, i) => {
        for (const s of r.sources()) {
          const m = bySrc.get(s.name) ?? { status: s.status, detail: [], events: 0, dropped: 0, clock: new Set<string>() };
          if (m.status === 'ok' && s.status !== 'ok') m.status = s.status;
          m.detail.push({ ok: s.status === 'ok', text: `${nodes[i]}: ${s.status}${s.detail ? ` (${s.detail})` : ''}` });
          m.events += s.events; m.dropped += s.dropped; m.clock.add(s.clock);
          bySrc.set(s.name, m);
        }
      });
      const insSrc = db.prepare('INSERT OR REPLACE INTO sources(name, status, detail, events, dropped, clock) VALUES (?, ?, ?, ?, ?, ?)');
      for (const [name, m] of bySrc) {
        const detail = [...m.detail.filter((d) => !d.ok), ...m.detail.filter((d) => d.ok)].map((d) => d.text).join('; ');
        insSrc.run(name, m.status, detail, m.events, m.dropped, [...m.clock].join(','));
      }

      // ---- meta
      const insMeta = db.prepare('INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)');
      const skip = new Set<string>([META_KEYS.schemaVersion, META_KEYS.createdBy, META_KEYS.packetsIndex, META_KEYS.startedNs, META_KEYS.endedNs, META_KEYS.closedCleanly, META_KEYS.clockOffsets, META_KEYS.receiptStamped, META_KEYS.nodeAddrs]);
      for (const [k, v] of readers[0]!.meta()) if (!skip.has(k)) insMeta.run(k, v);
      const starts = readers.map((r, i) => (r.metaNumber(META_KEYS.startedNs) ?? r.timeRange()?.start ?? NaN) - offsets[nodes[i]!]!).filter(Number.isFinite);
      const ends = readers.map((r, i) => (r.metaNumber(META_KEYS.endedNs) ?? r.timeRange()?.end ?? NaN) - offsets[nodes[i]!]!).filter(Number.isFinite);
      if (starts.length) insMeta.run(META_KEYS.startedNs, String(Math.min(...starts)));
      if (ends.length) insMeta.run(META_KEYS.endedNs, String(Math.max(...ends)));
      insMeta.run(META_KEYS.closedCleanly, readers.every((r) => r.closedCleanly) ? '1' : '0');
      insMeta.run(META_KEYS.node, nodes[0]!);
      insMeta.run('nodes', JSON.stringify(nodes));
      insMeta.run(META_KEYS.mergedFrom, JSON.stringify(files.map((f, i) => ({ file: f, node: nodes[i], created_by: readers[i]!.metaValue(META_KEYS.createdBy) ?? null }))));
      insMeta.run(META_KEYS.nodeClockOffsets, JSON.stringify(offsets));
      insMeta.run('node_clock_offset_stats', JSON.stringify({ method: 'median of receive-time differences of the same API watch events (object, resourceVersion, type) against the reference node', reference: nodes[0], nodes: stats }));
      insMeta.run(META_KEYS.clockOffsets, JSON.stringify(Object.fromEntries(readers.map((r, i) => [nodes[i], r.metaJson<unknown>(META_KEYS.clockOffsets) ?? null]))));
      const addrs: Record<string, unknown> = {};
      for (const r of readers) { const m = r.metaJson<Record<string, unknown>>(META_KEYS.nodeAddrs); if (m && typeof m === 'object' && !Array.isArray(m)) Object.assign(addrs, m); }
      if (Object.keys(addrs).length) insMeta.run(META_KEYS.nodeAddrs, JSON.stringify(Object.fromEntries(Object.keys(addrs).sort().map((k) => [k, addrs[k]]))));
      insMeta.run(META_KEYS.receiptStamped, JSON.stringify([...new Set(readers.flatMap((r) => r.metaJson<string[]>(META_KEYS.receiptStamped) ?? []))]));
    });
    return { nodes, offsets, stats, rows, deduplicated };
  } catch (e) {
    throw copyError(e, readers, out);
  } finally {
    for (const r of readers) r.close();
  }
}
