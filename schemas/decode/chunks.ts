/**
 * The cheap packet path (schema 3): frames go to chunked pcap BLOBs with little per-frame work, and only
 * the frames the analysis reads are decoded into `packets` rows (the index): TCP segments with SYN or
 * RST, the first payload segment of each direction of a connection (tells a reset before the response
 * from one after it), FINs of a direction that sent no payload yet, ICMP/ICMPv6 errors. Deciding that is a header scan on the raw bytes (no
 * strings, no objects) for the common frames; only the rare ones are decoded fully.
 *
 * Shared by the recorder (live capture, import) and the analyzer (redact, merge rewrite chunks), so it
 * lives in schemas/ and does no I/O: chunks and index rows are handed to callbacks.
 */
import { InputError } from '../errors.js';
import type { PacketRow } from '../rows.js';
import { decodeFrame, LINKTYPE } from './packet.js';

/** a chunk is closed at this size (and by flush(): at least every second while recording) */
export const CHUNK_BYTES = 1 << 20;

export interface PacketChunkRow {
  id: number; iface: string | null; linktype: number; first_ts_ns: number; last_ts_ns: number; packets: number; data: Buffer;
  /**
   * the sink calls it once it holds `data` no longer (written): its memory is then reused for a later
   * chunk. A sink that never calls it costs a fresh buffer per chunk.
   */
  release?: () => void;
}
/** an index row: the decoded columns, no bytes, and where the frame is */
export type IndexRow = PacketRow & { chunk_id: number; chunk_off: number };

export interface ChunkSink {
  chunk(c: PacketChunkRow): void;
  index(r: IndexRow): void;
  /** a fresh packet_chunks.id */
  nextChunkId(): number;
  /** chunks only, no index rows (the live capture: the bundle's readers build the index, see indexChunks) */
  readonly deferIndex?: boolean;
}

const PCAP_NS = 0xa1b23c4d;
const PCAP_US = 0xa1b2c3d4;

/** scan verdicts */
const SKIP = 0, INDEX = 1, DATA = 2, DECODE = 3, FIN = 4;

function u16(d: Uint8Array, o: number): number { return (d[o]! << 8) | d[o + 1]!; }

/**
 * Offset of the IP header in a frame, -1 when the frame carries no IP (ARP, LLDP, ...), -2 when the
 * link type is not one the scan knows (the frame is decoded fully instead). The frame is d[at, end).
 */
function ipOffset(linktype: number, d: Uint8Array, at: number, end: number): number {
  switch (linktype) {
    case LINKTYPE.ETHERNET: {
      if (end - at < 14) return -1;
      let et = u16(d, at + 12), o = at + 14;
      for (let i = 0; i < 2 && (et === 0x8100 || et === 0x88a8 || et === 0x9100); i++) {
        if (o + 4 > end) return -1;
        et = u16(d, o + 2); o += 4;
      }
      return et === 0x0800 || et === 0x86dd ? o : -1;
    }
    case LINKTYPE.LINUX_SLL: { if (end - at < 16) return -1; const et = u16(d, at + 14); return et === 0x0800 || et === 0x86dd ? at + 16 : -1; }
    case LINKTYPE.LINUX_SLL2: { if (end - at < 20) return -1; const et = u16(d, at); return et === 0x0800 || et === 0x86dd ? at + 20 : -1; }
    case LINKTYPE.RAW: case LINKTYPE.RAW_OLD: case 14: case LINKTYPE.IPV4: case LINKTYPE.IPV6: return at;
    default: return -2;
  }
}

/**
 * What the analysis needs of one frame, from its headers: SKIP (only kept in the chunk), INDEX, DATA
 * (a TCP segment with payload: indexed when it is its direction's first) or DECODE (unusual headers:
 * decode fully and decide on the row). `key` receives the connection direction's bytes for DATA/INDEX.
 */
