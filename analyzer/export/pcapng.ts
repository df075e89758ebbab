/**
 * pcapng writer (no libpcap): one Section Header Block, one Interface Description Block per captured
 * (interface, linktype) with if_name and if_tsresol=9 (nanoseconds), one Enhanced Packet Block per
 * packet, with an opt_comment on the packets that belong to a failure the analysis found.
 * Spec: draft-ietf-opsawg-pcapng. Little-endian; every block padded to 32 bits.
 */
import { closeSync, openSync, writeSync } from 'node:fs';
import type { Analysis, AnalysisPod } from '../../schemas/analysis.js';
import { nsFromIso } from '../../schemas/analysis.js';
import type { StoredPacketRow } from '../../schemas/rows.js';
import { splitAddr } from '../util.js';

const SHB = 0x0a0d0d0a;
const IDB = 0x00000001;
const EPB = 0x00000006;

const pad4 = (n: number) => (4 - (n % 4)) % 4;

function option(code: number, value: Buffer): Buffer {
  const b = Buffer.alloc(4 + value.length + pad4(value.length));
  b.writeUInt16LE(code, 0);
  b.writeUInt16LE(value.length, 2);
  value.copy(b, 4);
  return b;
}
const endOfOpt = () => Buffer.alloc(4);

function block(type: number, body: Buffer): Buffer {
  const total = 12 + body.length;
  const b = Buffer.alloc(total);
  b.writeUInt32LE(type, 0);
  b.writeUInt32LE(total, 4);
  body.copy(b, 8);
  b.writeUInt32LE(total, total - 4);
  return b;
}

export function sectionHeader(appl: string): Buffer {
  const fixed = Buffer.alloc(16);
  fixed.writeUInt32LE(0x1a2b3c4d, 0);
  fixed.writeUInt16LE(1, 4);
  fixed.writeUInt16LE(0, 6);
  fixed.writeBigInt64LE(-1n, 8); // section length unknown
  return block(SHB, Buffer.concat([fixed, option(4, Buffer.from(appl, 'utf8')), endOfOpt()]));
}

export function interfaceDescription(linktype: number, name: string, snaplen = 0): Buffer {
  const fixed = Buffer.alloc(8);
  fixed.writeUInt16LE(linktype, 0);
  fixed.writeUInt32LE(snaplen, 4);
  return block(IDB, Buffer.concat([fixed, option(2, utf8Capped(name, 1024)), option(9, Buffer.from([9])), endOfOpt()]));
}

const TS_LIMIT = 1n << 64n;
const OPT_MAX = 65535;

/** An EPB timestamp (ns, 64 bits unsigned) from a stored value, or null: negative, ≥ 2^64 ns, text, blob, NULL. */
export function epbTimestamp(v: unknown): bigint | null {
  let t: bigint;
  if (typeof v === 'bigint') t = v;
  else if (typeof v === 'number' && Number.isFinite(v)) t = BigInt(Math.round(v));
  else return null;
  return t >= 0n && t < TS_LIMIT ? t : null;
}

/** At most `max` bytes of UTF-8, cut on a character boundary (an option's length is 16 bits). */
function utf8Capped(s: string, max = OPT_MAX): Buffer {
  const b = Buffer.from(s.length > max ? s.slice(0, max) : s, 'utf8');
  if (b.length <= max) return b;
  let end = max;
  while (end > 0 && (b[end]! & 0xc0) === 0x80) end--;
  return b.subarray(0, end);
}

export function enhancedPacket(ifIndex: number, tsNs: number | bigint, data: Uint8Array, origLen: number, comment?: string | null): Buffer {
  const ts = epbTimestamp(tsNs);
  if (ts === null) throw new RangeError(`EPB timestamp ${String(tsNs)} ns is outside 0..2^64`);
  const fixed = Buffer.alloc(20);
  fixed.writeUInt32LE(ifIndex, 0);
  fixed.writeUInt32LE(Number(ts >> 32n), 4);
  fixed.writeUInt32LE(Number(ts & 0xffffffffn), 8);
  fixed.writeUInt32LE(data.length, 12);
  const orig = Number.isSafeInteger(origLen) && origLen >= 0 && origLen <= 0xffffffff ? origLen : data.length;
  fixed.writeUInt32LE(Math.max(orig, data.length), 16);
  const parts: Buffer[] = [fixed, Buffer.from(data.buffer, data.byteOffset, data.byteLength), Buffer.alloc(pad4(data.length))];
  if (comment) parts.push(option(1, utf8Capped(comment)), endOfOpt());
  return block(EPB, Buffer.concat(parts));
}

interface Annot { tsNs: number; text: string; closedNs: number | null }

