/**
 * The packet pass read from the bundle file's pages (analyzer/model/packet-pages.ts) against the same pass
 * in SQL: the same candidates, field for field, on an imported capture, on rows of every odd shape the
 * reader hands to SQL by id, on rows out of time order; and the reader declines (SQL reads instead) a file
 * it must not read itself: frames stored in the rows (overflow pages), a write-ahead log with frames in it,
 * a TEMP index, a damaged page.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { copyFileSync, mkdtempSync, openSync, readSync, rmSync, writeSync, closeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { cli } from './helpers/cli.js';
import { writeSynthPcap } from './helpers/synth-pcap.js';
import { BundleReader } from '../analyzer/bundle-reader.js';
import { FailureDetector, scanPackets } from '../analyzer/model/failures.js';
import { PassRowsCollector, readPassRows, type PassRows } from '../analyzer/model/packet-pages.js';
import { BundleWriter } from '../recorder/bundle-writer.js';
import { PcapStreamCutter } from '../schemas/decode/chunks.js';
import { readFileSync } from 'node:fs';

let dir: string;
let bundle: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'rt-pages-'));
  const pcap = join(dir, 'synth.pcap');
  writeSynthPcap(pcap, 30_000, 11);
  bundle = join(dir, 'synth.rtb');
  const r = cli(['import', '--out', bundle, '--pcap', pcap]);
  expect(r.code, r.stderr).toBe(0);
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

let n = 0;
function copy(): string {
  const f = join(dir, `copy-${n++}.rtb`);
  copyFileSync(bundle, f);
  return f;
}

/** the pass both ways on one bundle: what each detector ends with, and whether the pages were read */
async function both(file: string): Promise<{ pages: unknown; sql: unknown; read: ReturnType<typeof readPassRows> }> {
  const reader = await BundleReader.open(file);
  try {
    const read = readPassRows(reader.db, reader.openedPath);
    const run = (pages: boolean) => {
      const d = new FailureDetector();
      scanPackets(d, reader, { pages });
      const lastTs = d.lastTs;
      d.sweep(d.lastTs, true);
      return { candidates: d.candidates(), lastTs, beforeCapture: d.beforeCapture };
    };
    return { pages: run(true), sql: run(false), read };
  } finally { reader.close(); }
}

/** a bundle laid out as `record` writes it (chunks only, meta packets_index = deferred), one or two interfaces */
function recorded(ifaces: string[]): string {
  const f = join(dir, `rec-${n++}.rtb`);
  const w = new BundleWriter(f, { createdBy: 'record' });
  w.setSource('packets', { status: 'running', clock: 'kernel' });
  const bytes = readFileSync(join(dir, 'synth.pcap'));
  const cutters = ifaces.map((i) => new PcapStreamCutter(w.chunkSink('packets', { indexed: false }), i, 64 * 1024));
  // the same capture seen on each interface, chunks interleaved: time order only across interfaces
  for (let o = 0; o < bytes.length; o += 100_000) cutters.forEach((c) => c.push(bytes.subarray(o, o + 100_000)));
  cutters.forEach((c) => c.end());
  w.setSource('packets', { status: 'ok', clock: 'kernel' });
  w.close();
  return f;
}

describe('the packet pass from the index built on open', () => {
  for (const ifaces of [['eth0'], ['eth0', 'eth1']]) {
    it(`a recorded bundle (${ifaces.length} interface(s)): the rows collected as the TEMP index is built, the same pass as SQL's`, async () => {
      const f = recorded(ifaces);
      const reader = await BundleReader.open(f);
      try {
        expect(reader.ensurePacketIndex()).toBeGreaterThan(1000);
        const run = (pages: boolean) => {
          const d = new FailureDetector();
          scanPackets(d, reader, { pages });
          d.sweep(d.lastTs, true);
          return { candidates: d.candidates(), beforeCapture: d.beforeCapture };
        };
        // what the pass takes (once: the SQL pass after it reads the TEMP table)
        let rows: PassRows | null = null;
        const take = reader.takePassRows.bind(reader);
        reader.takePassRows = () => (rows = take());
        const collected = run(true);
        const sql = run(false);
        expect(rows).not.toBeNull();
        expect(rows!.n).toBe((reader.db.prepare('SELECT count(*) AS n FROM packets').get() as { n: number }).n);
        expect(rows!.order === null).toBe(ifaces.length === 1);
        expect(take()).toBeNull();
        expect(sql.candidates.length).toBeGreaterThan(10);
        expect(collected).toEqual(sql);
      } finally { reader.close(); }
    });
  }
});