function scan(linktype: number, d: Uint8Array, at: number, end: number, k: { a: number; b: number; l4: number; v6: boolean; syn: boolean }): number {
  const o = ipOffset(linktype, d, at, end);
  if (o === -2) return DECODE;
  if (o < 0 || o >= end) return SKIP;
  const v = d[o]! >> 4;
  if (v === 4) {
    if (o + 20 > end) return SKIP;
    const ihl = (d[o]! & 0x0f) * 4;
    if (ihl < 20 || (u16(d, o + 6) & 0x1fff) !== 0) return SKIP; // options-less garbage or a non-first fragment
    const proto = d[o + 9]!;
    const l4 = o + ihl;
    if (proto === 6) {
      if (l4 + 14 > end) return DECODE;
      const flags = d[l4 + 13]!;
      k.a = o + 12; k.b = o + 20; k.l4 = l4; k.v6 = false; k.syn = (flags & 2) !== 0;
      if (flags & 6) return INDEX;
      const payload = u16(d, o + 2) - ihl - (d[l4 + 12]! >> 4) * 4;
      return payload > 0 ? DATA : flags & 1 ? FIN : SKIP;
    }
    if (proto === 1) {
      if (l4 >= end) return SKIP;
      const t = d[l4]!;
      return t === 3 || t === 4 || t === 5 || t === 11 || t === 12 ? INDEX : SKIP;
    }
    return SKIP;
  }
  if (v === 6) {
    if (o + 40 > end) return SKIP;
    const nh = d[o + 6]!;
    const l4 = o + 40;
    if (nh === 6) {
      if (l4 + 14 > end) return DECODE;
      const flags = d[l4 + 13]!;
      k.a = o + 8; k.b = o + 40; k.l4 = l4; k.v6 = true; k.syn = (flags & 2) !== 0;
      if (flags & 6) return INDEX;
      const payload = u16(d, o + 4) - (d[l4 + 12]! >> 4) * 4;
      return payload > 0 ? DATA : flags & 1 ? FIN : SKIP;
    }
    if (nh === 58) return l4 < end && d[l4]! < 128 ? INDEX : SKIP;
    if (nh === 17) return SKIP;
    return DECODE; // extension headers: rare, let the full decoder walk them
  }
  return SKIP;
}

/** Decides, per frame, whether it goes to the index; remembers which connection directions already sent payload. */
export class FrameIndexer {
  private dataSeen = new Set<string>();
  private k = { a: 0, b: 0, l4: 0, v6: false, syn: false };
  /** the bound on remembered directions: past it the set restarts (costs a few extra index rows, never a missing one) */
  static MAX_FLOWS = 500_000;

  /** the connection direction as a short string: addresses and ports as 16-bit code units, no allocation but the string */
  private key(d: Uint8Array, rev: boolean): string {
    const k = this.k;
    const half = (k.b - k.a) / 2;
    const s = k.a, t = k.a + half, p = k.l4;
    const sp = (d[p]! << 8) | d[p + 1]!, dp = (d[p + 2]! << 8) | d[p + 3]!;
    if (!k.v6) {
      const a1 = (d[s]! << 8) | d[s + 1]!, a2 = (d[s + 2]! << 8) | d[s + 3]!, b1 = (d[t]! << 8) | d[t + 1]!, b2 = (d[t + 2]! << 8) | d[t + 3]!;
      return rev ? String.fromCharCode(b1, b2, dp, a1, a2, sp) : String.fromCharCode(a1, a2, sp, b1, b2, dp);
    }
    const u: number[] = [];
    const addr = (o: number) => { for (let i = 0; i < 16; i += 2) u.push((d[o + i]! << 8) | d[o + i + 1]!); };
    if (rev) { addr(t); u.push(dp); addr(s); u.push(sp); } else { addr(s); u.push(sp); addr(t); u.push(dp); }
    return String.fromCharCode(...u);
  }

  /** The decoded row when the frame belongs in the index, else null. */
  wants(linktype: number, d: Uint8Array, caplen: number, len: number): ReturnType<typeof decodeFrame> | null {
    return this.wantsAt(linktype, d, 0, Math.min(caplen, d.length), len);
  }

  /** wants() of the frame at [at, end) of a larger buffer (a chunk's data): no view unless it is indexed */
  wantsAt(linktype: number, buf: Uint8Array, at: number, end: number, len: number): ReturnType<typeof decodeFrame> | null {
    const v = scan(linktype, buf, at, end, this.k);
    if (v === SKIP) return null;
    // key() reads the frame's own view: offsets relative to it
    if (at !== 0) { this.k.a -= at; this.k.b -= at; this.k.l4 -= at; }
    const d = at === 0 && end === buf.length ? buf : buf.subarray(at, end);
    const caplen = end - at;
    return this.decided(v, linktype, d, caplen, len);
  }

