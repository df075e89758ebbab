/**
 * pcap-parser (a dependency the product names) as an independent oracle for rolltrace's own capture
 * reader (recorder/decode/pcapfile.ts): on every classic pcap fixture under fixtures/, both must see
 * the same packets — count, seconds and sub-second field, captured and original length, bytes, link
 * type. pcap-parser reads only microsecond pcaps (no nanosecond magic, no pcapng: why rolltrace has its
 * own reader); a nanosecond file is given to it with the microsecond magic, so it reports the raw
 * fraction field, which rolltrace must read as nanoseconds.
 */
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { createRequire } from 'node:module';
import { describe, expect, it } from 'vitest';
import { CaptureStreamParser, LT_LINKTYPE_MASK, type CaptureRecord } from '../recorder/decode/pcapfile.js';
import { FIX } from './helpers/fuzz-gen.js';

const pcapp = createRequire(import.meta.url)('pcap-parser') as { parse(input: NodeJS.ReadableStream): NodeJS.EventEmitter };

interface OraclePacket { header: { timestampSeconds: number; timestampMicroseconds: number; capturedLength: number; originalLength: number }; data: Buffer }

const MAGIC_US = [Buffer.from('d4c3b2a1', 'hex'), Buffer.from('a1b2c3d4', 'hex')];
const MAGIC_NS = [Buffer.from('4d3cb2a1', 'hex'), Buffer.from('a1b23c4d', 'hex')];

function classicPcaps(dir: string): string[] {
  const out: string[] = [];
  for (const n of readdirSync(dir)) {
    const p = join(dir, n);
    if (statSync(p).isDirectory()) { out.push(...classicPcaps(p)); continue; }
    const head = readFileSync(p).subarray(0, 4);
    if ([...MAGIC_US, ...MAGIC_NS].some((m) => m.equals(head))) out.push(p);
  }
  return out.sort();
}

function oracle(bytes: Buffer): Promise<{ linktype: number; packets: OraclePacket[] }> {
  return new Promise((res, rej) => {
    const s = new PassThrough();
    const p = pcapp.parse(s);
    const packets: OraclePacket[] = [];
    let linktype = -1;
    p.on('globalHeader', (h: { linkLayerType: number }) => { linktype = h.linkLayerType; });
    p.on('packet', (k: OraclePacket) => packets.push({ header: { ...k.header }, data: Buffer.from(k.data) }));
    p.on('error', rej);
    p.on('end', () => res({ linktype, packets }));
    s.end(bytes);
  });
}

/** rolltrace's reader, fed in uneven small chunks so record framing across chunk edges is exercised */
function rolltrace(bytes: Buffer): CaptureRecord[] {
  const p = new CaptureStreamParser();
  const out: CaptureRecord[] = [];
  for (let o = 0, i = 0; o < bytes.length; i++) { const n = 1 + ((i * 37) % 113); out.push(...p.push(bytes.subarray(o, o + n))); o += n; }
  p.end();
  expect(p.malformed).toBe(0);
  return out;
}

const files = classicPcaps(FIX);

describe('pcap-parser agrees with rolltrace\'s reader on every classic pcap fixture', () => {
  it('finds the fixtures (microsecond and nanosecond)', () => {
    expect(files.length).toBeGreaterThanOrEqual(4);
    expect(files.some((f) => MAGIC_NS.some((m) => m.equals(readFileSync(f).subarray(0, 4))))).toBe(true);
  });

  for (const f of files) {
    it(f.slice(FIX.length + 1), async () => {
      const bytes = readFileSync(f);
      const nanos = MAGIC_NS.some((m) => m.equals(bytes.subarray(0, 4)));
      let given = bytes;
      if (nanos) {
        // pcap-parser refuses the nanosecond magic outright ...
        await expect(oracle(bytes)).rejects.toThrow(/unknown magic number/);
        // ... so it reads the same records under the microsecond magic (same byte order)
        given = Buffer.from(bytes);
        (bytes[0] === 0x4d ? MAGIC_US[0]! : MAGIC_US[1]!).copy(given, 0);
      }
      const o = await oracle(given);
      const r = rolltrace(bytes);
      expect(o.packets.length).toBeGreaterThan(0);
      expect(r.length).toBe(o.packets.length);
      for (let i = 0; i < r.length; i++) {
        const h = o.packets[i]!.header;
        const exact = BigInt(h.timestampSeconds) * 1_000_000_000n + BigInt(h.timestampMicroseconds) * (nanos ? 1n : 1000n);
        // rolltrace keeps ns in a double: exact to the 256 ns of a 2^61-sized number
        expect(Math.abs(r[i]!.ts_ns - Number(exact)), `packet ${i} timestamp`).toBeLessThanOrEqual(256);
        expect(r[i]!.caplen, `packet ${i} caplen`).toBe(h.capturedLength);
        expect(r[i]!.len, `packet ${i} len`).toBe(h.originalLength);
        expect(Buffer.from(r[i]!.data).equals(o.packets[i]!.data), `packet ${i} bytes`).toBe(true);
        expect(r[i]!.linktype).toBe(o.linktype & LT_LINKTYPE_MASK);
      }
      // timestamps in capture order, and within the capture's own second range
      const secs = o.packets.map((p) => p.header.timestampSeconds);
      expect(Math.floor(r[0]!.ts_ns / 1e9)).toBe(secs[0]);
      expect(Math.floor(r.at(-1)!.ts_ns / 1e9)).toBe(secs.at(-1));
    });
  }
});
