/**
 * The packet pass's rows read from the bundle file's own pages, for a bundle whose index is in the file.
 *
 * better-sqlite3 hands a row to JavaScript at ~0.4 µs before any column, ~1.2 µs with the 8 columns the
 * pass reads: over a million-frame capture's 333k index rows that is ~0.4 s, most of `analyze`. The same
 * rows decoded here from the table's B-tree pages (the SQLite file format, https://sqlite.org/fileformat2.html:
 * table leaf cells of varint-framed records) take ~0.13 s. SQLite stays the authority on what the file holds:
 * this reader runs only on a file no writer has touched since the reader opened it (no write-ahead log
 * with frames in it, no rollback journal, the file change counter and size the same after the read as
 * before it), for the `packets` table of the file itself (not a TEMP index built for a recorded bundle),
 * UTF-8, with `id` the rowid. Anything else it does not understand (a page type, a cell spilling onto
 * overflow pages, a timestamp that is not an integer) makes it give up before a single row is handed
 * over, and the pass runs in SQL as before. A row it can decode but whose values are not the plain TCP
 * case (ICMP, non-ASCII text, a flag or port that is not an int32, a blob) is marked to be read by id
 * in SQL, in its place in the order.
 *
 * The order is the SQL pass's: ORDER BY ts_ns, id, compared on the exact 64-bit timestamps.
 */
import { closeSync, existsSync, fstatSync, openSync, readSync, statSync } from 'node:fs';
import type { DB } from '../../schemas/db.js';

/** null in an int32 column of PassRows */
export const NULL_I32 = -2147483648;
/** what the pass does with a row: decoded here, read by id in SQL, or not one the pass reads */
export const RowKind = { Tcp: 0, ById: 1, Skip: 2 } as const;

/** rows per block of PassRows: blocks are filled one after the other, never copied to grow */
export const BLOCK_BITS = 14;
const BLOCK = 1 << BLOCK_BITS;
export const BLOCK_MASK = BLOCK - 1;

/** BLOCK rows, columnar */
export interface RowBlock {
  rowid: Float64Array;
  tsHi: Int32Array;
  tsLo: Uint32Array;
  kind: Uint8Array;
  /** index into PassRows.strings, -1 for NULL */
  iface: Int32Array; src: Int32Array; dst: Int32Array;
  /** NULL_I32 for NULL */
  sport: Int32Array; dport: Int32Array; flags: Int32Array; plen: Int32Array;
}

/**
 * The pass's rows in table order (row i is row i & BLOCK_MASK of block i >>> BLOCK_BITS); `order` lists
 * them in the pass's order, null when that is table order.
 */
export interface PassRows {
  n: number;
  order: Uint32Array | null;
  blocks: RowBlock[];
  strings: string[];
}

/** ts_ns as better-sqlite3 hands an INTEGER over: the int64 rounded once to a double */
export function tsOf(b: RowBlock, k: number): number {
  return b.tsHi[k]! * 4294967296 + b.tsLo[k]!;
}

class GiveUp extends Error {}

const COLS = ['ts_ns', 'iface', 'src', 'dst', 'sport', 'dport', 'tcp_flags', 'payload_len', 'proto'] as const;
// roles of the columns (0: not read)
const TS = 1, IFACE = 2, SRC = 3, DST = 4, SPORT = 5, DPORT = 6, FLAGS = 7, PLEN = 8, PROTO = 9;

/**
 * Can the pass read this connection's `packets` from the file at `path`? The conditions the header and the
 * schema can tell before reading any page; the rest is checked as the pages are read.
 */