  private decided(v: number, linktype: number, d: Uint8Array, caplen: number, len: number): ReturnType<typeof decodeFrame> | null {
    if (v === SKIP) return null;
    // a FIN after its direction's payload tells the analysis nothing (the connection answered); one
    // before any payload may be a failure (FIN before the response) and is indexed
    if (v === FIN) return this.dataSeen.has(this.key(d, false)) ? null : decodeFrame(linktype, d, caplen, len);
    if (v === DATA) {
      const key = this.key(d, false);
      if (this.dataSeen.has(key)) return null;
      if (this.dataSeen.size >= FrameIndexer.MAX_FLOWS) this.dataSeen.clear();
      this.dataSeen.add(key);
      return decodeFrame(linktype, d, caplen, len);
    }
    if (v === INDEX) {
      // a new connection on a reused 4-tuple: its first payload segments must be indexed again
      if (this.k.syn) { this.dataSeen.delete(this.key(d, false)); this.dataSeen.delete(this.key(d, true)); }
      return decodeFrame(linktype, d, caplen, len);
    }
    const row = decodeFrame(linktype, d, caplen, len);
    const f = row.tcp_flags;
    // unusual headers (IPv6 extension headers, unknown link types): indexed whole when TCP, never missing
    if (row.proto === 'tcp' && f !== null && ((f & 7) !== 0 || (row.payload_len ?? 0) > 0)) return row;
    if (row.icmp_type !== null && (row.inner_src !== null || (row.proto === 'icmp6' && row.icmp_type < 128))) return row;
    return null;
  }
}

/** the decoder's fresh row completed in place (no copy per indexed frame) */
function asIndexRow(row: ReturnType<typeof decodeFrame>, ts_ns: number, iface: string | null, chunk: number, off: number, caplen: number): IndexRow {
  const r = row as IndexRow;
  r.ts_ns = ts_ns; r.iface = iface; r.data = null; r.chunk_id = chunk; r.chunk_off = off; r.caplen = caplen;
  return r;
}

/**
 * A chunk's `release`: once the sink wrote it, its buffer joins `spare` (at most 8 kept) for a later chunk,
 * if it is a whole `size`-byte buffer (not one grown past it); a second call does nothing.
 */
export function recycler(spare: Buffer[], buf: Buffer, size: number): () => void {
  let released = false;
  return () => {
    if (!released && buf.length === size && spare.length < 8) spare.push(buf);
    released = true;
  };
}

/** One open chunk: a pcap file being filled. */
class Chunk {
  id: number;
  buf: Buffer;
  used = 24;
  packets = 0;
  first = 0;
  last = 0;
  constructor(id: number, header: Uint8Array, size: number, spare?: Buffer) {
    this.id = id;
    this.buf = spare && spare.length >= Math.max(size, 24) ? spare : Buffer.allocUnsafe(Math.max(size, 24));
    this.buf.set(header.subarray(0, 24), 0);
  }
  /** a record of `n` bytes (header included) was written at `used` */
  took(ts: number, n: number): void {
    this.used += n;
    if (this.packets === 0) this.first = ts;
    this.last = ts;
    this.packets++;
  }
  ensure(n: number): void {
    if (this.used + n <= this.buf.length) return;
    const b = Buffer.allocUnsafe(Math.max(this.buf.length * 2, this.used + n));
    this.buf.copy(b, 0, 0, this.used);
    this.buf = b;
  }
}

function nsHeader(linktype: number, snaplen = 262144): Buffer {
  const h = Buffer.alloc(24);
  h.writeUInt32LE(PCAP_NS, 0); h.writeUInt16LE(2, 4); h.writeUInt16LE(4, 6);
  h.writeUInt32LE(snaplen, 16); h.writeUInt32LE(linktype >>> 0, 20);
  return h;
}

/**
 * Frames of any origin (already parsed: pcapng import, the cap backend, redact, merge) into chunks of
 * nanosecond little-endian pcap, one open chunk per (interface, link type).
 */
export class FrameStore {
  private open = new Map<string, Chunk>();
  private indexer = new FrameIndexer();
  frames = 0;
  indexed = 0;
  bytes = 0;
  constructor(private sink: ChunkSink, private chunkBytes = CHUNK_BYTES) {}

