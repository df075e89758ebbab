// A bundle must stay valid if the recorder is killed at any instant, losing at most the last second.
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { afterAll, describe, expect, it } from 'vitest';
import { verifyBundle } from '../analyzer/commands/verify.js';

const dir = mkdtempSync(join(tmpdir(), 'rt-crash-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function runAndKill(out: string, afterMs: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', join(__dirname, 'helpers/crash-writer.ts'), out], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let killedAt = 0;
    child.stdout.on('data', (b: Buffer) => {
      if (b.toString().includes('ready') && !killedAt) {
        setTimeout(() => { killedAt = Date.now(); child.kill('SIGKILL'); }, afterMs);
      }
    });
    child.on('error', reject);
    child.on('exit', () => resolve(killedAt));
  });
}

describe('bundle writer under SIGKILL', () => {
  it('leaves a valid bundle that loses at most the last second, at 12 random instants', async () => {
    for (let n = 0; n < 12; n++) {
      const out = join(dir, `crash-${n}.rtb`);
      const delay = 50 + Math.floor(Math.random() * 1200);
      const killedAt = await runAndKill(out, delay);
      expect(killedAt).toBeGreaterThan(0);
      const v = await verifyBundle(out);
      expect(v.valid, `${out}: ${v.reason}`).toBe(true);
      expect(v.integrity).toBe('ok');
      expect(v.closedCleanly).toBe(false);
      const db = new Database(out, { readonly: true });
      const last = (db.prepare('SELECT max(ts_ns) AS t, count(*) AS n FROM events').get() as { t: number | null; n: number });
      const pk = (db.prepare('SELECT count(*) AS n FROM packets').get() as { n: number }).n;
      db.close();
      if (delay >= 300) {
        // writing went on for at least 300 ms: rows up to 1 s before the kill must be there
        expect(last.n).toBeGreaterThan(0);
        expect(pk).toBeGreaterThan(0);
        expect(killedAt * 1e6 - (last.t ?? 0)).toBeLessThan(1e9);
      }
    }
  });
});