function eligible(db: DB, path: string): { root: number; roles: Uint8Array } | null {
  if (!path || path === ':memory:' || !existsSync(path)) return null;
  // a TEMP table shadowing packets (a recorded bundle's index built on open) is not in the file
  if (db.prepare("SELECT 1 FROM temp.sqlite_schema WHERE name = 'packets'").get() !== undefined) return null;
  for (const s of ['-wal', '-journal']) {
    try { if (statSync(path + s).size > 0) return null; } catch { /* absent */ }
  }
  const t = db.prepare("SELECT rootpage, sql FROM main.sqlite_schema WHERE type = 'table' AND name = 'packets'").get() as { rootpage: number; sql: string } | undefined;
  if (!t || !(t.rootpage > 0) || /WITHOUT\s+ROWID/i.test(t.sql)) return null;
  const info = db.prepare('PRAGMA main.table_info(packets)').all() as { cid: number; name: string; type: string; pk: number }[];
  const id = info.find((c) => c.name === 'id');
  // id is the rowid (stored as NULL in the record) only as the sole INTEGER PRIMARY KEY
  if (!id || id.pk !== 1 || id.type.toUpperCase() !== 'INTEGER' || info.some((c) => c.pk > 0 && c !== id)) return null;
  const roles = new Uint8Array(info.length);
  for (const c of info) {
    const k = COLS.indexOf(c.name as typeof COLS[number]);
    if (k >= 0) roles[c.cid] = k + 1;
  }
  if (COLS.some((c) => !info.some((i) => i.name === c))) return null;
  return { root: t.rootpage, roles };
}

/** The pass's rows from the file's pages, or null when this bundle's must be read in SQL. */
export function readPassRows(db: DB, path: string, maxRows = MAX_PASS_ROWS): PassRows | null {
  const el = eligible(db, path);
  if (!el) return null;
  let fd: number;
  try { fd = openSync(path, 'r'); } catch { return null; }
  try {
    const head = Buffer.alloc(100);
    if (readSync(fd, head, 0, 100, 0) !== 100 || head.toString('latin1', 0, 16) !== 'SQLite format 3\0') return null;
    const raw = head.readUInt16BE(16);
    const pageSize = raw === 1 ? 65536 : raw;
    // text encoding 1 is UTF-8; reserved bytes at each page's end shrink the usable size
    if (pageSize < 512 || (pageSize & (pageSize - 1)) !== 0 || head.readUInt32BE(56) !== 1) return null;
    const usable = pageSize - head[20]!;
    const counter = head.readUInt32BE(24), size = fstatSync(fd).size;
    const rows = new Reader(fd, pageSize, usable, el.roles, size, maxRows).read(el.root);
    // a writer between the two reads of the header: read it in SQL
    const again = Buffer.alloc(100);
    readSync(fd, again, 0, 100, 0);
    if (again.readUInt32BE(24) !== counter || fstatSync(fd).size !== size) return null;
    for (const s of ['-wal', '-journal']) {
      try { if (statSync(path + s).size > 0) return null; } catch { /* absent */ }
    }
    rows.order = passOrder(rows);
    return rows;
  } catch {
    // whatever stops this reader (a page it does not know, a read error, a bug of its own) costs only its
    // speed: the pass reads the same rows in SQL, which reports real damage as the bundle's
    return null;
  } finally {
    closeSync(fd);
  }
}

/** null when table order is already (ts_ns, id) order, the common case; else the sorted row numbers */
function passOrder(r: PassRows): Uint32Array | null {
  const hi = (i: number) => r.blocks[i >>> BLOCK_BITS]!.tsHi[i & BLOCK_MASK]!;
  const lo = (i: number) => r.blocks[i >>> BLOCK_BITS]!.tsLo[i & BLOCK_MASK]!;
  let sorted = true;
  for (let i = 1; i < r.n && sorted; i++) {
    const h0 = hi(i - 1), h1 = hi(i);
    if (h1 < h0 || (h1 === h0 && lo(i) < lo(i - 1))) sorted = false;
  }
  if (sorted) return null;
  const o = new Uint32Array(r.n);
  for (let i = 0; i < r.n; i++) o[i] = i;
  // rowids ascend in table order, so a stable sort on the timestamp is the (ts_ns, id) order
  return o.sort((a, b) => (hi(a) - hi(b)) || (lo(a) - lo(b)) || (a - b));
}

const SERIAL_LEN = new Uint8Array([0, 1, 2, 3, 4, 6, 8, 8, 0, 0, 0, 0]);

/**
 * The most rows kept for the pass (~45 bytes each: ~22 MB): a bundle with more is read in SQL, a row at a
 * time, so that the analysis' memory does not grow with the capture (a bundle of every frame as a row, from
 * before schema 3, or an index of tens of millions of frames).
 */
