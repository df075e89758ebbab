/**
 * The chunked packet path (schema 3): every frame kept byte for byte in packet_chunks, `packets` as the
 * index the analysis reads; export, redact and merge read and write chunks; the failure detector finds
 * the same failures from the index as from every frame.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { copyFileSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { createHash } from 'node:crypto';
import { BundleWriter } from '../recorder/bundle-writer.js';
import { cli, ROOT } from './helpers/cli.js';
import { writeSynthPcap, type SynthStats } from './helpers/synth-pcap.js';
import { parseCapture } from '../schemas/decode/pcapfile.js';
import { decodeFrame } from '../schemas/decode/packet.js';
import { chunkFrames, PcapStreamCutter, type IndexRow, type PacketChunkRow } from '../schemas/decode/chunks.js';
import { BundleReader } from '../analyzer/bundle-reader.js';
import { FailureDetector, scanPackets } from '../analyzer/model/failures.js';
import type { StoredPacketRow } from '../schemas/rows.js';

let dir: string;
let pcap: string;
let bundle: string;
let synth: SynthStats;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'rt-chunks-'));
  pcap = join(dir, 'synth.pcap');
  synth = writeSynthPcap(pcap, 20_000, 7);
  bundle = join(dir, 'synth.rtb');
  const r = cli(['import', '--out', bundle, '--pcap', pcap]);
  expect(r.code, r.stderr).toBe(0);
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const open = (f: string) => new Database(f, { readonly: true });

/** the index rule, written out independently of the header scan: on fully decoded frames (SYN, RST, first payload per direction, FIN of a direction without payload, ICMP unreachable) */
function expectedIndex(file: string): number[] {
  const seen = new Set<string>();
  const out: number[] = [];
  parseCapture(readFileSync(file)).records.forEach((r, i) => {
    const d = decodeFrame(r.linktype, r.data, r.caplen, r.len);
    const f = d.tcp_flags ?? 0;
    const fwd = `${d.src}|${d.sport}|${d.dst}|${d.dport}`;
    if (d.proto === 'tcp') {
      if (f & 2) { seen.delete(fwd); seen.delete(`${d.dst}|${d.dport}|${d.src}|${d.sport}`); }
      if (f & 6) { out.push(i); return; }
      if ((d.payload_len ?? 0) > 0) { if (!seen.has(fwd)) { seen.add(fwd); out.push(i); } return; }
      if ((f & 1) && !seen.has(fwd)) out.push(i);
      return;
    }
    if (d.proto === 'icmp' && d.icmp_type === 3) out.push(i);
  });
  return out;
}

