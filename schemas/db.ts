/**
 * Opening and creating bundle databases: the migrations, the schema version check, gzip bundles.
 * Shared by the recorder (writes) and the analyzer (reads, and writes for redact/merge).
 */
import Database from 'better-sqlite3';
import { chmodSync, createReadStream, createWriteStream, existsSync, mkdtempSync, openSync, readSync, closeSync, readdirSync, readFileSync, rmSync, statSync, copyFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGunzip } from 'node:zlib';
import { InputError } from './errors.js';
import { META_KEYS } from './rows.js';

export type DB = Database.Database;

const MIGRATIONS_DIR = join(dirname(fileURLToPath(import.meta.url)), 'migrations');

export interface Migration { version: number; name: string; sql: string }

export function loadMigrations(): Migration[] {
  return readdirSync(MIGRATIONS_DIR)
    .filter((f) => /^\d{3}_.+\.sql$/.test(f))
    .sort()
    .map((f) => ({ version: Number(f.slice(0, 3)), name: f, sql: readFileSync(join(MIGRATIONS_DIR, f), 'utf8') }));
}

/** The schema version this build of rolltrace writes and understands. */
export const SCHEMA_VERSION: number = loadMigrations().reduce((m, x) => Math.max(m, x.version), 0);

/** Apply every migration newer than the database's user_version, in one transaction each. */
export function migrate(db: DB): { from: number; to: number } {
  const from = db.pragma('user_version', { simple: true }) as number;
  if (from > SCHEMA_VERSION) {
    throw new InputError(`bundle schema version ${from} is newer than this rolltrace understands (${SCHEMA_VERSION}); upgrade rolltrace`);
  }
  for (const m of loadMigrations()) {
    if (m.version <= from) continue;
    db.transaction(() => {
      db.exec(m.sql);
      db.pragma(`user_version = ${m.version}`);
      db.prepare('INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)').run(META_KEYS.schemaVersion, String(m.version));
    })();
  }
  return { from, to: SCHEMA_VERSION };
}

/**
 * Bring a temp copy of an old (or damaged: user_version 0 or negative) bundle up to this schema for
 * reading. Unlike migrate(), objects that already exist are kept (CREATE … IF NOT EXISTS): a bundle
 * whose user_version was zeroed still holds every table, and re-running 001 on it failed with
 * `table meta already exists`. The analyzer reads what is there; a missing column costs a warning.
 */
export function migrateCopyForRead(db: DB, file: string): void {
  const raw = db.pragma('user_version', { simple: true }) as number;
  let from = Number.isSafeInteger(raw) && raw > 0 ? raw : 0;
  if (from === 0) {
    try {
      const row = db.prepare('SELECT value FROM meta WHERE key = ?').get(META_KEYS.schemaVersion) as { value?: unknown } | undefined;
      const v = Number(row?.value);
      if (Number.isSafeInteger(v) && v > 0 && v <= SCHEMA_VERSION) from = v;
    } catch { /* no readable meta: apply every migration, tolerantly */ }
  }
  for (const m of loadMigrations()) {
    if (m.version <= from) continue;
    const sql = m.sql.replace(/\bCREATE\s+(TABLE|INDEX|VIEW|TRIGGER)\s+(?!IF\s+NOT\s+EXISTS)/gi, 'CREATE $1 IF NOT EXISTS ')
      // and a column a migration adds that the bundle already has is kept, not added twice
      .replace(/^\s*ALTER\s+TABLE\s+([a-z_0-9]+)\s+ADD\s+COLUMN\s+([a-z_0-9]+)\b[^;]*;/gim, (stmt, t: string, c: string) => (hasColumn(db, t, c) ? '' : stmt));
    try {
      db.transaction(() => {
        db.exec(sql);
        db.pragma(`user_version = ${m.version}`);
      })();
    } catch (e) {
      const msg = String((e as Error)?.message ?? e).replace(/[\r\n]+/g, ' ').slice(0, 200);
      // a damaged page met on the way (003 indexes `packets`) is the bundle's damage, said as everywhere else
      if (/malformed|not a database|corrupt/i.test(msg)) throw new InputError(`${file}: damaged bundle (${msg})`);
      throw new InputError(`${file}: cannot read bundle schema v${raw} (upgrading to v${m.version} failed: ${msg})`);
    }
  }
}

function hasColumn(db: DB, table: string, column: string): boolean {
  try { return (db.prepare(`SELECT name FROM pragma_table_info(?)`).all(table) as Array<{ name: string }>).some((r) => r.name === column); } catch { return false; }
}