export const MAX_PASS_ROWS = 500_000;

/** a value the collected row cannot hold as SQL would hand it over */
const ODD = -3;
/** an int32 column value: NULL_I32 for NULL, ODD beyond int32 or not an integer (and -3 itself, read by id all the same) */
function int32(v: number | null): number {
  if (v === null) return NULL_I32;
  return Number.isInteger(v) && v > NULL_I32 && v <= 2147483647 ? v : ODD;
}

/** x, or `none` for ODD (the row is read by id: what it holds there is not used) */
const or = (x: number, none: number): number => (x === ODD ? none : x);

/** PassRows being filled, one row at a time, a block after another (nothing copied, no garbage as it grows) */
class RowStore {
  readonly rows: PassRows = { n: 0, order: null, blocks: [], strings: [] };
  private b: RowBlock | null = null;
  constructor(readonly max = MAX_PASS_ROWS) {}
  get full(): boolean { return this.rows.n >= this.max; }

  add(rowid: number, tsHi: number, tsLo: number, kind: number, iface: number, src: number, dst: number, sport: number, dport: number, flags: number, plen: number): void {
    const r = this.rows;
    const k = r.n & BLOCK_MASK;
    let b = this.b;
    if (k === 0 || b === null) {
      b = this.b = { rowid: new Float64Array(BLOCK), tsHi: new Int32Array(BLOCK), tsLo: new Uint32Array(BLOCK), kind: new Uint8Array(BLOCK),
        iface: new Int32Array(BLOCK), src: new Int32Array(BLOCK), dst: new Int32Array(BLOCK), sport: new Int32Array(BLOCK), dport: new Int32Array(BLOCK),
        flags: new Int32Array(BLOCK), plen: new Int32Array(BLOCK) };
      r.blocks.push(b);
    }
    r.n++;
    b.rowid[k] = rowid; b.tsHi[k] = tsHi; b.tsLo[k] = tsLo; b.kind[k] = kind;
    b.iface[k] = iface; b.src[k] = src; b.dst[k] = dst; b.sport[k] = sport; b.dport[k] = dport; b.flags[k] = flags; b.plen[k] = plen;
  }
}

/**
 * The pass's rows collected as an index is built in JavaScript (a recorded bundle's TEMP index, see
 * BundleReader.ensurePacketIndex): each row as it is inserted, with the id it got, so that the pass does not
 * read back what was just written. The values are the ones the INSERT bound, so the pass sees what SQL
 * would hand it; what SQL would not hand over the same way (non-ASCII text, a number beyond int32) is
 * read by id, as from the pages.
 */
export class PassRowsCollector {
  private store: RowStore;
  constructor(private readonly maxRows = MAX_PASS_ROWS) { this.store = new RowStore(maxRows); }
  private strIndex = new Map<string, number>();
  private bad = false;

  add(id: number, r: { ts_ns: number; iface: string | null; src: string | null; dst: string | null; proto: string | null; sport: number | null; dport: number | null; tcp_flags: number | null; payload_len: number | null }): void {
    if (this.bad) return;
    if (this.store.full) { this.bad = true; this.store = new RowStore(this.maxRows); return; }
    const ts = Math.round(r.ts_ns);
    if (!Number.isFinite(ts) || Math.abs(ts) >= 2 ** 63) this.bad = true;
    // per row, no closure: ODD marks a value the pass must read in SQL (a TCP row is then read by id)
    const a = this.str(r.iface), b = this.str(r.src), c = this.str(r.dst);
    const sp = int32(r.sport), dp = int32(r.dport), fl = int32(r.tcp_flags), pl = int32(r.payload_len);
    const odd = a === ODD || b === ODD || c === ODD || sp === ODD || dp === ODD || fl === ODD || pl === ODD;
    const kind = r.proto === 'tcp' ? (odd ? RowKind.ById : RowKind.Tcp) : r.proto === 'icmp' || r.proto === 'icmp6' ? RowKind.ById : RowKind.Skip;
    const hi = Math.floor(ts / 4294967296);
    this.store.add(id, hi, ts - hi * 4294967296, kind, or(a, -1), or(b, -1), or(c, -1), or(sp, NULL_I32), or(dp, NULL_I32), or(fl, NULL_I32), or(pl, NULL_I32));
  }

