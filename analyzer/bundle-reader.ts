/**
 * Read-only access to a bundle for the analyzer: typed, streaming (iterators, bounded memory), tolerant
 * of bundles that lack a table (older or damaged recorders): a missing table reads as empty and is
 * reported by `missing()`.
 */
import Database from 'better-sqlite3';
import { migrate, openBundleForRead, type DB, type OpenedBundle } from '../schemas/db.js';
import type { EventKind } from '../schemas/events.js';
import type {
  ConntrackRow, EventRow, K8sObjectRow, MetaRow, NftSnapshotRow, ProbeRequestRow, SourceRow, StoredPacketRow,
} from '../schemas/rows.js';
import { META_KEYS } from '../schemas/rows.js';
import { parseJsonBounded } from '../schemas/json.js';
import { chunkFrames } from '../schemas/decode/chunks.js';
import { insertChunkIndex } from './chunk-sink.js';
import { PassRowsCollector, type PassRows } from './model/packet-pages.js';
import { decodeFrame } from '../schemas/decode/packet.js';

export const CORE_TABLES = ['meta', 'sources', 'events', 'packets', 'conntrack', 'k8s_objects', 'nft_snapshots', 'probe_requests'] as const;
export type CoreTable = (typeof CORE_TABLES)[number];

export interface TimeRange { since?: number; until?: number }

/**
 * JSON columns longer than this are read as the marker OVERSIZE (not JSON: counted like unparsable
 * attrs) instead of being materialized: a real event's attrs or a Kubernetes object is < 1.5 MiB,
 * a damaged bundle may hold 40 MB in one cell, and each copy of it costs the analysis ~100 MB.
 */
export const MAX_JSON_CELL = 8 * 1024 * 1024;
/** nft rulesets of big clusters are tens of MB: their own, larger bound (as import's document bound) */
export const MAX_RULESET_CELL = 64 * 1024 * 1024;
export const OVERSIZE = 'oversize';
const bounded = (col: string, max: number) => `CASE WHEN length(${col}) > ${max} THEN '${OVERSIZE}' ELSE ${col} END AS ${col}`;
/** identifiers (source, kind, names: short in any real bundle) cut to `max` characters instead of copied whole */
const capped = (col: string, max = 1024) => `CASE WHEN typeof(${col}) = 'text' AND length(${col}) > ${max} THEN substr(${col}, 1, ${max}) ELSE ${col} END AS ${col}`;

const PACKET_COLS = `id, ts_ns, iface, linktype, caplen, len, l3, src, dst, proto, sport, dport, tcp_flags, seq, ack, payload_len,
      icmp_type, icmp_code, inner_src, inner_dst, inner_proto, inner_sport, inner_dport`;

let ownSchema: { table: string; columns: string; views: string[] } | null = null;
/** `packets` and the views that read it as this rolltrace creates them (its migrations on a scratch database) */
function ownPacketsSchema(): { table: string; columns: string; views: string[] } {
  if (ownSchema) return ownSchema;
  const m = new Database(':memory:');
  try {
    migrate(m);
    const table = (m.prepare("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'packets'").get() as { sql: string }).sql;
    const columns = (m.prepare("SELECT name FROM pragma_table_info('packets')").all() as Array<{ name: string }>).map((c) => c.name).join(', ');
    const views = (m.prepare("SELECT sql FROM sqlite_master WHERE type = 'view' AND sql LIKE '%packets%' ORDER BY name").all() as Array<{ sql: string }>).map((v) => v.sql);
    return (ownSchema = { table, columns, views });
  } finally {
    m.close();
  }
}

export class BundleReader {
  readonly db: DB;
  readonly file: string;
  private opened: OpenedBundle;
  private tables: Set<string>;
  private metaCache: Map<string, string> | null = null;

  private constructor(opened: OpenedBundle) {
    this.opened = opened;
    this.db = opened.db;
    this.file = opened.original;
    this.tables = new Set((this.db.prepare("SELECT name FROM sqlite_master WHERE type IN ('table','view')").all() as { name: string }[]).map((r) => r.name));
  }

  static async open(path: string): Promise<BundleReader> {
    return new BundleReader(await openBundleForRead(path));
  }

  close(): void { this.opened.close(); }

  get schemaVersion(): number { return this.opened.schemaVersion; }
  /** was a temporary copy opened (a .rtb.gz inflated, an older schema migrated) rather than the file itself? */
  get isCopy(): boolean { return this.opened.path !== this.opened.original; }
  /** the file SQLite opened: the bundle itself, or its temporary copy */
  get openedPath(): string { return this.opened.path; }

