/**
 * Issue 13, one regression test per cause, through the real CLI (test/helpers/cli.ts): each of these
 * gave a stack trace, a multi-line error or unbounded memory/disk before its fix.
 */
import { spawn } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import Database from 'better-sqlite3';
import { afterAll, describe, expect, it } from 'vitest';
import { CaptureStreamParser, parseCapture } from '../recorder/decode/pcapfile.js';
import { BIN, cli, type CliResult } from './helpers/cli.js';
import { deepJson, FIX, pcapFile, synFrame } from './helpers/fuzz-gen.js';

const dir = mkdtempSync(join(tmpdir(), 'rt-hostile13-'));
/** a private $TMPDIR: what the CLI leaves there is visible */
const TMP = join(dir, 'tmp');
mkdirSync(TMP);
const env = { ...process.env, TMPDIR: TMP };
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const RACE = join(FIX, 'bundles/race-synthetic.rtb');
let n = 0;
function copy(name: string): string { const f = join(dir, `${n++}-${name}.rtb`); copyFileSync(RACE, f); return f; }
function edit(f: string, fn: (db: Database.Database) => void): string {
  const db = new Database(f);
  try { db.pragma('journal_mode = DELETE'); fn(db); } finally { db.close(); }
  return f;
}
const run = (args: string[]) => cli(args, { env });
function noStack(r: CliResult): void {
  expect(r.stderr).not.toMatch(/^\s+at /m);
  expect(r.stderr).not.toMatch(/internal error|\b[A-Z]\w*Error: /);
}
function oneLine(r: CliResult, file: string, re?: RegExp): void {
  expect(r.code, r.stderr).toBe(2);
  const lines = r.stderr.split('\n').filter(Boolean);
  expect(lines, r.stderr).toHaveLength(1);
  expect(lines[0]).toMatch(/^rolltrace: /);
  expect(lines[0]).toContain(file);
  if (re) expect(lines[0]).toMatch(re);
  noStack(r);
}

describe('cause 1: pcap link type read with libpcap\'s mask (0x03ffffff), flags ignored', () => {
  it('the parser takes 0x04000001 (tcpdump\'s bootp_asan.pcap: FCS flag | Ethernet) as Ethernet', () => {
    for (const lt of [0x04000001, 0xf4000001, 0xfc000001]) {
      const r = parseCapture(pcapFile({ linktype: lt, records: [{ sec: 1_790_000_000, frac: 5, data: synFrame() }] }));
      expect(r.records[0]!.linktype).toBe(1);
    }
    // reserved bits inside the mask stay: that is not a link type pcapng can hold
    expect(parseCapture(pcapFile({ linktype: 0x00010001, records: [{ sec: 1, frac: 0, data: synFrame() }] })).records[0]!.linktype).toBe(0x10001);
  });

  it('import decodes its frames and export writes them', () => {
    const pcap = join(dir, 'fcs-flag.pcap');
    writeFileSync(pcap, pcapFile({ linktype: 0x04000001, records: [{ sec: 1_790_000_000, frac: 5, data: synFrame() }] }));
    const b = join(dir, 'fcs-flag.rtb');
    const imp = run(['import', '--out', b, '--pcap', pcap]);
    expect(imp.code, imp.stderr).toBe(0);
    const db = new Database(b, { readonly: true });
    const row = db.prepare('SELECT linktype, src, dst, sport, dport, tcp_flags FROM packets').get();
    db.close();
    expect(row).toEqual({ linktype: 1, src: '10.0.0.1', dst: '10.0.0.2', sport: 40000, dport: 80, tcp_flags: 2 });
    const out = join(dir, 'fcs-flag.pcapng');
    const ex = run(['export', b, '--pcap', out]);
    expect(ex.code, ex.stderr).toBe(0);
    noStack(ex);
    const back = parseCapture(readFileSync(out));
    expect(back.records.map((r) => [r.linktype, r.ts_ns])).toEqual([[1, 1_790_000_000_000_005_000]]);
  });
});