export interface CreateOptions {
  /** record, import, merge, redact, lab, test */
  createdBy: string;
  /** overwrite an existing file */
  overwrite?: boolean;
  /** SQLite page size of a new file (default SQLite's 4096) */
  pageSize?: number;
}

/** Create a new bundle file: WAL journal, schema applied, created_by set. */
export function createBundleDb(path: string, opts: CreateOptions): DB {
  if (existsSync(path)) {
    if (!opts.overwrite) throw new InputError(`${path} already exists; choose another --out or remove it`);
    removeBundleFiles(path);
  }
  let db: DB;
  try {
    db = new Database(path);
  } catch (e) {
    throw new InputError(`cannot create ${path}: ${(e as Error).message}`);
  }
  // the page size is fixed before the first table (and the WAL) exists
  if (opts.pageSize) db.pragma(`page_size = ${Math.trunc(opts.pageSize)}`);
  db.pragma('journal_mode = WAL');
  // NORMAL in WAL mode: durable across a crash of the process (SIGKILL), only power loss can drop the last commits.
  db.pragma('synchronous = NORMAL');
  migrate(db);
  db.prepare('INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)').run(META_KEYS.createdBy, opts.createdBy);
  return db;
}

/** Remove a bundle and the files SQLite may keep beside it. */
export function removeBundleFiles(path: string): void {
  for (const suffix of ['', '-wal', '-shm', '-journal']) rmSync(path + suffix, { force: true });
}

/**
 * Write a whole derived bundle (merge, redact) at `path`: `fill` runs in one transaction on a fresh
 * bundle; then the WAL is folded in and the journal set back to DELETE (one self-contained file),
 * optionally VACUUMed (no old bytes left in free pages), closed, and set to mode 0600. If anything
 * throws, nothing is left at `path`: a half-written bundle would verify as valid and analyze as CLEAN.
 */
export function writeWholeBundle<T>(path: string, opts: CreateOptions & { vacuum?: boolean }, fill: (db: DB) => T): T {
  const db = createBundleDb(path, opts);
  try {
    const result = db.transaction(() => fill(db))();
    db.pragma('wal_checkpoint(TRUNCATE)');
    db.pragma('journal_mode = DELETE');
    if (opts.vacuum) db.exec('VACUUM');
    db.close();
    try { chmodSync(path, 0o600); } catch { /* best effort */ }
    return result;
  } catch (e) {
    try { db.close(); } catch { /* already failing */ }
    removeBundleFiles(path);
    throw e;
  }
}

const SQLITE_MAGIC = 'SQLite format 3\u0000';

/**
 * Bound on inflating a `.rtb.gz` into $TMPDIR: at most GZ_MAX_RATIO × its compressed size (at least
 * GZ_MIN_BOUND), and never more than the size its gzip trailer declares (ISIZE, the size mod 2^32, is
 * exact below 4 GiB). Real bundles compress 5–20×; a gzip bomb (~1000×) is refused before it fills the disk.
 */
export const GZ_MAX_RATIO = 100;
export const GZ_MIN_BOUND = 64 * 1024 * 1024;

export function gzInflateBound(compressedSize: number, declaredIsize: number): { limit: number; exact: boolean } {
  const byRatio = Math.max(GZ_MAX_RATIO * compressedSize, GZ_MIN_BOUND);
  // below 4 GiB the declared size is the real one (ISIZE holds the size mod 2^32)
  if (byRatio < 2 ** 32) return { limit: Math.min(byRatio, declaredIsize), exact: declaredIsize <= byRatio };
  return { limit: byRatio, exact: false };
}

/** Inflate `path` into `target`, refusing output beyond gzInflateBound(); a refused or failed inflation leaves `target` for the caller to remove. */
async function gunzipBounded(path: string, target: string, compressedSize: number): Promise<void> {
  const tail = Buffer.alloc(4);
  const fd = openSync(path, 'r');
  try { readSync(fd, tail, 0, 4, Math.max(0, compressedSize - 4)); } finally { closeSync(fd); }
  const declared = tail.readUInt32LE(0);
  const { limit, exact } = gzInflateBound(compressedSize, declared);
  if (!exact) {
    throw new InputError(`${path}: gzip declares ${declared} bytes, more than ${GZ_MAX_RATIO}× its compressed size: refused (a gzip bomb?); if you trust it, gunzip it yourself`);
  }
  let total = 0;
  const bound = new Transform({
    transform(chunk: Buffer, _enc, cb) {
      total += chunk.length;
      if (total > limit) cb(new InputError(`${path}: gzip inflates beyond its declared size of ${declared} bytes: refused (damaged, or a gzip bomb)`));
      else cb(null, chunk);
    },
  });
  try {
    await pipeline(createReadStream(path), createGunzip(), bound, createWriteStream(target));
  } catch (e) {
    if (e instanceof InputError) throw e;
    throw new InputError(`${path}: gzip data is corrupt or truncated (${String((e as Error)?.message ?? e).split('\n')[0]})`);
  }
}

