/**
 * Streaming readers for pcap (µs and ns magic, both byte orders) and pcapng (SHB in both byte orders,
 * IDB with if_name / if_tsresol / if_tsoffset, EPB, SPB, OPB; unknown blocks skipped). Pure: feed bytes
 * in with push(), get records out; no I/O. Used by the packets source (tcpdump -w - fallback) and
 * by `rolltrace import --pcap`.
 */
import { InputError } from '../errors.js';

export interface CaptureRecord {
  /** Unix-epoch ns (JS number; exact to ~256 ns) */
  ts_ns: number;
  iface: string | null;
  linktype: number;
  caplen: number;
  len: number;
  data: Uint8Array;
}

interface Iface { linktype: number; name: string | null; snaplen: number; tsDiv: bigint; tsMul: bigint; tsOffsetS: bigint }

/** libpcap sf-pcap.c LT_LINKTYPE(x): the link type proper; bits 26-31 (LT_LINKTYPE_EXT) are flags */
export const LT_LINKTYPE_MASK = 0x03ffffff;
/** the largest timestamp a bundle holds (SQLite INTEGER, pcapng's 64 bits): 2^63 - 1 ns, year 2262 */
const MAX_TS_NS = 2 ** 63;
/** the largest pcapng block read (libpcap: 16 MiB) */
const MAX_BLOCK = 16 * 1024 * 1024;

const PCAP_US = 0xa1b2c3d4;
const PCAP_NS = 0xa1b23c4d;
const PCAPNG_SHB = 0x0a0d0d0a;
const BOM = 0x1a2b3c4d;

export type CaptureFormat = 'pcap' | 'pcapng';

export class CaptureStreamParser {
  format: CaptureFormat | null = null;
  /** records whose framing was invalid or that were cut off at end() */
  malformed = 0;
  /** unknown pcapng blocks skipped */
  skippedBlocks = 0;
  records = 0;
  private buf: Buffer = Buffer.alloc(0);
  private le = true;
  private nanos = false;
  private pcapLinktype = 1;
  private ifaces: Iface[] = [];
  private failed: string | null = null;
  private defaultIface: string | null;
  private lastTs = 0;

  constructor(opts: { iface?: string | null } = {}) {
    this.defaultIface = opts.iface ?? null;
  }

  /** Feed bytes; returns the records completed by them. Throws InputError if the stream is not a capture. */
  push(chunk: Uint8Array): CaptureRecord[] {
    if (this.failed) return [];
    this.buf = this.buf.length ? Buffer.concat([this.buf, chunk]) : Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
    const out: CaptureRecord[] = [];
    let off = 0;
    try {
      if (this.format === null) {
        if (this.buf.length < 4) return out;
        const m = this.buf.readUInt32LE(0);
        if (m === PCAP_US || m === PCAP_NS) { this.format = 'pcap'; this.le = true; this.nanos = m === PCAP_NS; }
        else if (this.buf.readUInt32BE(0) === PCAP_US || this.buf.readUInt32BE(0) === PCAP_NS) {
          this.format = 'pcap'; this.le = false; this.nanos = this.buf.readUInt32BE(0) === PCAP_NS;
        } else if (m === PCAPNG_SHB) this.format = 'pcapng';
        else { this.failed = 'not a pcap or pcapng capture (bad magic number)'; throw new InputError(this.failed); }
      }
      if (this.format === 'pcap') off = this.pcap(out);
      else off = this.pcapng(out);
    } finally {
      this.buf = off > 0 ? this.buf.subarray(off) : this.buf;
    }
    this.records += out.length;
    return out;
  }

  /** Call at end of stream: leftover bytes are a cut-off record. */
  end(): void {
    if (this.buf.length > 0) { this.malformed++; this.buf = Buffer.alloc(0); }
  }

  private r32(o: number): number { return this.le ? this.buf.readUInt32LE(o) : this.buf.readUInt32BE(o); }
  private r16(o: number): number { return this.le ? this.buf.readUInt16LE(o) : this.buf.readUInt16BE(o); }

  private pcap(out: CaptureRecord[]): number {
    let off = 0;
    const b = this.buf;
    if (this.ifaces.length === 0) {
      if (b.length < 24) return 0;
      // libpcap's LT_LINKTYPE(): the upper 6 bits are flags (bit 26: FCS length present, 28-31: FCS length)
      this.pcapLinktype = this.r32(20) & LT_LINKTYPE_MASK;
      this.ifaces.push({ linktype: this.pcapLinktype, name: this.defaultIface, snaplen: this.r32(16), tsDiv: 1n, tsMul: 1n, tsOffsetS: 0n });
      off = 24;
    }
    while (b.length - off >= 16) {
      const sec = this.r32(off);
      const frac = this.r32(off + 4);
      const caplen = this.r32(off + 8);
      const len = this.r32(off + 12);
      if (caplen > 262144 * 4) {
        this.malformed++;
        this.failed = `pcap record with impossible length ${caplen}`;
        throw new InputError(this.failed);
      }
      if (b.length - off - 16 < caplen) break;
      const data = new Uint8Array(b.subarray(off + 16, off + 16 + caplen));
      const ts_ns = sec * 1e9 + (this.nanos ? frac : frac * 1000);
      out.push({ ts_ns, iface: this.defaultIface, linktype: this.pcapLinktype, caplen, len, data });
      off += 16 + caplen;
    }
    return off;
  }