  frame(iface: string | null, linktype: number, ts_ns: number, caplen: number, len: number, data: Uint8Array): void {
    const key = `${iface ?? ''}\u0000${linktype}`;
    let c = this.open.get(key);
    const n = Math.min(caplen, data.length);
    if (c && c.used + 16 + n > this.chunkBytes && c.packets > 0) { this.close(key, c, iface, linktype); c = undefined; }
    if (!c) { c = new Chunk(this.sink.nextChunkId(), nsHeader(linktype), Math.min(this.chunkBytes, 64 * 1024)); this.open.set(key, c); }
    c.ensure(16 + n);
    const off = c.used;
    const sec = Math.floor(ts_ns / 1e9);
    c.buf.writeUInt32LE(sec >>> 0, off);
    c.buf.writeUInt32LE(Math.round(ts_ns - sec * 1e9) >>> 0, off + 4);
    c.buf.writeUInt32LE(n, off + 8);
    c.buf.writeUInt32LE(Math.max(len, n) >>> 0, off + 12);
    c.buf.set(n === data.length ? data : data.subarray(0, n), off + 16);
    c.took(ts_ns, 16 + n);
    this.frames++;
    this.bytes += 16 + n;
    if (this.sink.deferIndex) return;
    const row = this.indexer.wants(linktype, data, n, len);
    if (row) { this.indexed++; this.sink.index(asIndexRow(row, ts_ns, iface, c.id, off, n)); }
  }

  private close(key: string, c: Chunk, iface: string | null, linktype: number): void {
    this.open.delete(key);
    this.sink.chunk({ id: c.id, iface, linktype, first_ts_ns: c.first, last_ts_ns: c.last, packets: c.packets, data: c.buf.subarray(0, c.used) });
  }

  /** Close every open chunk (call at least every second while recording, and at the end). */
  flush(): void {
    for (const [key, c] of [...this.open]) {
      if (c.packets === 0) continue;
      const [iface, lt] = key.split('\u0000');
      this.close(key, c, iface === '' ? null : iface!, Number(lt));
    }
  }
}

/**
 * Index every frame of one chunk's pcap data (ts from the chunk's own header: µs or ns, either byte
 * order), in order: the header scan, and a decoded row for the frames the analysis reads. Returns how
 * many were indexed.
 */
export function indexChunk(indexer: FrameIndexer, sink: Pick<ChunkSink, 'index'>, c: PacketChunkRow): number {
  let n = 0;
  const b = c.data;
  if (b.length < 24) return 0;
  const m = b.readUInt32LE(0);
  const le = m === PCAP_US || m === PCAP_NS;
  const nanos = le ? m === PCAP_NS : b.readUInt32BE(0) === PCAP_NS;
  let off = 24;
  while (b.length - off >= 16) {
    const caplen = le ? b.readUInt32LE(off + 8) : b.readUInt32BE(off + 8);
    const at = off + 16;
    if (b.length - at < caplen) break;
    const end = at + caplen;
    // the scan reads the frame in place: a view only for the (rarer) frames it indexes
    const row = indexer.wantsAt(c.linktype, b, at, end, le ? b.readUInt32LE(off + 12) : b.readUInt32BE(off + 12));
    if (row) {
      const sec = le ? b.readUInt32LE(off) : b.readUInt32BE(off);
      const frac = le ? b.readUInt32LE(off + 4) : b.readUInt32BE(off + 4);
      n++;
      sink.index(asIndexRow(row, sec * 1e9 + (nanos ? frac : frac * 1000), c.iface, c.id, off, caplen));
    }
    off = end;
  }
  return n;
}

/**
 * The index of chunks stored without one (a live capture's): every chunk in id order, one indexer per
 * interface (as the capture had one stream per interface), so the rows are those the capture would
 * have indexed as it went. Returns how many rows were handed to `sink.index`.
 */
export function indexChunks(chunks: Iterable<PacketChunkRow>, sink: Pick<ChunkSink, 'index'>): number {
  const indexers = new Map<string, FrameIndexer>();
  let n = 0;
  for (const c of chunks) {
    const key = c.iface ?? '';
    let ix = indexers.get(key);
    if (!ix) indexers.set(key, ix = new FrameIndexer());
    n += indexChunk(ix, sink, c);
  }
  return n;
}

