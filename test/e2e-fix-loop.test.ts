/**
 * The verification loop, end to end in the fast lab (root): record a scenario that fails, take the
 * analysis' strategic merge patch, apply it in a fresh lab the way `kubectl patch` would (`lab run
 * --patch`), record again: the analysis exits 0. Timing-sensitive (two lab runs per scenario): run alone.
 */
import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { labSession, newPrefix } from '../lab/cli.js';
import type { Analysis } from '../schemas/analysis.js';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
const dir = mkdtempSync(join(tmpdir(), 'e2e-fix-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function analyze(file: string): { code: number | null; a: Analysis } {
  const r = spawnSync(process.execPath, [join(ROOT, 'bin/rolltrace.mjs'), 'analyze', file, '--format', 'json'], { encoding: 'utf8', timeout: 120_000 });
  return { code: r.status, a: JSON.parse(r.stdout) as Analysis };
}

/** A failed expectation about a recording's analysis keeps the evidence (the bundles, their lab truths and analyses, the patch):
 *  `dir` is deleted after the run, so the failure message names where the copy is (E2E_KEEP_DIR, else /tmp). */
function keepOnFailure(scenario: string, files: string[], check: () => void): void {
  try { check(); } catch (e) {
    const kept = join(process.env.E2E_KEEP_DIR ?? join(tmpdir(), 'e2e-fix-loop-kept'), `${scenario}-${new Date().toISOString().replace(/[:.]/g, '-')}`);
    mkdirSync(kept, { recursive: true });
    for (const f of files) {
      try { copyFileSync(f, join(kept, basename(f))); } catch { /* not written yet */ }
      if (!f.endsWith('.rtb')) continue;
      try { copyFileSync(`${f}.truth.json`, join(kept, `${basename(f)}.truth.json`)); } catch { /* no truth */ }
      for (const format of ['text', 'json']) {
        const r = spawnSync(process.execPath, [join(ROOT, 'bin/rolltrace.mjs'), 'analyze', f, '--format', format], { encoding: 'utf8', timeout: 120_000 });
        writeFileSync(join(kept, `${basename(f)}.analysis.${format === 'text' ? 'txt' : 'json'}`), r.stdout + r.stderr);
      }
    }
    (e as Error).message = `${(e as Error).message}\n(evidence kept in ${kept})`;
    throw e;
  }
}

async function record(scenario: string, out: string, patch?: string): Promise<void> {
  const { code } = await labSession({ scenario, out, truth: `${out}.truth.json`, mode: 'run', prefix: newPrefix(), onLine: () => undefined, ...(patch ? { patch } : {}) });
  expect(code, `lab run ${scenario}${patch ? ' --patch' : ''}`).toBe(0);
}

// grace-too-short is left out: its app drains 5 s, which no recording of a SIGKILLed drain can measure
// (the patch's grace is a stated lower bound, 7 s = preStop 2 s + the 5 s drain exactly: a coin toss)
describe.each(['race', 'local-blackhole', 'not-ready'])('%s: applying the printed patch and recording again gives exit 0', (scenario) => {
  it('fails first, then the patched Deployment rolls without a failure', async () => {
    const before = join(dir, `${scenario}.rtb`);
    await record(scenario, before);
    const patchFile = join(dir, `${scenario}.patch.json`);
    const after = join(dir, `${scenario}-fixed.rtb`);
    let first!: ReturnType<typeof analyze>;
    keepOnFailure(scenario, [before], () => {
      first = analyze(before);
      const r = first.a.recommendation;
      expect(first.code).toBe(1);
      expect(r.patch).toBeTruthy();
      expect(r.kubectl).toBe(`kubectl patch deployment web -n default --type strategic -p '${JSON.stringify(r.patch)}'`);
      expect(r.verify?.[1]).toBe(`rolltrace analyze ${scenario}-fixed.rtb`);
    });
    const r = first.a.recommendation;
    writeFileSync(patchFile, JSON.stringify(r.patch));
    await record(scenario, after, patchFile);
    keepOnFailure(scenario, [before, patchFile, after], () => {
      const second = analyze(after);
      expect(second.a.recommendation.current?.preStop).toBe(`sleep ${r.preStopSeconds}s`);
      expect(second.a.failures.map((f) => `${f.cause} ${f.client} -> ${f.backend.pod ?? f.backend.ip}`)).toEqual([]);
      expect(second.code).toBe(0);
    });
  }, 240_000);
});