describe('cause 2: export skips timestamps pcapng cannot hold, never throws', () => {
  it('negative, ≥ 2^64 ns, text and blob timestamps and impossible link types are skipped and counted', () => {
    const f = edit(copy('ts'), (db) => {
      const ids = (db.prepare('SELECT id FROM packets ORDER BY id LIMIT 6').all() as Array<{ id: number }>).map((r) => r.id);
      const set = db.prepare('UPDATE packets SET ts_ns = ? WHERE id = ?');
      set.run(-1, ids[0]); set.run(2 ** 64, ids[1]); set.run('2026-11-21T20:31:10Z', ids[2]); set.run(Buffer.from([1, 2]), ids[3]);
      db.prepare('UPDATE packets SET linktype = ? WHERE id = ?').run(67108865, ids[4]);
      db.prepare('UPDATE packets SET linktype = ? WHERE id = ?').run(-1, ids[5]);
    });
    const total = (new Database(f, { readonly: true }).prepare('SELECT count(*) AS n FROM packets').get() as { n: number }).n;
    const out = join(dir, 'ts.pcapng');
    const r = run(['export', f, '--pcap', out]);
    expect(r.code, r.stderr).toBe(0);
    noStack(r);
    expect(r.stdout).toMatch(/skipped rows pcapng cannot hold: 4 timestamp outside 0\.\.2\^64 ns or not an integer, 2 link type not in 0\.\.65535/);
    expect(parseCapture(readFileSync(out)).records).toHaveLength(total - 6);
  });
});

describe('cause 3: old or zeroed schema versions open without re-running the migrations', () => {
  for (const v of [0, 1, -1]) {
    it(`user_version ${v}: verify, export and analyze read the bundle`, () => {
      const f = edit(copy(`uv${v}`), (db) => db.pragma(`user_version = ${v}`));
      const ver = run(['verify', f]);
      expect(ver.code, ver.stderr).toBe(0);
      expect(ver.stdout).toMatch(new RegExp(`schema: +v${v} `));
      const ex = run(['export', f, '--pcap', join(dir, `uv${v}.pcapng`)]);
      expect(ex.code, ex.stderr).toBe(0);
      const a = run(['analyze', f, '--format', 'json']);
      expect(a.code).toBe(1);
      expect(JSON.parse(a.stdout).failures).toHaveLength(2);
      expect(readdirSync(TMP).filter((x) => x.startsWith('rolltrace-'))).toEqual([]);
    });
  }
});

describe('causes 4 and 6: verify reads what it can, and its exit-2 message is one line', () => {
  it('a damaged index page: integrity text (with SQLite\'s newlines) on one line, the unreadable count as -1', () => {
    const f = copy('page');
    const db = new Database(f, { readonly: true });
    const { rootpage } = db.prepare("SELECT rootpage FROM sqlite_master WHERE name = 'nft_snapshots_ts'").get() as { rootpage: number };
    const raw = (db.pragma('page_size', { simple: true }) as number);
    db.close();
    const buf = readFileSync(f);
    buf.fill(0, (rootpage - 1) * raw, rootpage * raw);
    writeFileSync(f, buf);
    // what SQLite returns: one row holding several lines
    const check = new Database(f, { readonly: true });
    expect(String((check.pragma('integrity_check(20)') as Array<{ integrity_check: string }>)[0]!.integrity_check)).toContain('\n');
    check.close();
    const r = run(['verify', f]);
    oneLine(r, f, /integrity check failed: \*\*\* in database main \*\*\*; Tree \d+ page \d+/);
    expect(r.stdout).toMatch(/nft_snapshots=-1/);
    const j = run(['verify', '--json', f]);
    expect(j.code).toBe(2);
    expect(JSON.parse(j.stdout).problems.join(' ')).toMatch(/count of nft_snapshots/);
  });

  it('sources rows with a NULL name or status', () => {
    const f = edit(copy('nullsrc'), (db) => {
      db.exec("INSERT INTO sources(name, status, events, dropped, clock) VALUES (NULL, 'ok', 1, 0, 'kernel')");
      db.pragma('legacy_alter_table = ON');
      db.exec('CREATE TABLE s2 AS SELECT * FROM sources; DROP TABLE sources; ALTER TABLE s2 RENAME TO sources;');
      db.exec("UPDATE sources SET status = NULL, events = 'many' WHERE name = 'strace'");
    });
    const r = run(['verify', f]);
    expect(r.code, r.stderr).toBe(0);
    noStack(r);
    expect(r.stdout).toMatch(/^ {2}strace +events=0 dropped=0 clock=kernel/m);
    expect(r.stdout).toMatch(/^ {17}ok +events=1/m);
  });
});