/**
 * A classic pcap byte stream (tcpdump's spooled files, a .pcap file) cut into chunks without decoding: record
 * headers are read for framing and timestamps only, and each read's run of whole records is copied
 * verbatim with one copy (the chunk keeps the stream's own header: byte order, µs or ns). A chunk is
 * indexed (indexChunk) when it closes, unless its sink defers the index (the live capture: the bundle's
 * readers build it from the chunks, see indexChunks).
 * Errors are the reader's (CaptureStreamParser) so a damaged capture fails the same way on both paths.
 */
export class PcapStreamCutter {
  malformed = 0;
  frames = 0;
  indexed = 0;
  bytes = 0;
  private header: Buffer | null = null;
  private le = true;
  private nanos = false;
  private linktype = 1;
  private rest: Buffer | null = null;
  private chunk: Chunk | null = null;
  private indexer = new FrameIndexer();
  private failed = false;
  /** chunk buffers the sink released, for the next chunks (a fresh 1 MiB buffer per chunk costs its page faults) */
  private spare: Buffer[] = [];

  constructor(private sink: ChunkSink, private iface: string | null, private chunkBytes = CHUNK_BYTES) {}

  /** Does this start of a stream look like classic pcap (else use CaptureStreamParser + FrameStore)? */
  static isClassicPcap(head: Uint8Array): boolean {
    if (head.length < 4) return false;
    const b = Buffer.from(head.buffer, head.byteOffset, 4);
    const le = b.readUInt32LE(0), be = b.readUInt32BE(0);
    return le === PCAP_US || le === PCAP_NS || be === PCAP_US || be === PCAP_NS;
  }

  private ts(b: Buffer, off: number): number {
    const sec = this.le ? b.readUInt32LE(off) : b.readUInt32BE(off);
    const frac = this.le ? b.readUInt32LE(off + 4) : b.readUInt32BE(off + 4);
    return sec * 1e9 + (this.nanos ? frac : frac * 1000);
  }

  push(input: Buffer): void {
    if (this.failed) return;
    let off = 0;
    if (this.rest) {
      const r = this.rest;
      this.rest = null;
      // the record cut at the previous read's end is completed from this read's head, alone: joining the
      // whole read to it would cost a fresh buffer of its size per read
      const need = this.header ? this.cutNeeds(r, input) : -1;
      if (need < 0) {
        // before the stream's header, or the cut record's length still unknown: join (a few bytes)
        const b = Buffer.concat([r, input]);
        const end = this.scan(b, 0);
        if (end < b.length) this.rest = Buffer.from(b.subarray(end));
        return;
      }
      if (need > input.length) { this.rest = Buffer.concat([r, input]); return; }
      const one = Buffer.concat([r, input.subarray(0, need)]);
      this.scan(one, 0);
      off = need;
    }
    const end = this.scan(input, off);
    if (end < input.length) this.rest = Buffer.from(input.subarray(end));
  }

  /** bytes of `input` that complete the record begun in `r`, -1 when its header is not whole yet */
  private cutNeeds(r: Buffer, input: Buffer): number {
    if (r.length + input.length < 16) return -1;
    const at = 8;
    const byte = (i: number) => (i < r.length ? r[i]! : input[i - r.length]!);
    const b0 = byte(at), b1 = byte(at + 1), b2 = byte(at + 2), b3 = byte(at + 3);
    const caplen = this.le ? (b0 | (b1 << 8) | (b2 << 16) | (b3 << 24)) >>> 0 : ((b0 << 24) | (b1 << 16) | (b2 << 8) | b3) >>> 0;
    // an impossible length: the scan of the joined bytes says so
    if (caplen > 262144 * 4) return -1;
    return Math.max(0, 16 + caplen - r.length);
  }