  has(table: string): boolean { return this.tables.has(table); }
  /** core tables this bundle lacks */
  missing(): CoreTable[] { return CORE_TABLES.filter((t) => !this.tables.has(t)); }

  meta(): Map<string, string> {
    if (!this.metaCache) {
      this.metaCache = new Map();
      if (this.has('meta')) for (const r of this.db.prepare('SELECT key, value FROM meta').all() as MetaRow[]) this.metaCache.set(r.key, String(r.value));
    }
    return this.metaCache;
  }
  metaValue(key: string): string | undefined { return this.meta().get(key); }
  metaJson<T>(key: string): T | undefined {
    const v = this.metaValue(key);
    if (v === undefined) return undefined;
    const j = parseJsonBounded(v);
    return j.ok ? (j.v as T) : undefined;
  }
  metaNumber(key: string): number | undefined {
    const v = this.metaValue(key);
    const n = v === undefined ? NaN : Number(v);
    return Number.isFinite(n) ? n : undefined;
  }
  get closedCleanly(): boolean { return this.metaValue(META_KEYS.closedCleanly) === '1'; }

  sources(): SourceRow[] {
    return this.has('sources') ? (this.db.prepare('SELECT name, status, detail, events, dropped, clock FROM sources ORDER BY name').all() as SourceRow[]) : [];
  }

  count(table: CoreTable): number {
    if (!this.has(table)) return 0;
    if (table === 'packets') this.ensurePacketIndex();
    return (this.db.prepare(`SELECT count(*) AS n FROM ${table}`).get() as { n: number }).n;
  }

  /** [min, max] ts_ns over every timestamped table, or null when the bundle holds nothing */
  timeRange(): { start: number; end: number } | null {
    const parts: string[] = [];
    // min and max as two subqueries: each alone is one seek in the column's index, both in one SELECT scan it
    const span = (t: string, lo: string, hi: string) => `SELECT (SELECT min(${lo}) FROM ${t}) AS a, (SELECT max(${hi}) FROM ${t}) AS b`;
    if (this.has('packet_chunks')) parts.push(span('packet_chunks', 'first_ts_ns', 'last_ts_ns'));
    for (const [t, c] of [['events', 'ts_ns'], ['packets', 'ts_ns'], ['conntrack', 'ts_ns'], ['k8s_objects', 'ts_ns'], ['nft_snapshots', 'ts_ns'], ['probe_requests', 'start_ns']] as const) {
      if (this.has(t)) parts.push(span(t, c, c));
    }
    if (!parts.length) return null;
    const r = this.db.prepare(`SELECT min(a) AS a, max(b) AS b FROM (${parts.join(' UNION ALL ')})`).get() as { a: number | null; b: number | null };
    if (r.a === null || r.b === null) return null;
    return { start: r.a, end: r.b };
  }

  private where(col: string, range?: TimeRange, extra: string[] = []): { sql: string; params: number[] } {
    const conds = [...extra];
    const params: number[] = [];
    if (range?.since !== undefined) { conds.push(`${col} >= ?`); params.push(range.since); }
    if (range?.until !== undefined) { conds.push(`${col} <= ?`); params.push(range.until); }
    return { sql: conds.length ? ` WHERE ${conds.join(' AND ')}` : '', params };
  }

  *events(opts: TimeRange & { kinds?: readonly (EventKind | string)[]; sources?: readonly string[] } = {}): IterableIterator<EventRow> {
    if (!this.has('events')) return;
    const extra: string[] = [];
    const params: (string | number)[] = [];
    if (opts.kinds?.length) { extra.push(`kind IN (${opts.kinds.map(() => '?').join(',')})`); params.push(...opts.kinds); }
    if (opts.sources?.length) { extra.push(`source IN (${opts.sources.map(() => '?').join(',')})`); params.push(...opts.sources); }
    const w = this.where('ts_ns', opts, extra);
    yield* this.db.prepare(`SELECT id, ts_ns, ${capped('source')}, ${capped('kind')}, ${capped('subject', 4096)}, ${bounded('attrs', MAX_JSON_CELL)} FROM events${w.sql} ORDER BY ts_ns, id`).iterate(...params, ...w.params) as IterableIterator<EventRow>;
  }

