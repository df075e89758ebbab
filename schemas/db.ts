/**
 * Opening and creating bundle databases: the migrations, the schema version check, gzip bundles.
 * Shared by the recorder (writes) and the analyzer (reads, and writes for redact/merge).
 */
import Database from 'better-sqlite3';
import { chmodSync, createReadStream, createWriteStream, existsSync, mkdtempSync, openSync, readSync, closeSync, readdirSync, readFileSync, rmSync, statSync, copyFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
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

export interface CreateOptions {
  /** record, import, merge, redact, lab, test */
  createdBy: string;
  /** overwrite an existing file */
  overwrite?: boolean;
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
      try {
        await pipeline(createReadStream(path), createGunzip(), createWriteStream(target));
      } catch (e) {
        throw new InputError(`${path}: gzip data is corrupt or truncated (${(e as Error).message})`);
      }
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
      copyFileSync(target, copy);
      for (const suffix of ['-wal']) if (existsSync(target + suffix)) copyFileSync(target + suffix, copy + suffix);
      const rw = new Database(copy);
      try { migrate(rw); } finally { rw.close(); }
      target = copy;
      db = new Database(target, { readonly: true, fileMustExist: true });
      db.pragma('query_only = ON');
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
