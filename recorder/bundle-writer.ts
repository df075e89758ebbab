/**
 * The bundle writer: every source hands it rows; it batches them into one transaction at least every
 * `flushMs` (default 100 ms, never more than 250 ms), so a SIGKILL loses at most the last batch.
 * SQLite WAL with synchronous=NORMAL survives a killed process; `close()` checkpoints, switches the
 * file back to a single-file journal, runs an integrity check and sets mode 0600.
 */
import { chmodSync } from 'node:fs';
import type { Statement } from 'better-sqlite3';
import { createBundleDb, type DB } from '../schemas/db.js';
import type { RtEvent } from '../schemas/events.js';
import type { Clock, SourceStatus } from '../schemas/events.js';
import type { ChunkSink, IndexRow, PacketChunkRow } from '../schemas/decode/chunks.js';
import {
  META_KEYS, type ConntrackRow, type K8sObjectRow, type NftSnapshotRow, type PacketRow, type ProbeRequestRow,
} from '../schemas/rows.js';

/** a queued row and the source it counts for */
type Pending = { s: string } & (
  | { t: 'event'; r: RtEvent }
  | { t: 'packet'; r: PacketRow & { chunk_id?: number | null; chunk_off?: number | null } }
  | { t: 'chunk'; r: PacketChunkRow }
  | { t: 'conntrack'; r: ConntrackRow }
  | { t: 'k8s'; r: K8sObjectRow }
  | { t: 'nft'; r: NftSnapshotRow }
  | { t: 'probe'; r: ProbeRequestRow });

export interface SourceState {
  status: SourceStatus | string;
  detail: string | null;
  events: number;
  dropped: number;
  clock: Clock | string;
}

export interface BundleWriterOptions {
  createdBy?: string;
  overwrite?: boolean;
  /** batch interval, ms (max 250) */
  flushMs?: number;
  /** SQLite page size of the new file (default 4096) */
  pageSize?: number;
}

/** What every source writes to: one method per table, all non-blocking. */
export interface Sink {
  event(e: RtEvent): void;
  /** the optional `source` attributes the row to another source row than the default (import:*) */
  packet(p: PacketRow, source?: string): void;
  conntrack(c: ConntrackRow, source?: string): void;
  k8sObject(o: K8sObjectRow, source?: string): void;
  nftSnapshot(s: NftSnapshotRow, source?: string): void;
  probeRequest(p: ProbeRequestRow, source?: string): void;
  /** count records a source lost (unparsable lines, kernel drops it learnt of) */
  dropped(source: string, n: number): void;
  /**
   * The chunked packet path (schema 3): chunks and index rows of `source`, which counts frames, not rows.
   * A sink without it (tests' in-memory sinks) is handed one decoded row per frame. `indexed: false`:
   * the source stores chunks only (the live capture) and the bundle says its index is to be built by
   * its readers (meta packets_index = deferred).
   */
  chunkSink?(source: string, opts?: { indexed?: boolean }): ChunkSink;
}

export class BundleWriter implements Sink {
  readonly path: string;
  private db: DB;
  private queue: Pending[] = [];
  private timer: NodeJS.Timeout | null = null;
  private closed = false;
  private stmts: Record<Pending['t'] | 'meta' | 'source' | 'packetIdx', Statement>;
  private chunkId = 0;
  private queuedChunkBytes = 0;
  private srcState = new Map<string, SourceState>();
  private dirtySources = new Set<string>();
  /** bytes of packet data written, for --max-size */
  packetBytes = 0;
  /** set to record an end instant other than "now" at close (import: the data's last instant) */
  endedNs: number | null = null;
  rows = 0;