  /** an interned ASCII string, -1 for NULL, ODD for text SQL would hand over differently */
  private str(v: string | null): number {
    if (v === null) return -1;
    let i = this.strIndex.get(v);
    if (i === undefined) {
      if (!/^[\x01-\x7f]*$/.test(v)) return ODD;
      i = this.store.rows.strings.length;
      this.store.rows.strings.push(v);
      this.strIndex.set(v, i);
    }
    return i;
  }

  /** the rows in the pass's order; null when a timestamp was no 64-bit integer (the pass reads SQL then) */
  done(): PassRows | null {
    if (this.bad) return null;
    const rows = this.store.rows;
    rows.order = passOrder(rows);
    return rows;
  }
}

class Reader {
  private store: RowStore;
  private rows: PassRows;
  private strIndex = new Map<number, number>();
  private pages: Buffer[] = [];
  /** the last column the pass reads: the record's header is read up to it */
  private lastRole: number;
  /** the depth of the leaves, once the first is found */
  private leafDepth = -1;

  constructor(private fd: number, private pageSize: number, private usable: number, private roles: Uint8Array, private fileSize: number, maxRows = MAX_PASS_ROWS) {
    this.store = new RowStore(maxRows);
    this.rows = this.store.rows;
    this.lastRole = roles.reduce((m, r, i) => (r !== 0 ? i : m), 0);
  }

  read(root: number): PassRows {
    // the interior pages first, for the leaves in key order; then the leaves, in runs read with one call
    const leaves: number[] = [];
    this.interior(root, 0, leaves);
    const RUN = 64;
    const big = Buffer.alloc(this.pageSize * RUN);
    for (let i = 0; i < leaves.length;) {
      // a run of pages in the file, small gaps (the index's pages, written between) read along and skipped
      let j = i + 1;
      while (j < leaves.length && leaves[j]! > leaves[j - 1]! && leaves[j]! - leaves[i]! < RUN && leaves[j]! - leaves[j - 1]! <= 4) j++;
      const first = leaves[i]!, span = leaves[j - 1]! - first + 1;
      this.check(leaves[j - 1]!);
      const want = span * this.pageSize;
      if (readSync(this.fd, big, 0, want, (first - 1) * this.pageSize) !== want) throw new GiveUp();
      for (let k = i; k < j; k++) this.leaf(big, (leaves[k]! - first) * this.pageSize, leaves[k]!);
      i = j;
    }
    return this.rows;
  }

  private check(pgno: number): void {
    if (!(pgno >= 1) || pgno * this.pageSize > this.fileSize) throw new GiveUp();
  }

  /** the leaf pages under an interior page, in key order (a leaf root is its own list) */
  private interior(pgno: number, depth: number, leaves: number[]): void {
    if (depth > 64) throw new GiveUp();
    this.check(pgno);
    const b = this.pages[depth] ??= Buffer.alloc(this.pageSize);
    if (readSync(this.fd, b, 0, this.pageSize, (pgno - 1) * this.pageSize) !== this.pageSize) throw new GiveUp();
    const h = pgno === 1 ? 100 : 0;
    const type = b[h]!, cells = (b[h + 3]! << 8) | b[h + 4]!;
    if (type === 0x0d) { if (this.leafDepth < 0) this.leafDepth = depth; leaves.push(pgno); return; }
    if (type !== 0x05) throw new GiveUp();
    // left children in cell order, then the right-most pointer
    const kids: number[] = [];
    for (let i = 0; i < cells; i++) kids.push(b.readUInt32BE(this.ptr(b, h + 12 + 2 * i)));
    kids.push(b.readUInt32BE(h + 8));
    // the level below: leaves or interior pages, as its first page says (a table B-tree is balanced)
    for (const k of kids) {
      if (this.leafDepth < 0 || depth + 1 < this.leafDepth) this.interior(k, depth + 1, leaves);
      else leaves.push(k);
    }
  }