  private pcapng(out: CaptureRecord[]): number {
    let off = 0;
    const b = this.buf;
    while (b.length - off >= 12) {
      const typeRaw = b.readUInt32LE(off);
      if (typeRaw === PCAPNG_SHB) {
        const bom = b.readUInt32LE(off + 8);
        if (bom === BOM) this.le = true;
        else if (b.readUInt32BE(off + 8) === BOM) this.le = false;
        else { this.failed = 'pcapng section header with bad byte-order magic'; throw new InputError(this.failed); }
        this.ifaces = [];
      }
      const type = this.r32(off);
      const blen = this.r32(off + 4);
      // libpcap refuses blocks above 16 MiB too; without a bound a lying length buffers the whole file
      if (blen < 12 || blen % 4 !== 0 || blen > MAX_BLOCK) {
        this.malformed++;
        this.failed = `pcapng block of impossible length ${blen}`;
        throw new InputError(this.failed);
      }
      if (b.length - off < blen) break;
      const body = off + 8;
      const bodyEnd = off + blen - 4;
      try {
        switch (type) {
          case PCAPNG_SHB: break;
          case 1: this.idb(body, bodyEnd); break;
          case 6: case 2: this.epb(type, body, bodyEnd, out); break;
          case 3: this.spb(body, bodyEnd, out); break;
          default: this.skippedBlocks++;
        }
      } catch (e) {
        // a block whose fields run past its own length: skip it, like any other malformed record
        if (!(e instanceof RangeError)) throw e;
        this.malformed++;
      }
      off += blen;
    }
    return off;
  }

  private idb(o: number, end: number): void {
    // linktype, reserved and snaplen: 8 bytes the block must hold
    if (o + 8 > end) { this.malformed++; return; }
    const iface: Iface = { linktype: this.r16(o), name: null, snaplen: this.r32(o + 4), tsDiv: 1000n, tsMul: 1n, tsOffsetS: 0n };
    // default resolution 10^-6: ns = ts * 1000
    iface.tsMul = 1000n; iface.tsDiv = 1n;
    let p = o + 8;
    while (p + 4 <= end) {
      const code = this.r16(p);
      const olen = this.r16(p + 2);
      if (code === 0) break;
      const v = p + 4;
      if (v + olen > end) break;
      if (code === 2) iface.name = this.buf.toString('utf8', v, v + olen).replace(/\0+$/, '');
      else if (code === 9 && olen >= 1) {
        const r = this.buf[v]!;
        const exp = BigInt(r & 0x7f);
        if (r & 0x80) {
          // power of two: ns = ts * 1e9 / 2^exp
          iface.tsMul = 1_000_000_000n; iface.tsDiv = 1n << exp;
        } else if (exp <= 9n) { iface.tsMul = 10n ** (9n - exp); iface.tsDiv = 1n; }
        else { iface.tsMul = 1n; iface.tsDiv = 10n ** (exp - 9n); }
      } else if (code === 14 && olen >= 8) {
        iface.tsOffsetS = this.le ? this.buf.readBigInt64LE(v) : this.buf.readBigInt64BE(v);
      }
      p = v + ((olen + 3) & ~3);
    }
    this.ifaces.push(iface);
  }

  /** ns since the epoch, or null when out of 0..2^63 (a huge if_tsresol/if_tsoffset, a negative offset) */
  private ts(iface: Iface, hi: number, lo: number): number | null {
    const t = (BigInt(hi) << 32n) | BigInt(lo);
    const ns = (t * iface.tsMul) / iface.tsDiv + iface.tsOffsetS * 1_000_000_000n;
    return ns >= 0n && ns < BigInt(MAX_TS_NS) ? Number(ns) : null;
  }

  private epb(type: number, o: number, end: number, out: CaptureRecord[]): void {
    const isObsolete = type === 2;
    const ifId = isObsolete ? this.r16(o) : this.r32(o);
    const iface = this.ifaces[ifId];
    if (!iface || o + 20 > end) { this.malformed++; return; }
    const hi = this.r32(o + 4), lo = this.r32(o + 8);
    const caplen = this.r32(o + 12), len = this.r32(o + 16);
    if (o + 20 + caplen > end) { this.malformed++; return; }
    const ts = this.ts(iface, hi, lo);
    if (ts === null) { this.malformed++; return; }
    this.lastTs = ts;
    out.push({
      ts_ns: this.lastTs, iface: iface.name ?? this.defaultIface, linktype: iface.linktype, caplen, len,
      data: new Uint8Array(this.buf.subarray(o + 20, o + 20 + caplen)),
    });
  }

  private spb(o: number, end: number, out: CaptureRecord[]): void {
    const iface = this.ifaces[0];
    if (!iface || o + 4 > end) { this.malformed++; return; }
    const len = this.r32(o);
    const caplen = Math.min(len, end - o - 4, iface.snaplen || Infinity);
    out.push({
      // simple packet blocks carry no timestamp: reuse the previous one
      ts_ns: this.lastTs, iface: iface.name ?? this.defaultIface, linktype: iface.linktype, caplen, len,
      data: new Uint8Array(this.buf.subarray(o + 4, o + 4 + caplen)),
    });
  }
}

/** Parse a whole capture held in memory. */
export function parseCapture(bytes: Uint8Array, opts: { iface?: string | null } = {}): {
  format: CaptureFormat; records: CaptureRecord[]; malformed: number; skippedBlocks: number;
} {
  const p = new CaptureStreamParser(opts);
  const records = p.push(bytes);
  p.end();
  if (p.format === null) throw new InputError('capture is empty or shorter than its header');
  return { format: p.format, records, malformed: p.malformed, skippedBlocks: p.skippedBlocks };
}