  /** Events with attrs parsed; rows whose attrs are not valid JSON (or nest deeper than MAX_JSON_DEPTH) get `{}` and are counted in `badAttrs`. */
  *eventsParsed<T = Record<string, unknown>>(opts: TimeRange & { kinds?: readonly string[]; sources?: readonly string[] } = {}): IterableIterator<EventRow & { a: T }> {
    for (const r of this.events(opts)) {
      const j = r.attrs === null ? { ok: true as const, v: {} } : parseJsonBounded(r.attrs);
      let a: unknown = j.ok ? j.v : {};
      if (!j.ok) this.badAttrs++;
      if (a === null || typeof a !== 'object') a = {};
      yield { ...r, a: a as T };
    }
  }
  badAttrs = 0;

  /**
   * A recorded bundle keeps its frames in packet_chunks without their index (meta packets_index =
   * deferred: the recorder spends no CPU on it while the rollout runs). The index is built here on first
   * need, with the same header scan as import: into a TEMP table that shadows `packets` for this
   * connection only (every query of the analysis reads it by that name), with TEMP copies of the views
   * that read `packets`; the file is never written. Returns the rows built (0 when there was nothing to do).
   * It writes to the connection: call it before opening any other iterator of this reader (analyze and
   * the timeline do); packets() calls it too, for a reader used one query at a time.
   */
  ensurePacketIndex(): number {
    if (this.indexBuilt !== null) return this.indexBuilt;
    this.indexBuilt = 0;
    if (this.metaValue(META_KEYS.packetsIndex) !== 'deferred' || !this.has('packets') || !this.hasChunks()) return 0;
    const db = this.db;
    // the TEMP table and views from this rolltrace's own schema, never SQL read from the bundle
    const own = ownPacketsSchema();
    db.pragma('query_only = OFF');
    // the TEMP table's pages mostly go by once: a 4 MB cache rather than SQLite's 16 MB keeps a million-frame
    // bundle's analysis under 200 MB peak (the same time: measured)
    db.pragma('temp.cache_size = -4000');
    const built: { pass: PassRowsCollector | null } = { pass: null };
    try {
      db.transaction(() => {
        // in the transaction: a build that fails leaves no empty table shadowing the bundle's own
        db.exec(own.table.replace(/^CREATE TABLE\s+"?packets"?/i, 'CREATE TEMP TABLE packets'));
        // rows of a legacy writer (frames in packets.data) stay readable too
        db.exec(`INSERT INTO temp.packets(${own.columns}) SELECT ${own.columns} FROM main.packets`);
        // the packet pass's rows as they are inserted (when they are all the table holds): analyze need
        // not read back what it just wrote
        const legacy = db.prepare('SELECT 1 FROM temp.packets LIMIT 1').get() !== undefined;
        const c = built.pass = legacy ? null : new PassRowsCollector();
        this.indexBuilt = insertChunkIndex(db, 'temp.packets', c ? (id, r) => c.add(id, r) : undefined);
        db.exec('CREATE INDEX temp.packets_ts ON packets(ts_ns)');
        db.exec('CREATE INDEX temp.packets_ports ON packets(sport, dport)');
        for (const v of own.views) db.exec(v.replace(/^CREATE VIEW\s/i, 'CREATE TEMP VIEW '));
      })();
      this.passRows = built.pass?.done() ?? null;
    } finally {
      db.pragma('query_only = ON');
    }
    return this.indexBuilt;
  }
  private indexBuilt: number | null = null;
  private passRows: PassRows | null = null;
  /** the packet pass's rows of the index built on open (ensurePacketIndex), once: null when there are none */
  takePassRows(): PassRows | null { const r = this.passRows; this.passRows = null; return r; }

  /** Does the bundle keep its frames in packet_chunks (schema 3), so that `packets` is only their index? */
  hasChunks(): boolean {
    if (this.chunked === null) this.chunked = this.has('packet_chunks') && this.db.prepare('SELECT 1 FROM packet_chunks LIMIT 1').get() !== undefined;
    return this.chunked;
  }
  private chunked: boolean | null = null;

  /** Frames stored in packet_chunks (and their count): every packet captured, where `packets` holds only the index. */
  frameCount(): number {
    const n = this.hasChunks() ? (this.db.prepare('SELECT coalesce(sum(packets), 0) AS n FROM packet_chunks').get() as { n: number }).n : 0;
    const legacy = this.has('packets') ? (this.db.prepare(`SELECT count(*) AS n FROM packets${this.hasChunks() ? ' WHERE chunk_id IS NULL' : ''}`).get() as { n: number }).n : 0;
    return n + legacy;
  }

