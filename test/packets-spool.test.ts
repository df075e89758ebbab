/**
 * The packets source's spool (tcpdump -w DIR/cap.pcap -C N): files followed in rotation order while they
 * grow, one pcap stream handed over (the header of every file after the first dropped), each file
 * deleted once read past its end, the last one read to its end after tcpdump exits.
 */
import { appendFileSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { SpoolReader, spoolFile } from '../recorder/sources/packets/spool.js';
import { PcapStreamCutter, chunkFrames, indexChunks, type IndexRow, type PacketChunkRow } from '../schemas/decode/chunks.js';
import { writeSynthPcap } from './helpers/synth-pcap.js';

const dir = mkdtempSync(join(tmpdir(), 'rt-spool-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** a synthetic pcap of n frames: its bytes, its header and where each record starts */
function synth(name: string, n: number, seed: number): { pcap: Buffer; header: Buffer; offs: number[] } {
  const src = join(dir, name);
  writeSynthPcap(src, n, seed);
  const pcap = readFileSync(src);
  const offs: number[] = [];
  for (let o = 24; o < pcap.length; o += 16 + pcap.readUInt32LE(o + 8)) offs.push(o);
  return { pcap, header: pcap.subarray(0, 24), offs };
}

describe('spool reader', () => {
  it('follows rotated files as one stream, deletes what it read, ends after tcpdump exits', async () => {
    const { pcap, header, offs } = synth('src.pcap', 3000, 5);
    // cut the records into three files at record boundaries, as tcpdump -C does (each with the header)
    const cuts = [24, offs[1000]!, offs[2000]!, pcap.length];
    const base = join(dir, 'cap.pcap');
    let exited = false;
    const got: Buffer[] = [];
    const chunks: PacketChunkRow[] = [];
    let id = 0;
    const cutter = new PcapStreamCutter({ chunk: (c) => chunks.push(c), index: () => {}, nextChunkId: () => ++id, deferIndex: true }, 'eth0', 64 * 1024);
    const reader = new SpoolReader(base, () => exited, (b) => { got.push(Buffer.from(b)); cutter.push(b); }, (e) => { throw e; });
    for (let k = 0; k < 3; k++) {
      const body = pcap.subarray(cuts[k]!, cuts[k + 1]!);
      // written in pieces that split records, with pauses: the reader sees partial files
      writeFileSync(spoolFile(base, k), header);
      for (let o = 0; o < body.length; o += 7001) { appendFileSync(spoolFile(base, k), body.subarray(o, o + 7001)); if (o % 3 === 0) await sleep(3); }
      await sleep(30);
      if (k > 0) expect(existsSync(spoolFile(base, k - 1))).toBe(false);
    }
    await sleep(50);
    expect(existsSync(spoolFile(base, 2))).toBe(true); // tcpdump still writing it
    exited = true;
    await reader.done;
    cutter.end();
    expect(Buffer.concat(got).equals(pcap)).toBe(true);
    expect(reader.bytes).toBe(pcap.length);
    expect(existsSync(spoolFile(base, 2))).toBe(false);
    expect(chunks.reduce((a, c) => a + [...chunkFrames(c.data)].length, 0)).toBe(offs.length);
    // the live capture indexes nothing; the readers' index of its chunks is the inline one's
    expect(cutter.indexed).toBe(0);
    const rows: IndexRow[] = [];
    expect(indexChunks(chunks, { index: (r) => rows.push(r) })).toBeGreaterThan(0);
    const inline: IndexRow[] = [];
    const again = new PcapStreamCutter({ chunk: () => {}, index: (r) => inline.push(r), nextChunkId: (() => { let i = 0; return () => ++i; })() }, 'eth0', 64 * 1024);
    again.push(pcap); again.end();
    expect(rows.map((r) => [r.ts_ns, r.src, r.sport, r.tcp_flags, r.chunk_id, r.chunk_off])).toEqual(inline.map((r) => [r.ts_ns, r.src, r.sport, r.tcp_flags, r.chunk_id, r.chunk_off]));
  });

  it('deletes the oldest waiting files unread when more than the bound wait (bounded disk), and counts them', async () => {
    const { pcap, header, offs } = synth('src2.pcap', 600, 6);
    const base = join(dir, 'bk.pcap');
    const bodies = [0, 1, 2, 3, 4, 5].map((k) => pcap.subarray(offs[k * 100]!, k === 5 ? pcap.length : offs[(k + 1) * 100]!));
    bodies.forEach((b, k) => writeFileSync(spoolFile(base, k), Buffer.concat([header, b])));
    const got: Buffer[] = [];
    const reader = new SpoolReader(base, () => true, (b) => { got.push(Buffer.from(b)); }, (e) => { throw e; }, 2);
    await reader.done;
    // files 1..4 complete behind file 0, 5 the newest: 1 and 2 go, 3, 4 and 5 are read
    expect(reader.skippedFiles).toBe(2);
    expect(reader.skippedBytes).toBe(bodies[1]!.length + bodies[2]!.length);
    expect(Buffer.concat(got).equals(Buffer.concat([header, bodies[0]!, bodies[3]!, bodies[4]!, bodies[5]!]))).toBe(true);
    for (let k = 0; k < 6; k++) expect(existsSync(spoolFile(base, k))).toBe(false);
  });

  it('ends without a file when tcpdump exited before writing one', async () => {
    const reader = new SpoolReader(join(dir, 'none.pcap'), () => true, () => { throw new Error('no data expected'); }, (e) => { throw e; });
    await reader.done;
    expect(reader.bytes).toBe(0);
  });
});
