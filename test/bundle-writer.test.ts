import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { afterAll, describe, expect, it } from 'vitest';
import { BundleWriter } from '../recorder/bundle-writer.js';
import { ev } from '../schemas/events.js';

const dir = mkdtempSync(join(tmpdir(), 'rt-writer-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('bundle writer', () => {
  it('a row no table takes costs only itself: the rest of its batch is written, it counts as dropped', () => {
    const out = join(dir, 'bad-row.rtb');
    const w = new BundleWriter(out);
    const t0 = Date.parse('2026-04-17T10:30:28Z') * 1e6;
    for (let i = 0; i < 100; i++) w.event(ev('marker', t0 + i, 'recorder', null, { text: `m${i}` }));
    w.probeRequest({ start_ns: t0, end_ns: t0 + 1e6, local_addr: '10.0.0.1', local_port: 20000, remote: '10.96.0.10:80', outcome: 'ok', status: 200, error: null });
    w.event(ev('marker', Number.NaN, 'strace', null, { text: 'no instant' })); // NOT NULL ts_ns
    w.event(ev('marker', t0, 'strace', null, { text: 1n as unknown as string })); // attrs JSON cannot encode a BigInt
    w.event(ev('marker', t0 + 5, 'strace', null, { text: 'fine' }));
    w.flush();
    expect(w.rejectedRows).toBe(2);
    expect(w.lastRejection).toMatch(/^event row from strace: /);
    w.close();
    const db = new Database(out, { readonly: true });
    const n = (sql: string) => (db.prepare(sql).get() as { n: number }).n;
    expect(n('SELECT count(*) AS n FROM events')).toBe(101);
    expect(n('SELECT count(*) AS n FROM probe_requests')).toBe(1);
    const src = Object.fromEntries((db.prepare('SELECT name, events, dropped FROM sources').all() as Array<{ name: string; events: number; dropped: number }>).map((r) => [r.name, r]));
    // the counts match the rows that are there
    expect(src.recorder).toMatchObject({ events: 100, dropped: 0 });
    expect(src.probe).toMatchObject({ events: 1, dropped: 0 });
    expect(src.strace).toMatchObject({ events: 1, dropped: 2 });
    db.close();
  });
});
