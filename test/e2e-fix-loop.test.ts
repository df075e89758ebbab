/**
 * The verification loop, end to end in the fast lab (root): record a scenario that fails, take the
 * analysis' strategic merge patch, apply it in a fresh lab the way `kubectl patch` would (`lab run
 * --patch`), record again: the analysis exits 0. Timing-sensitive (two lab runs per scenario): run alone.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
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

async function record(scenario: string, out: string, patch?: string): Promise<void> {
  const { code } = await labSession({ scenario, out, mode: 'run', prefix: newPrefix(), onLine: () => undefined, ...(patch ? { patch } : {}) });
  expect(code, `lab run ${scenario}${patch ? ' --patch' : ''}`).toBe(0);
}

// grace-too-short is left out: its app drains 5 s, which no recording of a SIGKILLed drain can measure
// (the patch's grace is a stated lower bound, 7 s = preStop 2 s + the 5 s drain exactly: a coin toss)
describe.each(['race', 'local-blackhole', 'not-ready'])('%s: applying the printed patch and recording again gives exit 0', (scenario) => {
  it('fails first, then the patched Deployment rolls without a failure', async () => {
    const before = join(dir, `${scenario}.rtb`);
    await record(scenario, before);
    const first = analyze(before);
    expect(first.code).toBe(1);
    const r = first.a.recommendation;
    expect(r.patch).toBeTruthy();
    expect(r.kubectl).toBe(`kubectl patch deployment web -n default --type strategic -p '${JSON.stringify(r.patch)}'`);
    expect(r.verify?.[1]).toBe(`rolltrace analyze ${scenario}-fixed.rtb`);
    const patchFile = join(dir, `${scenario}.patch.json`);
    writeFileSync(patchFile, JSON.stringify(r.patch));
    const after = join(dir, `${scenario}-fixed.rtb`);
    await record(scenario, after, patchFile);
    const second = analyze(after);
    expect(second.a.recommendation.current?.preStop).toBe(`sleep ${r.preStopSeconds}s`);
    expect(second.a.failures.map((f) => `${f.cause} ${f.client} -> ${f.backend.pod}`)).toEqual([]);
    expect(second.code).toBe(0);
  }, 240_000);
});
