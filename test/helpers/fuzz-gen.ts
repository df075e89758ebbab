/**
 * Seeded generators of damaged inputs for the hostile-input fuzz test (test/hostile-fuzz.test.ts) and
 * the regression tests: damaged bundles (byte flips, truncations, zeroed pages, SQL edits of type,
 * NULL, range, depth and size, schema versions, gzip bombs), damaged captures (pcap and pcapng, header
 * fields and blocks edited) and damaged text logs (strace, nft monitor, watch, conntrack). Everything is
 * a pure function of the seed: a failure names its case and reproduces.
 */
import { closeSync, copyFileSync, openSync, readFileSync, statSync, truncateSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import Database from 'better-sqlite3';

export const FIX = join(import.meta.dirname, '..', '..', 'fixtures');

/** xorshift32: deterministic, seedable, good enough to pick damage */
export class Rng {
  private x: number;
  constructor(seed: number) { this.x = (seed >>> 0) || 0x9e3779b9; }
  u32(): number { let x = this.x; x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0; this.x = x; return x; }
  int(n: number): number { return this.u32() % n; }
  pick<T>(xs: readonly T[]): T { return xs[this.int(xs.length)]!; }
  bytes(n: number): Buffer { const b = Buffer.alloc(n); for (let i = 0; i < n; i++) b[i] = this.u32() & 0xff; return b; }
}

/** `[[[…]]]` nested `depth` levels (the campaign used 200,000) */
export const deepJson = (depth: number): string => '['.repeat(depth) + ']'.repeat(depth);

function flipBytes(file: string, rng: Rng, n: number, from = 0): void {
  const size = statSync(file).size;
  const fd = openSync(file, 'r+');
  try {
    for (let i = 0; i < n; i++) {
      const at = from + rng.int(Math.max(1, size - from));
      const b = Buffer.alloc(1);
      b[0] = rng.u32() & 0xff;
      writeSync(fd, b, 0, 1, at);
    }
  } finally { closeSync(fd); }
}

function pageInfo(file: string): { size: number; pages: number; roots: Record<string, number> } {
  const db = new Database(file, { readonly: true });
  try {
    const size = db.pragma('page_size', { simple: true }) as number;
    const roots: Record<string, number> = {};
    for (const r of db.prepare("SELECT name, rootpage FROM sqlite_master WHERE rootpage > 0").all() as Array<{ name: string; rootpage: number }>) roots[r.name] = r.rootpage;
    return { size, pages: Math.floor(statSync(file).size / size), roots };
  } finally { db.close(); }
}

function zeroPage(file: string, page: number, size: number): void {
  const fd = openSync(file, 'r+');
  try { writeSync(fd, Buffer.alloc(size), 0, size, (page - 1) * size); } finally { closeSync(fd); }
}

const TS_COLS: Record<string, string> = { events: 'ts_ns', packets: 'ts_ns', conntrack: 'ts_ns', k8s_objects: 'ts_ns', nft_snapshots: 'ts_ns', probe_requests: 'start_ns' };
const NULLABLE: Record<string, string[]> = {
  events: ['ts_ns', 'source', 'kind', 'subject', 'attrs'],
  packets: ['ts_ns', 'iface', 'linktype', 'caplen', 'len', 'src', 'dst', 'sport', 'dport', 'tcp_flags', 'data'],
  sources: ['name', 'status', 'events', 'dropped', 'clock', 'detail'],
  k8s_objects: ['ts_ns', 'kind', 'name', 'object', 'event_type'],
  probe_requests: ['start_ns', 'end_ns', 'remote', 'outcome'],
  meta: ['value'],
  nft_snapshots: ['ts_ns', 'ruleset', 'format'],
};
/** values a damaged or hand-edited bundle may hold where a timestamp belongs */
const BAD_TS = ["'2026-11-21T20:31:10Z'", "x'00ff'", '-1', '-9e18', '9.3e18', '18446744073709551616.0', '1e300', '1.5', "'NaN'"];

export type BundleDamage =
  | 'flip' | 'truncate' | 'zero-page' | 'zero-root' | 'sql-type' | 'sql-null' | 'sql-range' | 'sql-depth'
  | 'sql-size' | 'schema-version' | 'sql-linktype' | 'gzip' | 'gzip-flip' | 'gzip-bomb' | 'gzip-liar';
export const BUNDLE_DAMAGES: readonly BundleDamage[] = ['flip', 'truncate', 'zero-page', 'zero-root', 'sql-type', 'sql-null', 'sql-range', 'sql-depth', 'sql-size', 'schema-version', 'sql-linktype', 'gzip', 'gzip-flip', 'gzip-bomb', 'gzip-liar'];

function sqlEdit(file: string, fn: (db: Database.Database) => void): void {
  const db = new Database(file);
  try { db.pragma('journal_mode = DELETE'); fn(db); } finally { db.close(); }
}

/**
 * Write a damaged copy of `base` to `dir` and return its path (`.rtb`, or `.rtb.gz` for the gzip kinds)
 * and what was done to it.
 */
export function damageBundle(base: string, dir: string, name: string, kind: BundleDamage, rng: Rng, opts: { bigString?: number; depth?: number } = {}): { file: string; what: string } {
  const file = join(dir, `${name}.rtb`);
  copyFileSync(base, file);
  const rows = (db: Database.Database, t: string) => (db.prepare(`SELECT rowid AS r FROM ${t}`).all() as Array<{ r: number }>).map((x) => x.r);
  const someRow = (db: Database.Database, t: string) => { const r = rows(db, t); return r.length ? rng.pick(r) : -1; };
  switch (kind) {
    case 'flip': { const n = 1 + rng.int(64); flipBytes(file, rng, n, rng.int(4) === 0 ? 0 : 100); return { file, what: `${n} random bytes` }; }
    case 'truncate': { const f = 0.05 + rng.int(90) / 100; truncateSync(file, Math.floor(statSync(file).size * f)); return { file, what: `truncated to ${f.toFixed(2)}` }; }
    case 'zero-page': { const p = pageInfo(file); const pg = 2 + rng.int(p.pages - 1); zeroPage(file, pg, p.size); return { file, what: `page ${pg} zeroed` }; }
    case 'zero-root': { const p = pageInfo(file); const t = rng.pick(Object.keys(p.roots)); zeroPage(file, p.roots[t]!, p.size); return { file, what: `root page of ${t} zeroed` }; }
    case 'sql-type': case 'sql-range': {
      const t = rng.pick(Object.keys(TS_COLS));
      const v = kind === 'sql-type' ? rng.pick(BAD_TS.slice(0, 2).concat(["'1e9'", "'+12'", '1.5'])) : rng.pick(BAD_TS.slice(2));
      sqlEdit(file, (db) => { for (let i = 0; i < 1 + rng.int(3); i++) db.exec(`UPDATE ${t} SET ${TS_COLS[t]} = ${v} WHERE rowid = ${someRow(db, t)}`); });
      return { file, what: `${t}.${TS_COLS[t]} = ${v}` };
    }
    case 'sql-null': {
      const t = rng.pick(Object.keys(NULLABLE));
      const c = rng.pick(NULLABLE[t]!);
      // the NOT NULL constraints of the schema are what a hand edit or a damaged page gets around:
      // the table is rebuilt without them (CREATE TABLE AS keeps names and values, drops constraints)
      sqlEdit(file, (db) => {
        db.pragma('legacy_alter_table = ON');
        db.exec(`CREATE TABLE ${t}_x AS SELECT * FROM ${t}; DROP TABLE ${t}; ALTER TABLE ${t}_x RENAME TO ${t};`);
        for (let k = 1 + rng.int(4); k > 0; k--) db.exec(`UPDATE ${t} SET ${c} = NULL WHERE rowid = ${someRow(db, t)}`);
      });
      return { file, what: `${t}.${c} = NULL` };
    }
    case 'sql-linktype': {
      const v = rng.pick(['67108865', '65536', '-1', "'eth'", '1e12', '2.5']);
      sqlEdit(file, (db) => db.exec(`UPDATE packets SET linktype = ${v} WHERE rowid = ${someRow(db, 'packets')}`));
      return { file, what: `packets.linktype = ${v}` };
    }
    case 'sql-depth': {
      const depth = opts.depth ?? 200_000;
      const t = rng.pick(['events.attrs', 'k8s_objects.object', 'nft_snapshots.ruleset', 'meta.value']);
      const [tb, col] = t.split('.') as [string, string];
      // an object at the top, as attrs, objects and rulesets are; the depth below it
      sqlEdit(file, (db) => { const st = db.prepare(`UPDATE ${tb} SET ${col} = ? WHERE rowid = ?`); for (let k = 0; k < 2; k++) st.run(`{"x":${deepJson(depth)}}`, someRow(db, tb)); });
      return { file, what: `${t} nested ${depth} deep` };
    }
    case 'sql-size': {
      const n = opts.bigString ?? 40 * 1024 * 1024;
      const t = rng.pick(['events.subject', 'events.attrs', 'k8s_objects.name', 'sources.detail', 'packets.iface', 'probe_requests.error']);
      const [tb, col] = t.split('.') as [string, string];
      const big = col === 'attrs' ? JSON.stringify({ text: 'x'.repeat(n) }) : 'y'.repeat(n);
      sqlEdit(file, (db) => db.prepare(`UPDATE ${tb} SET ${col} = ? WHERE rowid = ?`).run(big, someRow(db, tb)));
      return { file, what: `${t} ${n} bytes` };
    }
    case 'schema-version': {
      const v = rng.pick([0, 1, -1, -7, 99]);
      sqlEdit(file, (db) => db.pragma(`user_version = ${v}`));
      return { file, what: `user_version ${v}` };
    }
    case 'gzip': case 'gzip-flip': {
      const gz = `${file}.gz`;
      const z = gzipSync(readFileSync(file));
      if (kind === 'gzip-flip') for (let i = 0; i < 1 + rng.int(8); i++) z[10 + rng.int(z.length - 10)] = rng.u32() & 0xff;
      writeFileSync(gz, z);
      return { file: gz, what: kind === 'gzip' ? 'gzip of an intact bundle' : 'gzip with flipped bytes' };
    }
    case 'gzip-bomb': case 'gzip-liar': {
      // a SQLite header followed by 80 MiB of zeros: ~80 KB of gzip
      const gz = `${file}.gz`;
      const head = readFileSync(file).subarray(0, 4096);
      const z = gzipSync(Buffer.concat([head, Buffer.alloc(80 * 1024 * 1024)]), { level: 9 });
      if (kind === 'gzip-liar') z.writeUInt32LE(8192, z.length - 4); // declares 8 KiB
      writeFileSync(gz, z);
      return { file: gz, what: kind === 'gzip-bomb' ? 'gzip bomb (80 MiB from ~80 KB, declared honestly)' : 'gzip bomb declaring 8 KiB' };
    }
  }
}

// ---------------------------------------------------------------------------------------------- captures

/** A classic pcap: header and records, all fields as given (le). */
export function pcapFile(opts: { linktype?: number; nanos?: boolean; records: Array<{ sec: number; frac: number; data: Buffer; caplen?: number; len?: number }> }): Buffer {
  const h = Buffer.alloc(24);
  h.writeUInt32LE(opts.nanos ? 0xa1b23c4d : 0xa1b2c3d4, 0);
  h.writeUInt16LE(2, 4); h.writeUInt16LE(4, 6);
  h.writeUInt32LE(262144, 16);
  h.writeUInt32LE((opts.linktype ?? 1) >>> 0, 20);
  const recs = opts.records.map((r) => {
    const rh = Buffer.alloc(16);
    rh.writeUInt32LE(r.sec >>> 0, 0); rh.writeUInt32LE(r.frac >>> 0, 4);
    rh.writeUInt32LE((r.caplen ?? r.data.length) >>> 0, 8); rh.writeUInt32LE((r.len ?? r.data.length) >>> 0, 12);
    return Buffer.concat([rh, r.data]);
  });
  return Buffer.concat([h, ...recs]);
}

function ngBlock(type: number, body: Buffer, lenOverride?: number): Buffer {
  const pad = (4 - (body.length % 4)) % 4;
  const total = 12 + body.length + pad;
  const b = Buffer.alloc(total);
  b.writeUInt32LE(type, 0); b.writeUInt32LE(lenOverride ?? total, 4);
  body.copy(b, 8);
  b.writeUInt32LE(lenOverride ?? total, total - 4);
  return b;
}
function ngOpt(code: number, v: Buffer): Buffer {
  const pad = (4 - (v.length % 4)) % 4;
  const b = Buffer.alloc(4 + v.length + pad);
  b.writeUInt16LE(code, 0); b.writeUInt16LE(v.length, 2); v.copy(b, 4);
  return b;
}

/** A pcapng: SHB, one IDB (link type, options), EPBs. */
export function pcapngFile(opts: { linktype?: number; ifName?: Buffer; tsresol?: number; tsoffset?: bigint; packets: Array<{ ts: bigint; data: Buffer; caplen?: number }>; blockLen?: number }): Buffer {
  const shbBody = Buffer.alloc(16);
  shbBody.writeUInt32LE(0x1a2b3c4d, 0); shbBody.writeUInt16LE(1, 4); shbBody.writeBigInt64LE(-1n, 8);
  const idbFixed = Buffer.alloc(8);
  idbFixed.writeUInt16LE(opts.linktype ?? 1, 0); idbFixed.writeUInt32LE(0, 4);
  const idbOpts: Buffer[] = [];
  if (opts.ifName) idbOpts.push(ngOpt(2, opts.ifName));
  if (opts.tsresol !== undefined) idbOpts.push(ngOpt(9, Buffer.from([opts.tsresol])));
  if (opts.tsoffset !== undefined) { const o = Buffer.alloc(8); o.writeBigInt64LE(opts.tsoffset); idbOpts.push(ngOpt(14, o)); }
  if (idbOpts.length) idbOpts.push(Buffer.alloc(4));
  const epbs = opts.packets.map((p, i) => {
    const f = Buffer.alloc(20);
    f.writeUInt32LE(0, 0);
    f.writeUInt32LE(Number((p.ts >> 32n) & 0xffffffffn), 4); f.writeUInt32LE(Number(p.ts & 0xffffffffn), 8);
    f.writeUInt32LE(p.caplen ?? p.data.length, 12); f.writeUInt32LE(p.data.length, 16);
    return ngBlock(6, Buffer.concat([f, p.data]), i === 0 ? opts.blockLen : undefined);
  });
  return Buffer.concat([ngBlock(0x0a0d0d0a, shbBody), ngBlock(1, Buffer.concat([idbFixed, ...idbOpts])), ...epbs]);
}

/** an Ethernet/IPv4/TCP SYN from 10.0.0.1:40000 to 10.0.0.2:80 */
export function synFrame(): Buffer {
  const b = Buffer.alloc(54);
  b.writeUInt16BE(0x0800, 12);
  b[14] = 0x45; b.writeUInt16BE(40, 16); b[22] = 64; b[23] = 6;
  Buffer.from([10, 0, 0, 1, 10, 0, 0, 2]).copy(b, 26);
  b.writeUInt16BE(40000, 34); b.writeUInt16BE(80, 36); b[46] = 0x50; b[47] = 0x02;
  return b;
}

export type CaptureDamage = 'flip' | 'truncate' | 'linktype-flags' | 'linktype-reserved' | 'caplen-huge' | 'ts-huge' | 'ts-negative' | 'tsresol' | 'ifname-huge' | 'blocklen' | 'random';
export const CAPTURE_DAMAGES: readonly CaptureDamage[] = ['flip', 'truncate', 'linktype-flags', 'linktype-reserved', 'caplen-huge', 'ts-huge', 'ts-negative', 'tsresol', 'ifname-huge', 'blocklen', 'random'];

/** A hostile capture: a real fixture damaged, or a crafted file with one impossible field. */
export function damageCapture(dir: string, name: string, kind: CaptureDamage, rng: Rng): { file: string; what: string } {
  const syn = synFrame();
  const t0 = 1_790_000_000;
  let bytes: Buffer;
  let what: string;
  switch (kind) {
    case 'flip': case 'truncate': {
      const src = rng.pick(['pcap/eth-us.pcap', 'pcap/eth-ns.pcap', 'pcap/eth.pcapng', 'pcap/any-sll2.pcap']);
      bytes = Buffer.from(readFileSync(join(FIX, src)));
      if (kind === 'flip') { const n = 1 + rng.int(32); for (let i = 0; i < n; i++) bytes[rng.int(bytes.length)] = rng.u32() & 0xff; what = `${src} with ${n} flipped bytes`; }
      else { const n = 1 + rng.int(bytes.length - 1); bytes = bytes.subarray(0, n); what = `${src} cut at ${n}`; }
      break;
    }
    // tcpdump's bootp_asan.pcap: link type 67108865 = FCS-present flag | Ethernet
    case 'linktype-flags': bytes = pcapFile({ linktype: 0x04000001, records: [{ sec: t0, frac: 1, data: syn }] }); what = 'pcap link type 0x04000001 (FCS flag)'; break;
    case 'linktype-reserved': bytes = pcapFile({ linktype: rng.pick([0x03ff0001, 0xffffffff, 0x00010000]), records: [{ sec: t0, frac: 1, data: syn }] }); what = 'pcap link type with reserved bits'; break;
    case 'caplen-huge': bytes = pcapFile({ records: [{ sec: t0, frac: 1, data: syn }, { sec: t0, frac: 2, data: syn, caplen: 0xfffffff0 }] }); what = 'pcap record caplen 4 GiB'; break;
    case 'ts-huge': bytes = pcapngFile({ tsresol: 0, packets: [{ ts: 0xffffffffffffffffn, data: syn }, { ts: BigInt(t0), data: syn }] }); what = 'pcapng ts 2^64-1 s'; break;
    case 'ts-negative': bytes = pcapngFile({ tsoffset: -(2n ** 62n), packets: [{ ts: 5n, data: syn }] }); what = 'pcapng if_tsoffset -2^62'; break;
    case 'tsresol': bytes = pcapngFile({ tsresol: rng.pick([0x80 | 127, 127, 0x80]), packets: [{ ts: BigInt(t0) * 1000000n, data: syn }] }); what = 'pcapng odd if_tsresol'; break;
    case 'ifname-huge': bytes = pcapngFile({ ifName: Buffer.alloc(60000, 0xff), packets: [{ ts: BigInt(t0) * 1000000n, data: syn }] }); what = 'pcapng if_name of 60000 invalid UTF-8 bytes'; break;
    case 'blocklen': bytes = pcapngFile({ blockLen: rng.pick([0xfffffffc, 13, 8, 0x7ffffff0]), packets: [{ ts: BigInt(t0) * 1000000n, data: syn }] }); what = 'pcapng EPB with impossible length'; break;
    case 'random': bytes = Buffer.concat([rng.pick([Buffer.from('d4c3b2a1', 'hex'), Buffer.from('0a0d0d0a', 'hex'), Buffer.from('4d3cb2a1', 'hex')]), rng.bytes(64 + rng.int(4000))]); what = 'a capture magic then random bytes'; break;
  }
  const file = join(dir, `${name}.${bytes[0] === 0x0a ? 'pcapng' : 'pcap'}`);
  writeFileSync(file, bytes);
  return { file, what };
}

// ---------------------------------------------------------------------------------------------- text logs

export type TextKind = 'strace' | 'nft' | 'watch' | 'conntrack';
export const TEXT_SOURCES: Record<TextKind, { fixture: string; option: string }> = {
  strace: { fixture: 'strace/attach-sigterm.txt', option: '--strace' },
  nft: { fixture: 'import/nft-remove-endpoint.ts.log', option: '--nft-monitor' },
  watch: { fixture: 'watch/rollout-watch.jsonl', option: '--watch' },
  conntrack: { fixture: 'conntrack/events.txt', option: '--conntrack' },
};
export type TextDamage = 'flip' | 'truncate' | 'long-line' | 'deep-line' | 'junk-lines' | 'binary' | 'crlf';
export const TEXT_DAMAGES: readonly TextDamage[] = ['flip', 'truncate', 'long-line', 'deep-line', 'junk-lines', 'binary', 'crlf'];

/** A damaged text log of `kind`; `longLine` is the size of the over-long line (default 9 MiB, over the 8 MiB limit). */
export function damageText(dir: string, name: string, kind: TextKind, damage: TextDamage, rng: Rng, longLine = 9 * 1024 * 1024): { file: string; what: string } {
  const src = readFileSync(join(FIX, TEXT_SOURCES[kind].fixture));
  const lines = src.toString('utf8').split('\n');
  const at = 1 + rng.int(Math.max(1, lines.length - 1));
  let out: Buffer;
  let what: string;
  switch (damage) {
    case 'flip': { out = Buffer.from(src); const n = 1 + rng.int(64); for (let i = 0; i < n; i++) out[rng.int(out.length)] = 0x20 + rng.int(0x5f); what = `${n} flipped characters`; break; }
    case 'truncate': { const n = 1 + rng.int(src.length - 1); out = src.subarray(0, n); what = `cut at ${n}`; break; }
    case 'long-line': { lines.splice(at, 0, '['.repeat(longLine)); out = Buffer.from(lines.join('\n')); what = `a ${longLine}-byte line of [ at line ${at + 1}`; break; }
    case 'deep-line': { const l = kind === 'watch' ? `{"type":"ADDED","object":${deepJson(200_000)}}` : kind === 'nft' ? `${lines[at]?.split(' ')[0] ?? '1'} {"add":${deepJson(200_000)}}` : deepJson(200_000); lines.splice(at, 0, l); out = Buffer.from(lines.join('\n')); what = `a line nested 200,000 deep at line ${at + 1}`; break; }
    case 'junk-lines': { for (let i = 0; i < 5; i++) lines.splice(rng.int(lines.length), 0, rng.bytes(40).toString('latin1').replace(/[\n\0]/g, ' ')); out = Buffer.from(lines.join('\n')); what = '5 random lines'; break; }
    case 'binary': { out = Buffer.concat([src.subarray(0, 100), Buffer.from([0, 0, 0]), src.subarray(100)]); what = 'NUL bytes in the head'; break; }
    case 'crlf': { out = Buffer.from(lines.join('\r\n')); what = 'CRLF line ends'; break; }
  }
  const file = join(dir, `${name}.${kind}.txt`);
  writeFileSync(file, out);
  return { file, what };
}
