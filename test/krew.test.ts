/**
 * `npm run krew` + the real krew: the archive and manifest it writes install with
 * `krew install --manifest --archive` into a fresh KREW_ROOT, and kubectl (the lab's v1.33 build) then
 * runs `kubectl rolltrace` from it, with no rolltrace checkout on PATH. krew itself is built once per
 * machine from the Go module proxy (sigs.k8s.io/krew, cached in /var/cache/rolltrace/krew/, or $ROLLTRACE_CACHE_DIR/krew).
 */
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { buildKubernetes, CACHE_ROOT, k8sBin } from '../lab/real/build.js';
import { ROOT } from './helpers/cli.js';
import { runAsync } from './helpers/run.js';

const KREW_VERSION = 'v0.4.3';
const KREW = join(CACHE_ROOT, 'krew', KREW_VERSION, 'krew');
const tmp = mkdtempSync(join(tmpdir(), 'rolltrace-krew-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

describe('krew', () => {
  it('installs the plugin from npm run krew\'s archive and manifest; kubectl rolltrace runs from the krew store', async () => {
    if (!existsSync(KREW)) {
      mkdirSync(dirname(KREW), { recursive: true });
      const b = await runAsync('go', ['install', `sigs.k8s.io/krew/cmd/krew@${KREW_VERSION}`], { env: { ...process.env, GOBIN: dirname(KREW) }, timeoutMs: 900_000 });
      expect(b.code, b.stderr.slice(-1500)).toBe(0);
    }
    await buildKubernetes({ say: () => undefined });
    const out = join(tmp, 'out');
    const pack = await runAsync(process.execPath, [join(ROOT, 'scripts/krew.mjs'), '--out-dir', out], { cwd: ROOT, timeoutMs: 300_000 });
    expect(pack.code, pack.stderr).toBe(0);
    const [archive, manifest] = pack.stdout.trim().split('\n');
    expect(readFileSync(manifest!, 'utf8')).toMatch(/sha256: "[0-9a-f]{64}"/);
    const krewRoot = join(tmp, 'krew-root');
    const inst = await runAsync(KREW, ['install', `--manifest=${manifest}`, `--archive=${archive}`], { env: { ...process.env, KREW_ROOT: krewRoot }, timeoutMs: 120_000 });
    expect(inst.code, inst.stderr).toBe(0);
    expect(inst.stderr + inst.stdout).toContain('Installed plugin: rolltrace');
    // PATH: krew's bin, the lab's kubectl and node; nothing of the checkout
    const env = { PATH: `${join(krewRoot, 'bin')}:${dirname(k8sBin('kubectl'))}:${dirname(process.execPath)}:/usr/bin:/bin`, HOME: tmp };
    const list = await runAsync('kubectl', ['plugin', 'list'], { env, timeoutMs: 30_000 });
    expect(list.stdout).toContain(join(krewRoot, 'bin', 'kubectl-rolltrace'));
    const v = await runAsync('kubectl', ['rolltrace', '--version'], { env, timeoutMs: 30_000 });
    expect(v.stdout.trim()).toBe(JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')).version);
    const bad = await runAsync('kubectl', ['rolltrace', 'record', 'deploy/web', '--kubeconfig', join(tmp, 'none')], { env, timeoutMs: 30_000 });
    expect(bad.code).toBe(2);
    expect(bad.stderr.trim()).toMatch(/^kubectl rolltrace: cannot load kubeconfig /);
  }, 1_200_000);
});