describe('cause 5: attrs nested 200,000 deep', () => {
  // an object at the top (as attrs are), the depth below it
  const f = edit(copy('deep'), (db) => db.prepare("UPDATE events SET attrs = ? WHERE kind = 'signal'").run(`{"pid":1,"x":${deepJson(200_000)}}`));
  it('timeline prints the event without its attrs', () => {
    const r = run(['timeline', f]);
    expect(r.code, r.stderr).toBe(0);
    noStack(r);
    expect(r.stdout).toMatch(/\[(strace|ebpf)\] +signal/);
  });
  it('redact drops the value whole (it cannot be walked for secrets)', () => {
    const out = join(dir, 'deep-red.rtb');
    const r = run(['redact', f, '--out', out]);
    expect(r.code, r.stderr).toBe(0);
    noStack(r);
    const db = new Database(out, { readonly: true });
    const attrs = (db.prepare("SELECT attrs FROM events WHERE kind = 'signal'").all() as Array<{ attrs: string }>).map((x) => JSON.parse(x.attrs));
    db.close();
    expect(attrs[0]).toEqual({ redacted: 'JSON nested deeper than 512 levels removed' });
  });
  it('merge reads the attrs as empty', () => {
    const other = edit(join(dir, 'node2.rtb'), () => undefined);
    copyFileSync(join(FIX, 'bundles/prestop-synthetic.rtb'), other);
    edit(other, (db) => db.prepare("UPDATE meta SET value = 'node2' WHERE key IN ('node', 'hostname')").run());
    const r = run(['merge', f, other, '--out', join(dir, 'deep-merged.rtb')]);
    expect(r.code, r.stderr).toBe(0);
    noStack(r);
  });
});

describe('cause 7: import reads text line by line with an 8 MiB limit', () => {
  it('a 50 MB line of `[` in a --watch file is skipped, counted as dropped, in bounded memory', () => {
    const src = readFileSync(join(FIX, 'watch/rollout-watch.jsonl'), 'utf8').split('\n');
    const w = join(dir, 'watch-50mb.jsonl');
    writeFileSync(w, [src[0], '['.repeat(50 * 1024 * 1024), ...src.slice(1)].join('\n'));
    const out = join(dir, 'watch-50mb.rtb');
    const r = cli(['import', '--out', out, '--watch', w], { env, peakRss: true });
    expect(r.code, r.stderr).toBe(0);
    expect(r.peakRssKb).toBeGreaterThan(0);
    expect(r.peakRssKb!).toBeLessThan(500 * 1024);
    const db = new Database(out, { readonly: true });
    const s = db.prepare("SELECT dropped, detail FROM sources WHERE name = 'import:kube'").get() as { dropped: number; detail: string };
    db.close();
    expect(s.dropped).toBeGreaterThanOrEqual(1);
    expect(s.detail).toMatch(/1 line\(s\) longer than 8 MiB skipped/);
  });

  it('a --watch file too large to hold is refused up front (a sparse 300 MB file: nothing is read)', () => {
    const w = join(dir, 'huge-watch.jsonl');
    writeFileSync(w, readFileSync(join(FIX, 'watch/rollout-watch.jsonl')));
    truncateSync(w, 300 * 1024 * 1024);
    const r = cli(['import', '--out', join(dir, 'huge.rtb'), '--watch', w], { env, peakRss: true });
    oneLine(r, w, /more than the 256 MiB import holds in memory/);
    expect(r.peakRssKb!).toBeLessThan(200 * 1024);
    expect(existsSync(join(dir, 'huge.rtb'))).toBe(false);
  });

  it('a killed import removes its partial files; one killed with SIGKILL is swept by the next import of the same --out', async () => {
    const log = join(dir, 'big-strace.txt');
    const line = readFileSync(join(FIX, 'strace/attach-sigterm.txt'), 'utf8');
    writeFileSync(log, line.repeat(400));
    const outDir = join(dir, 'killed');
    mkdirSync(outDir);
    const out = join(outDir, 'k.rtb');
    const child = spawn(BIN, ['import', '--out', out, '--strace', log], { env, stdio: 'ignore' });
    const tmp = `${out}.importing-${child.pid}`;
    const t0 = Date.now();
    while (!existsSync(tmp) && Date.now() - t0 < 20_000) await new Promise((r) => setTimeout(r, 5));
    expect(existsSync(tmp)).toBe(true);
    const exit = new Promise<NodeJS.Signals | null>((res) => child.on('exit', (_c, s) => res(s)));
    child.kill('SIGTERM');
    expect(await exit).toBe('SIGTERM');
    expect(readdirSync(outDir)).toEqual([]);
    // SIGKILL cannot be caught: what a dead import left is removed by the next one
    for (const s of ['', '-wal', '-shm']) writeFileSync(`${out}.importing-999999${s}`, 'x');
    const r = run(['import', '--out', out, '--strace', join(FIX, 'strace/attach-sigterm.txt')]);
    expect(r.code, r.stderr).toBe(0);
    expect(readdirSync(outDir)).toEqual(['k.rtb']);
  });
});