describe('import into chunks', () => {
  it('keeps every frame byte for byte and indexes exactly the frames the analysis reads', () => {
    const recs = parseCapture(readFileSync(pcap)).records;
    expect(recs.length).toBe(synth.packets);
    const db = open(bundle);
    const chunks = db.prepare('SELECT * FROM packet_chunks ORDER BY id').all() as PacketChunkRow[];
    const frames = chunks.flatMap((c) => [...chunkFrames(c.data)].map((f) => ({ ...f, chunk: c.id })));
    expect(chunks.reduce((a, c) => a + c.packets, 0)).toBe(recs.length);
    expect(frames.length).toBe(recs.length);
    frames.forEach((f, i) => {
      expect(f.ts_ns).toBe(recs[i]!.ts_ns);
      expect(Buffer.compare(Buffer.from(f.data), Buffer.from(recs[i]!.data))).toBe(0);
    });
    // the chunk BLOBs hold the pcap's bytes plus one 24-byte header per chunk
    const blob = chunks.reduce((a, c) => a + c.data.length, 0);
    expect(blob).toBe(readFileSync(pcap).length - 24 + 24 * chunks.length);
    const idx = db.prepare('SELECT * FROM packets ORDER BY id').all() as Array<IndexRow & { id: number }>;
    db.close();
    const want = expectedIndex(pcap);
    expect(idx.length).toBe(want.length);
    expect(idx.length).toBeLessThan(recs.length / 2);
    const at = new Map(frames.map((f, i) => [`${f.chunk}:${f.off}`, i]));
    idx.forEach((row, k) => {
      const i = at.get(`${row.chunk_id}:${row.chunk_off}`);
      expect(i).toBe(want[k]);
      expect(row.data).toBeNull();
      expect(row).toMatchObject({ ...decodeFrame(recs[i!]!.linktype, recs[i!]!.data, recs[i!]!.caplen, recs[i!]!.len), ts_ns: recs[i!]!.ts_ns });
    });
  });

  it('the stream cutter gives the same chunks and index however the stream is split', () => {
    const bytes = readFileSync(pcap);
    const run = (step: number) => {
      const chunks: PacketChunkRow[] = []; const index: IndexRow[] = []; let id = 0;
      const c = new PcapStreamCutter({ chunk: (x) => chunks.push(x), index: (x) => index.push(x), nextChunkId: () => ++id }, 'eth0', 64 * 1024);
      for (let o = 0; o < bytes.length; o += step) c.push(bytes.subarray(o, o + step));
      c.end();
      return { chunks: chunks.map((x) => Buffer.from(x.data).toString('base64')), index: index.map((x) => `${x.chunk_id}:${x.chunk_off}`), malformed: c.malformed };
    };
    const a = run(bytes.length), b = run(997);
    expect(b).toEqual(a);
    expect(a.chunks.length).toBeGreaterThan(3);
    expect(a.malformed).toBe(0);
    // records cut inside their header, at its end, one byte into the frame: the first ~150 kB, every split
    const head = (step: number, n: number) => {
      const chunks: string[] = []; let id = 0;
      const c = new PcapStreamCutter({ chunk: (x) => chunks.push(Buffer.from(x.data).toString('base64')), index: () => {}, nextChunkId: () => ++id, deferIndex: true }, 'eth0', 16 * 1024);
      for (let o = 0; o < n; o += step) c.push(bytes.subarray(o, Math.min(o + step, n)));
      c.end();
      return { chunks, malformed: c.malformed, frames: c.frames };
    };
    const n = 150_000, whole = head(n, n);
    expect(whole.chunks.length).toBeGreaterThan(5);
    for (const step of [1, 5, 16, 17, 23, 4099]) expect(head(step, n), `split every ${step} bytes`).toEqual(whole);
  });

  it('reuses a chunk buffer the sink released, and a buffer it did not release is never written again', () => {
    const bytes = readFileSync(pcap);
    const run = (release: 'all' | 'none' | 'odd') => {
      const chunks: PacketChunkRow[] = []; const copies: string[] = []; const buffers = new Set<ArrayBufferLike>(); let id = 0;
      const c = new PcapStreamCutter({
        chunk: (x) => { chunks.push(x); copies.push(Buffer.from(x.data).toString('base64')); buffers.add(x.data.buffer); if (release === 'all' || (release === 'odd' && x.id % 2 === 1)) x.release?.(); },
        index: () => {}, nextChunkId: () => ++id, deferIndex: true,
      }, 'eth0', 64 * 1024);
      for (let o = 0; o < bytes.length; o += 65_000) c.push(bytes.subarray(o, o + 65_000));
      c.end();
      return { chunks, copies, buffers: buffers.size };
    };
    const none = run('none'), all = run('all'), odd = run('odd');
    expect(all.copies).toEqual(none.copies);
    expect(none.buffers).toBe(none.chunks.length);
    expect(all.buffers).toBeLessThanOrEqual(2);
    // the chunks kept (not released) still hold their own bytes after the whole stream
    odd.chunks.forEach((x, i) => { if (x.id % 2 === 0) expect(Buffer.from(x.data).toString('base64')).toBe(odd.copies[i]); });
    expect(odd.copies).toEqual(none.copies);
  });
});