describe('the packet pass from the pages', () => {
  it('reads an imported capture in table order and finds what SQL finds, candidate for candidate', async () => {
    const r = await both(bundle);
    expect(r.read).not.toBeNull();
    const db = new Database(bundle, { readonly: true });
    const count = (db.prepare("SELECT count(*) AS n FROM packets").get() as { n: number }).n;
    db.close();
    expect(r.read!.n).toBe(count);
    expect(r.read!.order).toBeNull();
    expect((r.pages as { candidates: unknown[] }).candidates.length).toBeGreaterThan(10);
    expect(r.pages).toEqual(r.sql);
  });

  it('hands odd rows to SQL by id, in their place, and sorts rows out of time order exactly (64-bit timestamps)', async () => {
    const f = copy();
    const db = new Database(f);
    const first = db.prepare("SELECT * FROM packets WHERE proto = 'tcp' AND tcp_flags = 2 ORDER BY id LIMIT 1").get() as Record<string, unknown>;
    const t0 = BigInt(db.prepare('SELECT ts_ns FROM packets ORDER BY id LIMIT 1').pluck().safeIntegers(true).get() as bigint);
    const ins = db.prepare(`INSERT INTO packets(ts_ns, iface, linktype, caplen, len, l3, src, dst, proto, sport, dport, tcp_flags, payload_len, icmp_type, icmp_code, inner_src, inner_dst, inner_proto, inner_sport, inner_dport)
      VALUES (?, ?, 1, 60, 60, 'ip4', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`).safeIntegers(true);
    const at = (d: bigint) => t0 + d;
    // a SYN before every other row, inserted last: the order must come from the timestamps; two rows 1 ns
    // apart at ~1.8e18 ns (the same double) must keep their exact order
    ins.run(at(-5_000_000n), 'eth0', '10.9.0.1', '10.9.0.2', 'tcp', 40000n, 80n, 2n, 0n, null, null, null, null, null, null, null);
    ins.run(at(-4_000_001n), 'eth0', '10.9.0.2', '10.9.0.1', 'tcp', 80n, 40000n, 4n, 0n, null, null, null, null, null, null, null);
    ins.run(at(-4_000_002n), 'eth0', '10.9.0.2', '10.9.0.1', 'tcp', 80n, 40000n, 18n, 0n, null, null, null, null, null, null, null);
    // text flags, a port as text, a NULL address, non-ASCII and NUL in text, a real port, a blob address
    ins.run(at(1000n), 'eth0', '10.9.1.1', '10.9.1.2', 'tcp', 40001n, 80n, 'SYN', 0n, null, null, null, null, null, null, null);
    ins.run(at(1001n), 'eth0', '10.9.1.3', '10.9.1.4', 'tcp', '40002', 80n, 2n, 0n, null, null, null, null, null, null, null);
    ins.run(at(1002n), 'eth0', null, '10.9.1.4', 'tcp', 40003n, 80n, 2n, 0n, null, null, null, null, null, null, null);
    ins.run(at(1003n), 'ëth0', '10.9.1.5', '10.9.1.6', 'tcp', 40004n, 80n, 2n, 0n, null, null, null, null, null, null, null);
    ins.run(at(1004n), 'eth\u00000', '10.9.1.7', '10.9.1.8', 'tcp', 40005n, 80n, 2n, 0n, null, null, null, null, null, null, null);
    ins.run(at(1005n), 'eth0', '10.9.1.9', '10.9.1.10', 'tcp', 40006.5, 80n, 2n, 0n, null, null, null, null, null, null, null);
    ins.run(at(1006n), 'eth0', Buffer.from('10.9.1.11'), '10.9.1.12', 'tcp', 40007n, 80n, 2n, 0n, null, null, null, null, null, null, null);
    // non-canonical addresses (leading zero, IPv6) take the hashed path
    ins.run(at(1007n), 'eth0', '10.09.1.13', 'fd00::1', 'tcp', 40008n, 80n, 2n, 0n, null, null, null, null, null, null, null);
    ins.run(at(1008n), 'eth0', 'fd00::1', '10.09.1.13', 'tcp', 80n, 40008n, 4n, 0n, null, null, null, null, null, null, null);
    // an ICMP unreachable about the first SYN of the capture, a UDP row the pass skips, flags beyond int32
    ins.run(at(2000n), 'eth0', String(first.dst), String(first.src), 'icmp', null, null, null, null, 3n, 3n, String(first.src), String(first.dst), 'tcp', BigInt(first.sport as number), BigInt(first.dport as number));
    ins.run(at(2001n), 'eth0', '10.9.2.1', '10.9.2.2', 'udp', 53n, 53n, null, 10n, null, null, null, null, null, null, null);
    ins.run(at(2002n), 'eth0', '10.9.2.3', '10.9.2.4', 'tcp', 40009n, 80n, 1n << 40n, 0n, null, null, null, null, null, null, null);
    db.close();
    const r = await both(f);
    expect(r.read).not.toBeNull();
    expect(r.read!.order).not.toBeNull();
    expect(r.pages).toEqual(r.sql);
    const got = (r.pages as { candidates: { client: string; cport: number | null; kinds: Set<string> }[] }).candidates;
    // its SYN-ACK 1 ns before its RST (the same double): reset after the handshake, not refused
    expect(got.filter((c) => c.client === '10.9.0.1' && c.cport === 40000).map((c) => [...c.kinds])).toEqual([['rst-before-response']]);
  });

  it('keeps at most maxRows rows: past that the pass reads SQL a row at a time (memory bounded by the capture)', async () => {
    const reader = await BundleReader.open(bundle);
    try {
      const all = readPassRows(reader.db, reader.openedPath)!;
      expect(all.n).toBeGreaterThan(1000);
      expect(readPassRows(reader.db, reader.openedPath, all.n)!.n).toBe(all.n);
      expect(readPassRows(reader.db, reader.openedPath, all.n - 1)).toBeNull();
    } finally { reader.close(); }
    const c = new PassRowsCollector(2);
    const row = { ts_ns: 1e18, iface: 'eth0', src: '10.0.0.1', dst: '10.0.0.2', proto: 'tcp', sport: 1, dport: 2, tcp_flags: 2, payload_len: 0 };
    c.add(1, row); c.add(2, row);
    expect(new PassRowsCollector(2).done()?.n).toBe(0);
    c.add(3, row);
    expect(c.done()).toBeNull();
  });

  it('leaves to SQL a bundle whose rows spill onto overflow pages, a TEMP index, a log with frames, a damaged page', async () => {
    // frames stored in the rows (bundles of schema 2 keep them in packets.data)
    const big = copy();
    let db = new Database(big);
    db.prepare("UPDATE packets SET data = zeroblob(9000) WHERE id = (SELECT min(id) FROM packets)").run();
    db.close();
    let r = await both(big);
    expect(r.read).toBeNull();
    expect(r.pages).toEqual(r.sql);

    // a TEMP table shadowing packets on the reader's connection
    const reader = await BundleReader.open(copy());
    try {
      reader.db.pragma('query_only = OFF');
      reader.db.exec('CREATE TEMP TABLE packets AS SELECT * FROM main.packets LIMIT 10');
      expect(readPassRows(reader.db, reader.openedPath)).toBeNull();
    } finally { reader.close(); }

    // a writer with frames in its write-ahead log, not yet checkpointed
    const wal = copy();
    db = new Database(wal);
    db.pragma('journal_mode = WAL');
    db.pragma('wal_autocheckpoint = 0');
    db.prepare("DELETE FROM packets WHERE id IN (SELECT id FROM packets WHERE proto = 'tcp' AND tcp_flags = 18 LIMIT 50)").run();
    try {
      r = await both(wal);
      expect(r.read).toBeNull();
      expect(r.pages).toEqual(r.sql);
    } finally { db.close(); }

    // a leaf page of packets with a damaged page type: the reader gives up without a throw
    const bad = copy();
    db = new Database(bad, { readonly: true });
    const leaf = (db.prepare("SELECT pageno FROM dbstat WHERE name = 'packets' AND pagetype = 'leaf' ORDER BY pageno DESC LIMIT 1").pluck().get()) as number;
    const pageSize = db.pragma('page_size', { simple: true }) as number;
    db.close();
    const fd = openSync(bad, 'r+');
    const b = Buffer.alloc(1);
    readSync(fd, b, 0, 1, (leaf - 1) * pageSize);
    expect(b[0]).toBe(0x0d);
    writeSync(fd, Buffer.from([0x07]), 0, 1, (leaf - 1) * pageSize);
    closeSync(fd);
    const rb = await BundleReader.open(bad);
    try { expect(readPassRows(rb.db, rb.openedPath)).toBeNull(); } finally { rb.close(); }
  });
});