describe('cause 8: a .rtb.gz is inflated within a bound', () => {
  const head = readFileSync(RACE).subarray(0, 4096);
  it('a gzip bomb declaring its size is refused before inflating', () => {
    const f = join(dir, 'bomb.rtb.gz');
    writeFileSync(f, gzipSync(Buffer.concat([head, Buffer.alloc(200 * 1024 * 1024)]), { level: 9 }));
    expect(statSync(f).size).toBeLessThan(1024 * 1024);
    const r = cli(['verify', f], { env, peakRss: true });
    oneLine(r, f, /gzip declares 209719296 bytes, more than 100× its compressed size/);
    expect(readdirSync(TMP).filter((x) => x.startsWith('rolltrace-'))).toEqual([]);
  });
  it('a bomb whose trailer lies is stopped at the declared size', () => {
    const f = join(dir, 'liar.rtb.gz');
    const z = gzipSync(Buffer.concat([head, Buffer.alloc(100 * 1024 * 1024)]), { level: 9 });
    z.writeUInt32LE(8192, z.length - 4);
    writeFileSync(f, z);
    for (const cmd of ['verify', 'analyze', 'timeline']) oneLine(run([cmd, f]), f, /gzip inflates beyond its declared size of 8192 bytes/);
    expect(readdirSync(TMP).filter((x) => x.startsWith('rolltrace-'))).toEqual([]);
  });
  it('an honest .rtb.gz still opens', () => {
    const f = join(dir, 'ok.rtb.gz');
    writeFileSync(f, gzipSync(readFileSync(RACE)));
    const r = run(['analyze', f, '--format', 'json']);
    expect(r.code).toBe(1);
    expect(JSON.parse(r.stdout).failures).toHaveLength(2);
  });
});

describe('the stream parser refuses what libpcap refuses', () => {
  it('a pcapng block longer than 16 MiB is an error, not a reason to buffer the whole file', () => {
    const p = new CaptureStreamParser();
    const shb = Buffer.alloc(28);
    shb.writeUInt32LE(0x0a0d0d0a, 0); shb.writeUInt32LE(28, 4); shb.writeUInt32LE(0x1a2b3c4d, 8); shb.writeUInt32LE(28, 24);
    const big = Buffer.alloc(12);
    big.writeUInt32LE(6, 0); big.writeUInt32LE(0x7ffffff0, 4);
    expect(() => p.push(Buffer.concat([shb, big]))).toThrow(/impossible length 2147483632/);
  });
});