  /** the leaf page at offset base of b */
  private leaf(b: Buffer, base: number, pgno: number): void {
    const h = base + (pgno === 1 ? 100 : 0);
    if (b[h] !== 0x0d) throw new GiveUp();
    const cells = (b[h + 3]! << 8) | b[h + 4]!;
    for (let i = 0; i < cells; i++) this.cell(b, base + this.ptr(b, h + 8 + 2 * i), base + this.usable);
  }

  private ptr(b: Buffer, at: number): number {
    const p = (b[at]! << 8) | b[at + 1]!;
    if (p < 8 || p >= this.usable) throw new GiveUp();
    return p;
  }

  /** one table leaf cell: varint payload size, varint rowid, the record (header of serial types, then values) */
  private cell(b: Buffer, p: number, limit: number): void {
    let c: number, payload = 0, rowid = 0, k = 0;
    do { c = b[p++]!; payload = payload * 128 + (c & 127); } while (c & 128 && ++k < 9);
    k = 0;
    do { c = b[p++]!; rowid = rowid * 128 + (c & 127); } while (c & 128 && ++k < 8);
    if (k === 8) rowid = rowid * 256 + b[p++]!;
    if (rowid > Number.MAX_SAFE_INTEGER) throw new GiveUp();
    // a record spilling onto overflow pages (frames stored inline by schema 2): SQL reads those bundles
    if (payload > this.usable - 35 || p + payload > limit) throw new GiveUp();
    const start = p;
    let hl = 0;
    k = 0;
    do { c = b[p++]!; hl = hl * 128 + (c & 127); } while (c & 128 && ++k < 9);
    const he = start + hl, end = start + payload;
    if (he > end) throw new GiveUp();
    let dp = he, col = 0;
    let kind: number = RowKind.Tcp, tsHi = 0, tsLo = 0, tsSet = false;
    let iface = -1, src = -1, dst = -1, sport = NULL_I32, dport = NULL_I32, flags = NULL_I32, plen = NULL_I32, proto = 0; // proto 0 NULL, 1 tcp, 2 icmp/icmp6, 3 other
    const roles = this.roles;
    const last = this.lastRole;
    while (p < he && col <= last) {
      let st = b[p++]!;
      if (st & 128) { st &= 127; k = 0; do { c = b[p++]!; st = st * 128 + (c & 127); } while (c & 128 && ++k < 8); }
      const len = st < 12 ? SERIAL_LEN[st]! : (st - 12 - (st & 1)) / 2;
      const role = col < roles.length ? roles[col]! : 0;
      col++;
      if (role !== 0) {
        if (dp + len > end) throw new GiveUp();
        if (role === TS) {
          if (st < 1 || st > 6) throw new GiveUp();
          if (st === 6) { tsHi = (b[dp]! << 24) | (b[dp + 1]! << 16) | (b[dp + 2]! << 8) | b[dp + 3]!; tsLo = ((b[dp + 4]! << 24) | (b[dp + 5]! << 16) | (b[dp + 6]! << 8) | b[dp + 7]!) >>> 0; }
          else { const v = b.readIntBE(dp, len); tsHi = Math.floor(v / 4294967296); tsLo = v - tsHi * 4294967296; }
          tsSet = true;
        } else if (role === PROTO) {
          proto = st === 0 ? 0 : st >= 13 && st & 1 ? protoOf(b, dp, len) : 3;
        } else if (role === IFACE || role === SRC || role === DST) {
          let s = -1;
          if (st >= 13 && st & 1) { s = this.text(b, dp, len); if (s < 0) kind = RowKind.ById; }
          else if (st !== 0) kind = RowKind.ById;
          if (role === IFACE) iface = s; else if (role === SRC) src = s; else dst = s;
        } else {
          let v = NULL_I32;
          if (st === 1) v = (b[dp]! << 24) >> 24;
          else if (st === 2) v = ((b[dp]! << 24) >> 16) | b[dp + 1]!;
          else if (st === 3) v = ((b[dp]! << 24) >> 8) | (b[dp + 1]! << 8) | b[dp + 2]!;
          else if (st === 4) v = (b[dp]! << 24) | (b[dp + 1]! << 16) | (b[dp + 2]! << 8) | b[dp + 3]!;
          else if (st === 8) v = 0;
          else if (st === 9) v = 1;
          else if (st !== 0) kind = RowKind.ById;
          if (v === NULL_I32 && st !== 0) kind = RowKind.ById;
          if (role === SPORT) sport = v; else if (role === DPORT) dport = v; else if (role === FLAGS) flags = v; else plen = v;
        }
      }
      dp += len;
    }
    if (dp > end) throw new GiveUp();
    // the columns a record lacks (added by ALTER TABLE after it was written) are NULL; ts_ns is NOT NULL
    if (!tsSet) throw new GiveUp();
    if (proto === 2) kind = RowKind.ById;
    else if (proto !== 1) kind = RowKind.Skip;
    if (this.store.full) throw new GiveUp();
    this.store.add(rowid, tsHi, tsLo, kind, iface, src, dst, sport, dport, flags, plen);
  }