  /** Cut b from off: the header if not yet read, then whole records; returns where an incomplete record begins. */
  private scan(b: Buffer, off: number): number {
    if (!this.header) {
      if (b.length - off < 24) return off;
      const le = b.readUInt32LE(off), be = b.readUInt32BE(off);
      if (le === PCAP_US || le === PCAP_NS) { this.le = true; this.nanos = le === PCAP_NS; }
      else if (be === PCAP_US || be === PCAP_NS) { this.le = false; this.nanos = be === PCAP_NS; }
      else { this.failed = true; throw new InputError('not a pcap or pcapng capture (bad magic number)'); }
      this.header = Buffer.from(b.subarray(off, off + 24));
      this.linktype = (this.le ? b.readUInt32LE(off + 20) : b.readUInt32BE(off + 20)) & 0x03ffffff;
      off += 24;
    }
    const le = this.le;
    // runs of whole records, each copied at once into the open chunk
    let run = off, n = 0, last = -1;
    const copyRun = () => {
      if (n === 0) return;
      let c = this.chunk;
      if (!c) c = this.chunk = new Chunk(this.sink.nextChunkId(), this.header!, this.chunkBytes, this.spare.pop());
      c.ensure(off - run);
      b.copy(c.buf, c.used, run, off);
      if (c.packets === 0) c.first = this.ts(b, run);
      c.last = this.ts(b, last);
      c.used += off - run;
      c.packets += n;
      this.frames += n;
      this.bytes += off - run;
      run = off; n = 0;
    };
    while (b.length - off >= 16) {
      const caplen = le ? b.readUInt32LE(off + 8) : b.readUInt32BE(off + 8);
      if (caplen > 262144 * 4) {
        copyRun();
        this.malformed++;
        this.failed = true;
        throw new InputError(`pcap record with impossible length ${caplen}`);
      }
      if (b.length - off - 16 < caplen) break;
      const c = this.chunk;
      const used = (c ? c.used : 24) + (off - run);
      // the open chunk is full: what is before this record goes to it, this record starts the next
      if (used + 16 + caplen > this.chunkBytes && (n > 0 || (c !== null && c.packets > 0))) { copyRun(); this.close(); }
      last = off;
      n++;
      off += 16 + caplen;
    }
    copyRun();
    return off;
  }

  /** the stream's format, null before its header arrived */
  get format(): 'pcap' | null { return this.header ? 'pcap' : null; }

  /** Close the open chunk (at least every second while recording). */
  flush(): void { this.close(); }

  private close(): void {
    const c = this.chunk;
    if (!c || c.packets === 0) return;
    this.chunk = null;
    const row: PacketChunkRow = { id: c.id, iface: this.iface, linktype: this.linktype, first_ts_ns: c.first, last_ts_ns: c.last, packets: c.packets, data: c.buf.subarray(0, c.used) };
    // only when no index row points into the buffer (the index rows wait for the sink's next write too)
    if (this.sink.deferIndex) row.release = recycler(this.spare, c.buf, this.chunkBytes);
    this.sink.chunk(row);
    if (!this.sink.deferIndex) this.indexed += indexChunk(this.indexer, this.sink, row);
  }

  /** End of stream: close the chunk; leftover bytes are a cut-off record. */
  end(): void {
    this.close();
    if (this.rest && this.rest.length > 0) this.malformed++;
    this.rest = null;
  }
}

/** Every frame of a chunk's pcap data, in order, with its record's offset. Stops at a damaged record. */
export function* chunkFrames(data: Uint8Array): IterableIterator<{ off: number; ts_ns: number; caplen: number; len: number; data: Uint8Array }> {
  if (data.length < 24) return;
  const b = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  const m = b.readUInt32LE(0);
  const le = m === PCAP_US || m === PCAP_NS;
  const mb = b.readUInt32BE(0);
  if (!le && mb !== PCAP_US && mb !== PCAP_NS) return;
  const nanos = le ? m === PCAP_NS : mb === PCAP_NS;
  let off = 24;
  while (b.length - off >= 16) {
    const caplen = le ? b.readUInt32LE(off + 8) : b.readUInt32BE(off + 8);
    if (b.length - off - 16 < caplen) return;
    const sec = le ? b.readUInt32LE(off) : b.readUInt32BE(off);
    const frac = le ? b.readUInt32LE(off + 4) : b.readUInt32BE(off + 4);
    const len = le ? b.readUInt32LE(off + 12) : b.readUInt32BE(off + 12);
    yield { off, ts_ns: sec * 1e9 + (nanos ? frac : frac * 1000), caplen, len, data: b.subarray(off + 16, off + 16 + caplen) };
    off += 16 + caplen;
  }
}