function headerOf(path: string, n: number): Buffer {
  const fd = openSync(path, 'r');
  try {
    const b = Buffer.alloc(n);
    const got = readSync(fd, b, 0, n, 0);
    return b.subarray(0, got);
  } finally {
    closeSync(fd);
  }
}

export interface OpenedBundle {
  db: DB;
  /** the path actually opened (a temp copy for .gz or migrated bundles) */
  path: string;
  /** the path the user named */
  original: string;
  schemaVersion: number;
  /** remove temp files */
  close(): void;
}

/**
 * Open a bundle for reading: checks that it is a SQLite file and a rolltrace bundle of a known schema.
 * A gzip bundle (.rtb.gz) is decompressed to a temp file first (streaming, bounded memory).
 * A bundle from an older schema is copied to a temp file and migrated; the original is never written.
 */
export async function openBundleForRead(path: string): Promise<OpenedBundle> {
  if (!existsSync(path)) throw new InputError(`${path}: no such file`);
  const st = statSync(path);
  if (!st.isFile()) throw new InputError(`${path}: not a regular file`);
  if (st.size === 0) throw new InputError(`${path}: empty file, not a rolltrace bundle`);
  const temps: string[] = [];
  const cleanup = () => { for (const t of temps) rmSync(t, { recursive: true, force: true }); };
  let target = path;
  try {
    const head = headerOf(path, 16);
    if (head[0] === 0x1f && head[1] === 0x8b) {
      const dir = mkdtempSync(join(tmpdir(), 'rolltrace-gz-'));
      temps.push(dir);
      target = join(dir, 'bundle.rtb');
      await gunzipBounded(path, target, st.size);
    }
    const magic = headerOf(target, 16).toString('latin1');
    if (magic !== SQLITE_MAGIC) throw new InputError(`${path}: not a rolltrace bundle (not a SQLite database)`);
    let db: DB;
    try {
      db = new Database(target, { readonly: true, fileMustExist: true });
      db.pragma('query_only = ON');
    } catch (e) {
      throw new InputError(`${path}: cannot open as SQLite (${(e as Error).message})`);
    }
    let version: number;
    try {
      version = db.pragma('user_version', { simple: true }) as number;
      const hasMeta = db.prepare("SELECT count(*) AS n FROM sqlite_master WHERE type = 'table' AND name = 'meta'").get() as { n: number };
      if (!hasMeta.n) {
        db.close();
        throw new InputError(`${path}: not a rolltrace bundle (no meta table)`);
      }
    } catch (e) {
      try { db.close(); } catch { /* already closed */ }
      if (e instanceof InputError) throw e;
      throw new InputError(`${path}: damaged SQLite file (${(e as Error).message})`);
    }
    if (version > SCHEMA_VERSION) {
      db.close();
      throw new InputError(`${path}: bundle schema version ${version} is newer than this rolltrace understands (${SCHEMA_VERSION}); upgrade rolltrace`);
    }
    if (version < SCHEMA_VERSION) {
      db.close();
      const dir = mkdtempSync(join(tmpdir(), 'rolltrace-mig-'));
      temps.push(dir);
      const copy = join(dir, 'bundle.rtb');
      try {
        copyFileSync(target, copy);
        for (const suffix of ['-wal']) if (existsSync(target + suffix)) copyFileSync(target + suffix, copy + suffix);
        const rw = new Database(copy);
        try { migrateCopyForRead(rw, path); } finally { rw.close(); }
        target = copy;
        db = new Database(target, { readonly: true, fileMustExist: true });
        db.pragma('query_only = ON');
      } catch (e) {
        if (e instanceof InputError) throw e;
        throw new InputError(`${path}: damaged SQLite file (${String((e as Error)?.message ?? e).replace(/[\r\n]+/g, ' ').slice(0, 200)})`);
      }
    }
    const opened: OpenedBundle = {
      db, path: target, original: path, schemaVersion: version,
      close() { try { db.close(); } catch { /* ignore */ } cleanup(); },
    };
    return opened;
  } catch (e) {
    cleanup();
    throw e;
  }
}