  /**
   * An interned ASCII string (its index in rows.strings), or -1 for text with other bytes (read in SQL).
   * A dotted-quad IPv4 address in canonical form (what the index holds for every IPv4 address) is its
   * 32-bit value, one-to-one, looked up in a direct-mapped cache; other text by a hash, checked byte by byte.
   */
  private text(b: Buffer, at: number, len: number): number {
    const ip = len >= 7 && len <= 15 ? ipv4(b, at, len) : -1;
    if (ip >= 0) {
      const slot = (ip ^ (ip >>> 11) ^ (ip >>> 22)) & 4095;
      if (this.ipKey[slot] === ip && this.ipIdx[slot]! > 0) return this.ipIdx[slot]! - 1;
      let idx = this.ipMap.get(ip);
      if (idx === undefined) { idx = this.rows.strings.length; this.rows.strings.push(b.toString('latin1', at, at + len)); this.ipMap.set(ip, idx); }
      this.ipKey[slot] = ip; this.ipIdx[slot] = idx + 1;
      return idx;
    }
    let h = len;
    for (let i = 0; i < len; i++) {
      const x = b[at + i]!;
      if (x >= 0x80 || x === 0) return -1;
      h = (Math.imul(h, 31) + x) | 0;
    }
    const strings = this.rows.strings;
    let idx = this.strIndex.get(h);
    if (idx !== undefined) {
      const s = strings[idx]!;
      if (s.length === len) {
        let i = 0;
        while (i < len && s.charCodeAt(i) === b[at + i]) i++;
        if (i === len) return idx;
      }
      // a hash collision: the string is kept without a place in the index
      strings.push(b.toString('latin1', at, at + len));
      return strings.length - 1;
    }
    idx = strings.length;
    strings.push(b.toString('latin1', at, at + len));
    this.strIndex.set(h, idx);
    return idx;
  }
  private ipMap = new Map<number, number>();
  private ipKey = new Float64Array(4096);
  /** index + 1 (0: empty slot) */
  private ipIdx = new Int32Array(4096);
}

/**
 * The value of a canonical dotted-quad IPv4 address (four decimal numbers 0..255 without leading zeros),
 * or -1 for any other text: the canonical texts and their values are one-to-one.
 */
function ipv4(b: Buffer, at: number, len: number): number {
  let v = 0, part = 0, digits = 0, dots = 0;
  for (let i = at, e = at + len; i < e; i++) {
    const x = b[i]!;
    if (x === 0x2e) {
      if (digits === 0 || dots === 3) return -1;
      v = v * 256 + part; part = 0; digits = 0; dots++;
    } else {
      const d = x - 0x30;
      if (d < 0 || d > 9 || (digits === 1 && part === 0)) return -1;
      part = part * 10 + d;
      if (++digits > 3 || part > 255) return -1;
    }
  }
  if (dots !== 3 || digits === 0) return -1;
  return v * 256 + part;
}

/** 1 tcp, 2 icmp or icmp6 (read by id), 3 anything else (not a row of the pass) */
function protoOf(b: Buffer, at: number, len: number): number {
  if (len === 3 && b[at] === 0x74 && b[at + 1] === 0x63 && b[at + 2] === 0x70) return 1;
  if ((len === 4 || len === 5) && b.toString('latin1', at, at + len).startsWith('icmp') && (len === 4 || b[at + 4] === 0x36)) return 2;
  return 3;
}
