import { closeSync, copyFileSync, mkdtempSync, openSync, readFileSync, rmSync, statSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import Database from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BundleWriter } from '../recorder/bundle-writer.js';
import { ev } from '../schemas/events.js';
import { cli } from './helpers/cli.js';

const dir = mkdtempSync(join(tmpdir(), 'rt-verify-'));
const good = join(dir, 'good.rtb');
afterAll(() => rmSync(dir, { recursive: true, force: true }));

beforeAll(() => {
  const w = new BundleWriter(good);
  const t0 = Date.parse('2026-04-17T10:30:28Z') * 1e6;
  w.setMeta('started_ns', t0);
  w.setSource('strace', { status: 'ok', clock: 'kernel' });
  for (let i = 0; i < 2000; i++) {
    w.event(ev('marker', t0 + i * 1e6, 'recorder', null, { text: `filler ${'y'.repeat(200)} ${i}` }));
  }
  w.event(ev('signal', t0 + 5e9, 'strace', 'pid:42', { pid: 42, signo: 15, signame: 'SIGTERM', phase: 'delivered' }));
  expect(w.close().integrity).toBe('ok');
});

function oneLineError(stderr: string) {
  const lines = stderr.trim().split('\n').filter((l) => !l.startsWith('npm warn'));
  expect(lines).toHaveLength(1);
  expect(lines[0]).toMatch(/^rolltrace: /);
  expect(stderr).not.toMatch(/\n\s+at /); // no stack trace
}

describe('rolltrace verify', () => {
  it('accepts a clean bundle and reports counts, range and a clean close', () => {
    const r = cli(['verify', good]);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^valid: /);
    expect(r.stdout).toContain('close:    clean');
    expect(r.stdout).toContain('events=2001');
    expect(r.stdout).toContain('2026-04-17T10:30:28.000000Z');
    expect(statSync(good).mode & 0o777).toBe(0o600);
  });

  it('prints JSON with --json', () => {
    const r = cli(['verify', '--json', good]);
    expect(r.code).toBe(0);
    const v = JSON.parse(r.stdout);
    expect(v.tables.events).toBe(2001);
    expect(v.closedCleanly).toBe(true);
    expect(v.sources.find((s: { name: string }) => s.name === 'strace')).toMatchObject({ name: 'strace', clock: 'kernel', events: 1 });
  });

  it('reads a gzip-compressed bundle transparently', () => {
    const gz = join(dir, 'good.rtb.gz');
    writeFileSync(gz, gzipSync(readFileSync(good)));
    const r = cli(['verify', gz]);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('events=2001');
  });

  it('rejects random bytes with one line and exit 2', () => {
    const f = join(dir, 'random.rtb');
    writeFileSync(f, Buffer.from(Array.from({ length: 4096 }, () => Math.floor(Math.random() * 256))));
    const r = cli(['verify', f]);
    expect(r.code).toBe(2);
    oneLineError(r.stderr);
    expect(r.stderr).toContain('not a rolltrace bundle');
  });

  it('rejects a truncated bundle with one line and exit 2', () => {
    const f = join(dir, 'trunc.rtb');
    copyFileSync(good, f);
    truncateSync(f, Math.floor(statSync(f).size / 2));
    const r = cli(['verify', f]);
    expect(r.code).toBe(2);
    oneLineError(r.stderr);
  });

  it('rejects a truncated gzip with one line and exit 2', () => {
    const f = join(dir, 'trunc.rtb.gz');
    const z = gzipSync(readFileSync(good));
    writeFileSync(f, z.subarray(0, Math.floor(z.length / 2)));
    const r = cli(['verify', f]);
    expect(r.code).toBe(2);
    oneLineError(r.stderr);
    expect(r.stderr).toContain('gzip');
  });

  it('rejects a bundle from a newer schema, naming the versions', () => {
    const f = join(dir, 'future.rtb');
    copyFileSync(good, f);
    const db = new Database(f);
    db.pragma('user_version = 99');
    db.close();
    const r = cli(['verify', f]);
    expect(r.code).toBe(2);
    oneLineError(r.stderr);
    expect(r.stderr).toMatch(/schema version 99 is newer/);
  });

  it('migrates an older bundle on read without touching the original', () => {
    const f = join(dir, 'old.rtb');
    copyFileSync(good, f);
    const db = new Database(f);
    db.exec('DROP VIEW timeline; DROP VIEW tcp_resets; DROP VIEW probe_failures; DROP VIEW endpoint_rules');
    db.pragma('user_version = 1');
    db.close();
    const before = readFileSync(f);
    const r = cli(['verify', f]);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('events=2001');
    expect(readFileSync(f).equals(before)).toBe(true);
  });

  it('flags a SQLite file that is not a bundle', () => {
    const f = join(dir, 'other.sqlite');
    const db = new Database(f);
    db.exec('CREATE TABLE x(a)');
    db.close();
    const r = cli(['verify', f]);
    expect(r.code).toBe(2);
    oneLineError(r.stderr);
    expect(r.stderr).toContain('no meta table');
  });

  it('reports a missing core table as invalid', () => {
    const f = join(dir, 'missing.rtb');
    copyFileSync(good, f);
    const db = new Database(f);
    db.exec('DROP VIEW timeline; DROP VIEW probe_failures; DROP TABLE probe_requests');
    db.close();
    const r = cli(['verify', f]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('missing tables: probe_requests');
  });

  it('names a missing file', () => {
    const r = cli(['verify', join(dir, 'nope.rtb')]);
    expect(r.code).toBe(2);
    oneLineError(r.stderr);
    expect(r.stderr).toContain('no such file');
  });
});

describe('CLI usage errors', () => {
  it('exits 2 on an unknown option or bad value, without a stack', () => {
    for (const args of [['analyze', '--format', 'xml', 'x.rtb'], ['record'], ['verify'], ['frobnicate']]) {
      const r = cli(args);
      expect(r.code, args.join(' ')).toBe(2);
      expect(r.stderr).not.toMatch(/\n\s+at /);
    }
  });
  it('prints help and version with exit 0', () => {
    expect(cli(['--help']).code).toBe(0);
    expect(cli(['--version']).stdout.trim()).toMatch(/^\d+\.\d+\.\d+$/);
  });
});
void closeSync; void openSync;