  constructor(path: string, opts: BundleWriterOptions = {}) {
    this.path = path;
    this.db = createBundleDb(path, { createdBy: opts.createdBy ?? 'record', overwrite: opts.overwrite, pageSize: opts.pageSize });
    try { chmodSync(path, 0o600); } catch { /* best effort */ }
    const d = this.db;
    this.stmts = {
      meta: d.prepare('INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)'),
      source: d.prepare('INSERT OR REPLACE INTO sources(name, status, detail, events, dropped, clock) VALUES (?, ?, ?, ?, ?, ?)'),
      event: d.prepare('INSERT INTO events(ts_ns, source, kind, subject, attrs) VALUES (?, ?, ?, ?, ?)'),
      // positional: the per-packet path binds 23 values without building an object per row
      packet: d.prepare(`INSERT INTO packets(ts_ns, iface, linktype, caplen, len, l3, src, dst, proto, sport, dport,
        tcp_flags, seq, ack, payload_len, icmp_type, icmp_code, inner_src, inner_dst, inner_proto, inner_sport, inner_dport, data, chunk_id, chunk_off)
        VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`),
      // an index row of a TCP frame (most of them): 17 values, not 25 (each bound value costs)
      packetIdx: d.prepare(`INSERT INTO packets(ts_ns, iface, linktype, caplen, len, l3, src, dst, proto, sport, dport,
        tcp_flags, seq, ack, payload_len, chunk_id, chunk_off) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`),
      chunk: d.prepare('INSERT INTO packet_chunks(id, iface, linktype, first_ts_ns, last_ts_ns, packets, data) VALUES (?, ?, ?, ?, ?, ?, ?)'),
      conntrack: d.prepare(`INSERT INTO conntrack(ts_ns, type, proto, state, orig_src, orig_dst, orig_sport, orig_dport,
        reply_src, reply_dst, reply_sport, reply_dport, flags, zone, raw) VALUES (@ts_ns, @type, @proto, @state, @orig_src,
        @orig_dst, @orig_sport, @orig_dport, @reply_src, @reply_dst, @reply_sport, @reply_dport, @flags, @zone, @raw)`),
      k8s: d.prepare(`INSERT INTO k8s_objects(ts_ns, kind, namespace, name, uid, resource_version, event_type, object)
        VALUES (@ts_ns, @kind, @namespace, @name, @uid, @resource_version, @event_type, @object)`),
      nft: d.prepare('INSERT INTO nft_snapshots(ts_ns, format, reason, ruleset) VALUES (@ts_ns, @format, @reason, @ruleset)'),
      probe: d.prepare(`INSERT INTO probe_requests(start_ns, end_ns, local_addr, local_port, remote, outcome, status, error)
        VALUES (@start_ns, @end_ns, @local_addr, @local_port, @remote, @outcome, @status, @error)`),
    };
    // the ports index of `packets` is built once at close (a fifth of the write cost while capturing);
    // a bundle whose recorder was killed lacks it and is still read, by table scans
    d.exec('DROP INDEX IF EXISTS packets_ports');
    this.chunkId = (d.prepare('SELECT coalesce(max(id), 0) AS n FROM packet_chunks').get() as { n: number }).n;
    const flushMs = Math.min(Math.max(opts.flushMs ?? 100, 10), 250);
    this.timer = setInterval(() => this.flush(), flushMs);
    this.timer.unref();
  }

  setMeta(key: string, value: string | number | object): void {
    const v = typeof value === 'string' ? value : typeof value === 'number' ? String(value) : JSON.stringify(value);
    this.stmts.meta.run(key, v);
  }

  /** Declare or update a source's status row (written immediately). */
  setSource(name: string, s: Partial<SourceState> & { status: SourceState['status'] }): void {
    const prev = this.srcState.get(name) ?? { status: 'running', detail: null, events: 0, dropped: 0, clock: 'receipt' };
    const next = { ...prev, ...s };
    this.srcState.set(name, next);
    this.stmts.source.run(name, next.status, next.detail, next.events, next.dropped, next.clock);
  }

  source(name: string): SourceState | undefined { return this.srcState.get(name); }
  sourceNames(): string[] { return [...this.srcState.keys()]; }

  private count(source: string, n = 1): void {
    const s = this.srcState.get(source);
    if (!s) this.srcState.set(source, { status: 'running', detail: null, events: n, dropped: 0, clock: 'receipt' });
    else s.events += n;
    this.dirtySources.add(source);
  }

  private push(p: Pending): void {
    if (this.closed) return;
    this.queue.push(p);
    this.count(p.s);
    if (this.queue.length >= 20000) this.flush();
  }