/** Per-packet comments from the analysis: every packet of a failed connection names its backend pod and cause. */
export class PacketAnnotator {
  /** client ip (no brackets, as packets store it) → client port → failures */
  private byClient = new Map<string, Map<number, Annot[]>>();
  private count = 0;
  constructor(a: Analysis | null, private windowNs = 5e9) {
    if (!a) return;
    const pods = new Map<string, AnalysisPod>();
    for (const p of a.pods) { pods.set(p.namespace ? `${p.namespace}/${p.name}` : p.name, p); pods.set(p.name, p); }
    for (const f of a.failures) {
      const c = splitAddr(f.client);
      const at = nsFromIso(f.at);
      if (!c || c.port === null || at === null) continue;
      const pod = f.backend.pod ? pods.get(f.backend.pod) : a.pods.find((p) => p.ip && p.ip === f.backend.ip);
      const podName = pod?.name ?? f.backend.pod ?? null;
      const ip = f.backend.ip ?? pod?.ip ?? null;
      const text = `${podName ? `backend pod ${podName}${ip ? ` (${ip})` : ''}` : `backend ${ip ?? 'unknown'}`}, failure ${f.cause}`;
      let ports = this.byClient.get(c.ip);
      if (!ports) this.byClient.set(c.ip, ports = new Map());
      let list = ports.get(c.port);
      if (!list) ports.set(c.port, list = []);
      list.push({ tsNs: at, text, closedNs: pod?.listenerClosedAt ? nsFromIso(pod.listenerClosedAt) : null });
      this.count++;
    }
  }

  get failures(): number { return this.count; }

  private nearest(list: Annot[] | undefined, ts: number, best: Annot | null): Annot | null {
    if (!list) return best;
    for (const c of list) {
      const d = Math.abs(c.tsNs - ts);
      if (d <= this.windowNs && (!best || d < Math.abs(best.tsNs - ts))) best = c;
    }
    return best;
  }

  comment(p: Pick<StoredPacketRow, 'ts_ns' | 'src' | 'sport' | 'dst' | 'dport'>): string | null {
    if (this.count === 0) return null;
    let best: Annot | null = null;
    if (p.src !== null && p.sport !== null) best = this.nearest(this.byClient.get(p.src)?.get(p.sport), p.ts_ns, best);
    if (p.dst !== null && p.dport !== null) best = this.nearest(this.byClient.get(p.dst)?.get(p.dport), p.ts_ns, best);
    if (!best) return null;
    if (best.closedNs === null) return best.text;
    const d = (p.ts_ns - best.closedNs) / 1e6;
    return `${best.text}, listener closed ${Math.abs(d).toFixed(Math.abs(d) < 10 ? 1 : 0)} ms ${d >= 0 ? 'earlier' : 'later'}`;
  }
}

export interface PcapngResult {
  packets: number; interfaces: Array<{ name: string; linktype: number }>; commented: number; bytes: number;
  /** rows pcapng cannot hold (timestamp not in 0..2^64 ns, link type not in 0..65535, data not bytes), by reason */
  skipped: Record<string, number>;
}

/** Why a stored packet row cannot become an EPB, or null when it can. */
function unexportable(p: StoredPacketRow): string | null {
  if (epbTimestamp(p.ts_ns) === null) return 'timestamp outside 0..2^64 ns or not an integer';
  if (!Number.isInteger(p.linktype) || p.linktype < 0 || p.linktype > 0xffff) return 'link type not in 0..65535';
  if (p.data !== null && p.data !== undefined && !(p.data instanceof Uint8Array)) return 'frame data not a blob';
  return null;
}

/** Stream packets into a pcapng file; interfaces are declared as they first appear (legal in pcapng). Rows pcapng cannot hold are skipped and counted. */
export function writePcapng(out: string, packets: Iterable<StoredPacketRow>, annot: PacketAnnotator, appl = 'rolltrace'): PcapngResult {
  const fd = openSync(out, 'w');
  const res: PcapngResult = { packets: 0, interfaces: [], commented: 0, bytes: 0, skipped: {} };
  const ifIndex = new Map<string, number>();
  let buf: Buffer[] = [];
  let pending = 0;
  const put = (b: Buffer) => { buf.push(b); pending += b.length; res.bytes += b.length; if (pending > 1 << 20) flush(); };
  const flush = () => { if (buf.length) writeSync(fd, Buffer.concat(buf)); buf = []; pending = 0; };
  try {
    put(sectionHeader(appl));
    for (const p of packets) {
      const why = unexportable(p);
      if (why) { res.skipped[why] = (res.skipped[why] ?? 0) + 1; continue; }
      const name = p.iface === null || p.iface === undefined ? 'unknown' : String(p.iface);
      const key = `${name}\u0000${p.linktype}`;
      let idx = ifIndex.get(key);
      if (idx === undefined) {
        idx = ifIndex.size;
        ifIndex.set(key, idx);
        res.interfaces.push({ name, linktype: p.linktype });
        put(interfaceDescription(p.linktype, name));
      }
      const data = p.data instanceof Uint8Array ? p.data : new Uint8Array(0);
      const c = annot.comment(p);
      if (c) res.commented++;
      put(enhancedPacket(idx, p.ts_ns, data, p.len, c));
      res.packets++;
    }
    flush();
  } finally {
    closeSync(fd);
  }
  return res;
}