  /**
   * Packets in capture order. `withData: false` (or `where`) reads the `packets` table: in a chunked
   * bundle that is the index (SYN/FIN/RST, first payload per direction, ICMP errors). With data, every
   * frame is read: from packet_chunks, decoded on the way (chunks in time order per interface), then any
   * row that holds its own bytes (bundles before schema 3).
   */
  *packets(opts: TimeRange & { withData?: boolean; where?: string } = {}): IterableIterator<StoredPacketRow> {
    if (opts.withData !== false && !opts.where && this.hasChunks()) {
      yield* this.chunkPackets(opts);
      if (!this.has('packets')) return;
      const w = this.where('ts_ns', opts, ['chunk_id IS NULL']);
      yield* this.db.prepare(`SELECT ${PACKET_COLS}, data FROM packets${w.sql} ORDER BY ts_ns, id`).iterate(...w.params) as IterableIterator<StoredPacketRow>;
      return;
    }
    if (!this.has('packets')) return;
    this.ensurePacketIndex();
    const w = this.where('ts_ns', opts, opts.where ? [opts.where] : []);
    yield* this.db.prepare(`SELECT ${PACKET_COLS}${opts.withData === false ? ', NULL AS data' : ', data'} FROM packets${w.sql} ORDER BY ts_ns, id`).iterate(...w.params) as IterableIterator<StoredPacketRow>;
  }

  private *chunkPackets(opts: TimeRange): IterableIterator<StoredPacketRow> {
    const conds: string[] = [];
    const params: number[] = [];
    if (opts.since !== undefined) { conds.push('last_ts_ns >= ?'); params.push(opts.since); }
    if (opts.until !== undefined) { conds.push('first_ts_ns <= ?'); params.push(opts.until); }
    let id = 0;
    const st = this.db.prepare(`SELECT id, iface, linktype, data FROM packet_chunks${conds.length ? ` WHERE ${conds.join(' AND ')}` : ''} ORDER BY first_ts_ns, id`);
    for (const c of st.iterate(...params) as IterableIterator<{ id: number; iface: string | null; linktype: number; data: Uint8Array | null }>) {
      if (!(c.data instanceof Uint8Array)) continue;
      for (const f of chunkFrames(c.data)) {
        id++;
        if ((opts.since !== undefined && f.ts_ns < opts.since) || (opts.until !== undefined && f.ts_ns > opts.until)) continue;
        yield { id, ts_ns: f.ts_ns, iface: c.iface, ...decodeFrame(c.linktype, f.data, f.caplen, f.len), data: f.data };
      }
    }
  }

  *conntrack(opts: TimeRange = {}): IterableIterator<ConntrackRow & { id: number }> {
    if (!this.has('conntrack')) return;
    const w = this.where('ts_ns', opts);
    yield* this.db.prepare(`SELECT * FROM conntrack${w.sql} ORDER BY ts_ns, id`).iterate(...w.params) as IterableIterator<ConntrackRow & { id: number }>;
  }

  *k8sObjects(opts: TimeRange & { kinds?: string[] } = {}): IterableIterator<K8sObjectRow & { id: number }> {
    if (!this.has('k8s_objects')) return;
    const extra: string[] = [];
    const params: string[] = [];
    if (opts.kinds?.length) { extra.push(`kind IN (${opts.kinds.map(() => '?').join(',')})`); params.push(...opts.kinds); }
    const w = this.where('ts_ns', opts, extra);
    // identifiers are ≤ 253 characters in Kubernetes: longer ones (damage) are cut, not copied into every map
    yield* this.db.prepare(`SELECT id, ts_ns, ${['kind', 'namespace', 'name', 'uid', 'resource_version', 'event_type'].map((c) => capped(c)).join(', ')}, ${bounded('object', MAX_JSON_CELL)} FROM k8s_objects${w.sql} ORDER BY ts_ns, id`).iterate(...params, ...w.params) as IterableIterator<K8sObjectRow & { id: number }>;
  }

  *nftSnapshots(opts: TimeRange = {}): IterableIterator<NftSnapshotRow & { id: number }> {
    if (!this.has('nft_snapshots')) return;
    const w = this.where('ts_ns', opts);
    yield* this.db.prepare(`SELECT id, ts_ns, format, reason, ${bounded('ruleset', MAX_RULESET_CELL)} FROM nft_snapshots${w.sql} ORDER BY ts_ns, id`).iterate(...w.params) as IterableIterator<NftSnapshotRow & { id: number }>;
  }

  *probeRequests(opts: TimeRange = {}): IterableIterator<ProbeRequestRow & { id: number }> {
    if (!this.has('probe_requests')) return;
    const w = this.where('start_ns', opts);
    yield* this.db.prepare(`SELECT * FROM probe_requests${w.sql} ORDER BY start_ns, id`).iterate(...w.params) as IterableIterator<ProbeRequestRow & { id: number }>;
  }
}