  event(e: RtEvent): void { this.push({ t: 'event', r: e, s: e.source }); }
  packet(p: PacketRow, source = 'packets'): void { this.packetBytes += p.data?.length ?? 0; this.push({ t: 'packet', r: p, s: source }); }
  conntrack(c: ConntrackRow, source = 'conntrack'): void { this.push({ t: 'conntrack', r: c, s: source }); }
  k8sObject(o: K8sObjectRow, source = 'kube'): void { this.push({ t: 'k8s', r: o, s: source }); }
  nftSnapshot(s: NftSnapshotRow, source = 'nftables'): void { this.push({ t: 'nft', r: s, s: source }); }
  probeRequest(p: ProbeRequestRow, source = 'probe'): void { this.push({ t: 'probe', r: p, s: source }); }
  chunkSink(source: string, opts: { indexed?: boolean } = {}): ChunkSink {
    const deferIndex = opts.indexed === false;
    if (deferIndex) this.setMeta(META_KEYS.packetsIndex, 'deferred');
    return {
      deferIndex,
      nextChunkId: () => ++this.chunkId,
      chunk: (c) => {
        if (this.closed) { c.release?.(); return; }
        this.packetBytes += c.data.length;
        this.queue.push({ t: 'chunk', r: c, s: source });
        this.count(source, c.packets);
        // frames wait in memory at most a few chunks (bounded RSS however fast a pcap is read)
        this.queuedChunkBytes += c.data.length;
        if (this.queue.length >= 20000 || this.queuedChunkBytes >= 4 << 20) this.flush();
      },
      index: (r: IndexRow) => {
        if (this.closed) return;
        this.queue.push({ t: 'packet', r, s: source });
        if (this.queue.length >= 20000) this.flush();
      },
    };
  }
  /** For writers that attribute rows to a source other than the default (import:*). */
  countAs(source: string, n: number): void { this.count(source, n); }
  dropped(source: string, n: number): void {
    const s = this.srcState.get(source) ?? { status: 'running', detail: null, events: 0, dropped: 0, clock: 'receipt' };
    s.dropped += n;
    this.srcState.set(source, s);
    this.dirtySources.add(source);
  }

  /** rows no table would take (NaN instant, attrs JSON cannot encode), counted as dropped for their source */
  rejectedRows = 0;
  lastRejection: string | null = null;

  private writeRow(p: Pending): void {
    const st = this.stmts;
    switch (p.t) {
      case 'event':
        st.event.run(Math.round(p.r.ts_ns), p.r.source, p.r.kind, p.r.subject, JSON.stringify(p.r.attrs));
        break;
      case 'packet': {
        const r = p.r;
        if (r.data === null && r.icmp_type === null && r.icmp_code === null && r.inner_src === null && r.inner_dst === null && r.inner_proto === null && r.inner_sport === null && r.inner_dport === null) {
          st.packetIdx.run(Math.round(r.ts_ns), r.iface, r.linktype, r.caplen, r.len, r.l3, r.src, r.dst, r.proto, r.sport, r.dport,
            r.tcp_flags, r.seq, r.ack, r.payload_len, r.chunk_id ?? null, r.chunk_off ?? null);
          break;
        }
        // a Buffer view over the frame's bytes, not a copy
        const data = r.data ? Buffer.from(r.data.buffer, r.data.byteOffset, r.data.byteLength) : null;
        st.packet.run(Math.round(r.ts_ns), r.iface, r.linktype, r.caplen, r.len, r.l3, r.src, r.dst, r.proto, r.sport, r.dport,
          r.tcp_flags, r.seq, r.ack, r.payload_len, r.icmp_type, r.icmp_code, r.inner_src, r.inner_dst, r.inner_proto,
          r.inner_sport, r.inner_dport, data, r.chunk_id ?? null, r.chunk_off ?? null);
        break;
      }
      case 'chunk': {
        const c = p.r;
        st.chunk.run(c.id, c.iface, c.linktype, Math.round(c.first_ts_ns), Math.round(c.last_ts_ns), c.packets, c.data);
        break;
      }
      case 'conntrack': st.conntrack.run({ ...p.r, ts_ns: Math.round(p.r.ts_ns) }); break;
      case 'k8s': st.k8s.run({ ...p.r, ts_ns: Math.round(p.r.ts_ns) }); break;
      case 'nft': st.nft.run({ ...p.r, ts_ns: Math.round(p.r.ts_ns) }); break;
      case 'probe': st.probe.run({ ...p.r, start_ns: Math.round(p.r.start_ns), end_ns: p.r.end_ns === null ? null : Math.round(p.r.end_ns) }); break;
    }
  }