describe('deferred index (the live capture stores chunks only)', () => {
  it('readers build the index the capture would have built; the file is never written', async () => {
    const out = join(dir, 'live.rtb');
    const w = new BundleWriter(out, { createdBy: 'record' });
    w.setSource('packets', { status: 'running', clock: 'kernel' });
    const cutter = new PcapStreamCutter(w.chunkSink('packets', { indexed: false }), 'synth.pcap');
    const bytes = readFileSync(pcap);
    for (let o = 0; o < bytes.length; o += 65536) cutter.push(bytes.subarray(o, o + 65536));
    cutter.end();
    w.setSource('packets', { status: 'ok' });
    w.close();
    const db = open(out);
    expect(db.prepare("SELECT value FROM meta WHERE key = 'packets_index'").get()).toEqual({ value: 'deferred' });
    expect((db.prepare('SELECT count(*) AS n FROM packets').get() as { n: number }).n).toBe(0);
    expect((db.prepare('SELECT sum(packets) AS n FROM packet_chunks').get() as { n: number }).n).toBe(synth.packets);
    db.close();
    const sha = () => createHash('sha256').update(readFileSync(out)).digest('hex');
    const before = sha();
    const reader = await BundleReader.open(out);
    try {
      const want = expectedIndex(pcap).length;
      expect(reader.count('packets')).toBe(want);
      expect(reader.ensurePacketIndex()).toBe(want);
      // the same rows as import's inline index, column for column
      const imp = open(bundle);
      const cols = 'ts_ns, l3, src, dst, proto, sport, dport, tcp_flags, seq, ack, payload_len, icmp_type, icmp_code, inner_src, inner_dst, inner_sport, inner_dport, chunk_off';
      const a = reader.db.prepare(`SELECT ${cols} FROM packets ORDER BY ts_ns, id`).raw(true).all();
      expect(a).toEqual(imp.prepare(`SELECT ${cols} FROM packets ORDER BY ts_ns, id`).raw(true).all());
      // the bundle's own views read the built index too
      expect((reader.db.prepare('SELECT count(*) AS n FROM tcp_resets').get() as { n: number }).n)
        .toBe((imp.prepare('SELECT count(*) AS n FROM tcp_resets').get() as { n: number }).n);
      imp.close();
      const det = new FailureDetector();
      scanPackets(det, reader);
      det.sweep(det.lastTs, true);
      expect(det.candidates().length).toBeGreaterThan(0);
    } finally { reader.close(); }
    expect(sha()).toBe(before);
    // and the whole analysis of it equals the imported bundle's, but for the node's name (a recorder's
    // bundle names its host, an import says "this node")
    const strip = (j: string) => JSON.parse(j.replace(/before it reached [^:"]+:/g, 'before it reached NODE:'));
    const ra = cli(['analyze', out, '--format', 'json']), rb = cli(['analyze', bundle, '--format', 'json']);
    expect(ra.code, ra.stderr).toBe(rb.code);
    expect(strip(ra.stdout).failures).toEqual(strip(rb.stdout).failures);
    expect(strip(ra.stdout).failures.length).toBeGreaterThan(0);
    expect(sha()).toBe(before);

    // the timeline reads events and packets at once: the index is built before either stream starts
    const withEvents = join(dir, 'live-events.rtb');
    copyFileSync(out, withEvents);
    const de = new Database(withEvents);
    de.exec("INSERT INTO events(ts_ns, source, kind, subject, attrs) SELECT min(first_ts_ns) + 1000, 'kube', 'pod-deleted', 'default/web-1', '{}' FROM packet_chunks");
    de.exec("INSERT INTO events(ts_ns, source, kind, subject, attrs) SELECT max(last_ts_ns), 'kube', 'pod-deleted', 'default/web-2', '{}' FROM packet_chunks");
    de.close();
    const tl = cli(['timeline', withEvents]);
    expect(tl.code, tl.stderr).toBe(0);
    expect(tl.stdout).toContain('pod-deleted');
    expect(tl.stdout.split('\n').filter((l) => /\[packets\]\s+syn /.test(l)).length).toBeGreaterThan(100);

    // `rolltrace index` writes the same rows into a copy of the file, for plain SQL
    const copy = join(dir, 'live-indexed.rtb');
    copyFileSync(out, copy);
    const ri = cli(['index', copy]);
    expect(ri.code, ri.stderr).toBe(0);
    expect(ri.stdout).toContain(`${expectedIndex(pcap).length} packet index rows written`);
    const dc = open(copy), imp = open(bundle);
    const q = 'SELECT ts_ns, src, sport, dst, dport, tcp_flags, chunk_off FROM packets ORDER BY ts_ns, id';
    expect(dc.prepare(q).raw(true).all()).toEqual(imp.prepare(q).raw(true).all());
    expect(dc.prepare("SELECT count(*) AS n FROM meta WHERE key = 'packets_index'").get()).toEqual({ n: 0 });
    expect(dc.prepare("SELECT count(*) AS n FROM sqlite_master WHERE name = 'packets_ports'").get()).toEqual({ n: 1 });
    dc.close(); imp.close();
    expect(cli(['index', copy]).stdout).toContain('already in the file');
    const rc = cli(['analyze', copy, '--format', 'json']);
    expect(strip(rc.stdout).failures).toEqual(strip(ra.stdout).failures);
    // a damaged chunk (cut short) indexes up to its damage; the others whole
    const cut = join(dir, 'live-cut.rtb');
    copyFileSync(out, cut);
    const dcut = new Database(cut);
    const first = dcut.prepare('SELECT id, length(data) AS n FROM packet_chunks ORDER BY id LIMIT 1').get() as { id: number; n: number };
    dcut.prepare('UPDATE packet_chunks SET data = substr(data, 1, ?) WHERE id = ?').run(Math.floor(first.n / 3), first.id);
    dcut.close();
    const rcut = await BundleReader.open(cut);
    try {
      const n = rcut.ensurePacketIndex();
      expect(n).toBeGreaterThan(0);
      expect(n).toBeLessThan(expectedIndex(pcap).length);
    } finally { rcut.close(); }
    const acut = cli(['analyze', cut, '--format', 'json']);
    expect(acut.code, acut.stderr).toBe(rb.code);
    const bad = cli(['index', pcap]);
    expect(bad.code).toBe(2);
    expect(bad.stderr.trim().split('\n')).toHaveLength(1);
  });
});

describe('analysis from the index', () => {
  it('finds the same failures as a detector fed every frame', async () => {
    const all = new FailureDetector();
    parseCapture(readFileSync(pcap)).records.forEach((r, i) => {
      all.packet({ id: i + 1, ts_ns: r.ts_ns, iface: 'synth.pcap', ...decodeFrame(r.linktype, r.data, r.caplen, r.len), data: null } as StoredPacketRow);
    });
    all.sweep(all.lastTs, true);
    const reader = await BundleReader.open(bundle);
    const idx = new FailureDetector();
    try { scanPackets(idx, reader); } finally { reader.close(); }
    idx.sweep(idx.lastTs, true);
    const summary = (d: FailureDetector) => d.candidates().map((c) => `${c.client}:${c.cport} ${[...c.kinds].join(',')} ${c.ts}`).sort();
    expect(summary(idx)).toEqual(summary(all));
    const kinds = summary(all).join('\n');
    // candidates of one client ip:port within 5 s are one (reused ports): at most one per generated failure
    for (const [k, n] of [['syn-rst', synth.refused], ['rst-before-response', synth.resetBeforeResponse], ['icmp-unreachable', synth.unreachable]] as const) {
      const got = (kinds.match(new RegExp(k, 'g')) ?? []).length;
      expect(got).toBeGreaterThan(0);
      expect(got).toBeLessThanOrEqual(n);
    }
  });
});

describe('export, redact and merge on chunks', () => {
  it('export --pcap writes every frame of the chunks', () => {
    const out = join(dir, 'x.pcapng');
    const r = cli(['export', bundle, '--pcap', out]);
    expect(r.code, r.stderr).toBe(0);
    const got = parseCapture(readFileSync(out)).records;
    const want = parseCapture(readFileSync(pcap)).records;
    expect(got.length).toBe(want.length);
    for (let i = 0; i < want.length; i += 97) {
      expect(got[i]!.ts_ns).toBe(want[i]!.ts_ns);
      expect(Buffer.from(got[i]!.data).equals(Buffer.from(want[i]!.data))).toBe(true);
    }
  });

  it('redact keeps the chunked layout, cuts payloads and pseudonymizes frames and index alike', () => {
    const out = join(dir, 'red.rtb');
    const r = cli(['redact', bundle, '--out', out, '--pseudonymize']);
    expect(r.code, r.stderr).toBe(0);
    const db = open(out);
    const n = (db.prepare('SELECT sum(packets) AS n FROM packet_chunks').get() as { n: number }).n;
    const rows = db.prepare('SELECT src, dst, chunk_id, chunk_off, data FROM packets').all() as Array<{ src: string; dst: string; chunk_id: number; data: unknown }>;
    const chunks = db.prepare('SELECT data FROM packet_chunks').all() as Array<{ data: Buffer }>;
    db.close();
    expect(n).toBe(synth.packets);
    expect(rows.length).toBe(expectedIndex(pcap).length);
    for (const x of rows) { expect(x.data).toBeNull(); expect(x.chunk_id).not.toBeNull(); }
    // pseudonyms are 10.X.Y.host with X.Y keyed at random: none is an original address (a prefix test
    // would fail whenever the key picks X = 244 or 42, ~2 % of runs)
    const addrs = new Set(rows.flatMap((x) => [x.src, x.dst]));
    const src = open(bundle);
    const origAddrs = new Set((src.prepare('SELECT src, dst FROM packets').all() as Array<{ src: string; dst: string }>).flatMap((x) => [x.src, x.dst]));
    src.close();
    expect(origAddrs.size).toBeGreaterThan(10);
    expect([...addrs].filter((a) => origAddrs.has(a))).toEqual([]);
    // no payload byte (the generator fills payloads with 'a') and no original address survives in the frames
    const orig = Buffer.from([10, 244, 0]);
    for (const c of chunks) for (const f of chunkFrames(c.data)) {
      const ip = Buffer.from(f.data).subarray(14);
      expect(ip.subarray(12, 15).equals(orig) || ip.subarray(16, 19).equals(orig)).toBe(false);
      if (ip[9] === 6) expect(f.caplen).toBe(14 + 20 + 20);
    }
  });

  it('merge puts both nodes\' frames in chunks on node/iface and rebuilds the index', async () => {
    const a = join(dir, 'a.rtb'), b = join(dir, 'b.rtb');
    copyFileSync(bundle, a); copyFileSync(bundle, b);
    for (const [f, node] of [[a, 'node-a'], [b, 'node-b']] as const) {
      const db = new Database(f);
      db.prepare("INSERT OR REPLACE INTO meta(key, value) VALUES ('hostname', ?)").run(node);
      db.close();
    }
    const out = join(dir, 'm.rtb');
    const r = cli(['merge', a, b, '--out', out]);
    expect(r.code, r.stderr).toBe(0);
    const db = open(out);
    const byIface = db.prepare('SELECT iface, sum(packets) AS n FROM packet_chunks GROUP BY iface ORDER BY iface').all();
    const idx = (db.prepare('SELECT count(*) AS n FROM packets WHERE chunk_id IS NOT NULL').get() as { n: number }).n;
    db.close();
    expect(byIface).toEqual([{ iface: 'node-a/synth.pcap', n: synth.packets }, { iface: 'node-b/synth.pcap', n: synth.packets }]);
    expect(idx).toBe(2 * expectedIndex(pcap).length);
  });
});

describe('migration 003', () => {
  it('a schema-2 bundle whose rows hold their bytes still reads and exports them', async () => {
    const old = join(dir, 'v2.rtb');
    copyFileSync(join(ROOT, 'fixtures', 'bundles', 'race-synthetic.rtb'), old);
    const recs = parseCapture(readFileSync(join(ROOT, 'fixtures', 'pcap', 'eth-ns.pcap'))).records;
    const db = new Database(old);
    expect(db.pragma('user_version', { simple: true })).toBe(2);
    db.exec('DELETE FROM packets');
    const ins = db.prepare(`INSERT INTO packets(ts_ns, iface, linktype, caplen, len, l3, src, dst, proto, sport, dport, tcp_flags, seq, ack, payload_len,
      icmp_type, icmp_code, inner_src, inner_dst, inner_proto, inner_sport, inner_dport, data) VALUES (@ts_ns, 'eth0', @linktype, @caplen, @len, @l3, @src, @dst,
      @proto, @sport, @dport, @tcp_flags, @seq, @ack, @payload_len, @icmp_type, @icmp_code, @inner_src, @inner_dst, @inner_proto, @inner_sport, @inner_dport, @data)`);
    for (const r of recs) ins.run({ ts_ns: r.ts_ns, ...decodeFrame(r.linktype, r.data, r.caplen, r.len), data: Buffer.from(r.data) });
    db.close();
    const reader = await BundleReader.open(old);
    try {
      expect(reader.schemaVersion).toBe(2);
      expect(reader.hasChunks()).toBe(false);
      expect(reader.has('packet_chunks')).toBe(true);
      expect(reader.frameCount()).toBe(recs.length);
    } finally { reader.close(); }
    const out = join(dir, 'v2.pcapng');
    const r = cli(['export', old, '--pcap', out]);
    expect(r.code, r.stderr).toBe(0);
    const got = parseCapture(readFileSync(out)).records;
    expect(got.map((x) => Buffer.from(x.data).toString('hex'))).toEqual(recs.map((x) => Buffer.from(x.data).toString('hex')));
    // the original file is untouched: still schema 2
    const again = open(old);
    expect(again.pragma('user_version', { simple: true })).toBe(2);
    again.close();
  });
});

describe('timeline --packets on chunks', () => {
  it('lists every frame, not only the index', () => {
    const small = join(dir, 'small.rtb');
    expect(cli(['import', '--out', small, '--pcap', join(ROOT, 'fixtures', 'pcap', 'eth-ns.pcap')]).code).toBe(0);
    const all = cli(['timeline', small, '--source', 'packets', '--packets']);
    const some = cli(['timeline', small, '--source', 'packets']);
    expect(all.code, all.stderr).toBe(0);
    expect(some.code, some.stderr).toBe(0);
    const lines = (s: string) => s.split('\n').filter((l) => /\[packets\]/.test(l)).length;
    expect(lines(all.stdout)).toBe(30);
    // without --packets: the index's SYN/FIN/RST and ICMP error rows (its first-payload rows are not shown)
    expect(lines(some.stdout)).toBe(9);
  });
});