  private writeSources(): void {
    for (const name of this.dirtySources) {
      const s = this.srcState.get(name)!;
      this.stmts.source.run(name, s.status, s.detail, s.events, s.dropped, s.clock);
    }
  }

  /**
   * Write everything queued in one transaction. If a row cannot be written, the batch is written again
   * row by row so that one bad row costs only itself: it is counted as dropped for its source.
   */
  flush(): void {
    if (this.queue.length === 0 && this.dirtySources.size === 0) return;
    if (!this.db.open) return;
    const batch = this.queue;
    this.queue = [];
    this.queuedChunkBytes = 0;
    try {
      this.db.transaction(() => {
        for (const p of batch) this.writeRow(p);
        this.writeSources();
      })();
    } catch {
      this.db.transaction(() => {
        for (const p of batch) {
          try {
            this.writeRow(p);
          } catch (e) {
            this.rejectedRows++;
            this.lastRejection = `${p.t} row from ${p.s}: ${(e as Error).message}`;
            const s = this.srcState.get(p.s);
            if (s) { s.events--; s.dropped++; }
            this.dirtySources.add(p.s);
          }
        }
        this.writeSources();
      })();
    }
    this.rows += batch.length;
    this.dirtySources.clear();
    // SQLite copied the chunks' bytes: their buffers go back to the capture for its next chunks
    for (const p of batch) if (p.t === 'chunk') p.r.release?.();
  }

  /** [min, max] ts_ns of everything written so far (flushes first), or null when empty. */
  timeRange(): { start: number; end: number } | null {
    this.flush();
    const r = this.db.prepare(`SELECT min(a) AS a, max(b) AS b FROM (
      SELECT min(ts_ns) AS a, max(ts_ns) AS b FROM events UNION ALL SELECT min(ts_ns), max(ts_ns) FROM packets
      UNION ALL SELECT min(first_ts_ns), max(last_ts_ns) FROM packet_chunks
      UNION ALL SELECT min(ts_ns), max(ts_ns) FROM conntrack UNION ALL SELECT min(ts_ns), max(ts_ns) FROM k8s_objects
      UNION ALL SELECT min(ts_ns), max(ts_ns) FROM nft_snapshots UNION ALL SELECT min(start_ns), max(end_ns) FROM probe_requests)`).get() as { a: number | null; b: number | null };
    return r.a === null || r.b === null ? null : { start: r.a, end: r.b };
  }

  /** Flush, mark closed cleanly, checkpoint, integrity check, single-file journal, mode 0600. */
  close(): { integrity: string } {
    if (this.closed) return { integrity: 'ok' };
    if (this.timer) clearInterval(this.timer);
    this.flush();
    this.closed = true;
    if (!this.endedNs) this.setMeta(META_KEYS.endedNs, String(Date.now() * 1e6));
    else this.setMeta(META_KEYS.endedNs, String(this.endedNs));
    this.setMeta(META_KEYS.closedCleanly, '1');
    this.db.exec('CREATE INDEX IF NOT EXISTS packets_ports ON packets(sport, dport)');
    this.db.pragma('wal_checkpoint(TRUNCATE)');
    const integrity = this.integrity();
    this.db.pragma('journal_mode = DELETE');
    this.db.close();
    try { chmodSync(this.path, 0o600); } catch { /* best effort */ }
    return { integrity };
  }

  /**
   * SQLite's integrity check of every table but packet_chunks, whose pages are nearly all the bundle's
   * bytes (overflow pages of the frames' BLOBs, written once and never updated): checking them would
   * read back the whole capture at close, ~1 s per GB. `rolltrace verify` checks the whole file.
   */
  private integrity(): string {
    const tables = (this.db.prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT IN ('packet_chunks', 'sqlite_sequence')").raw(true).all() as string[][]).map((r) => r[0]!);
    const bad: string[] = [];
    for (const t of tables) {
      const r = String(this.db.pragma(`integrity_check("${t.replace(/"/g, '""')}")`, { simple: true }));
      if (r !== 'ok') bad.push(r);
    }
    return bad.length ? bad.join('; ') : 'ok';
  }

  /** For tests and the crash path: stop the timer without finalizing. */
  abandon(): void {
    if (this.timer) clearInterval(this.timer);
    this.closed = true;
    try { this.db.close(); } catch { /* ignore */ }
  }
}
