/**
 * The package users get: `npm pack`, `npm install -g` of the tarball into a fresh prefix, then
 * `rolltrace analyze` from the installed copy as an unprivileged user (nobody) on a machine where the
 * libpcap binding is absent. Slow (npm compiles better-sqlite3 from source when no prebuilt binary can
 * be downloaded), so one test does it all.
 */
import { describe, expect, it } from 'vitest';
import { chmodSync, copyFileSync, existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { cli, ROOT } from './helpers/cli.js';
import { runAsync } from './helpers/run.js';

const run = (cmd: string, args: string[], opts: Parameters<typeof runAsync>[2] = {}) => runAsync(cmd, args, { timeoutMs: 540000, ...opts });

describe('npm pack + npm install -g', () => {
  it('installs the tarball into a fresh prefix; analyze runs from it as nobody, without cap, and agrees with the repository', async () => {
    const tmp = mkdtempSync(join(tmpdir(), 'rolltrace-pkg-'));
    try {
      chmodSync(tmp, 0o755);
      const pack = await run('npm', ['pack', '--pack-destination', tmp, '--json'], { cwd: ROOT });
      expect(pack.code, pack.stderr).toBe(0);
      // npm prints the lifecycle scripts' output before the JSON
      const info = JSON.parse(pack.stdout.slice(pack.stdout.indexOf('[')))[0] as { filename: string; files: Array<{ path: string }> };
      const files = info.files.map((f) => f.path);
      expect(files).toContain('bin/rolltrace.mjs');
      expect(files).toContain('dist/cli/main.js');
      expect(files).toContain('dist/schemas/migrations/001_init.sql');
      expect(files).toContain('dist/recorder/sources/nftables/monitor-worker.mjs');
      expect(files).toContain('dist/lab/backend/server.mjs');
      expect(files.filter((f) => f.endsWith('.ts') || f.includes('tsbuildinfo') || f.startsWith('test/'))).toEqual([]);

      const prefix = join(tmp, 'prefix');
      const inst = await run('npm', ['install', '-g', '--prefix', prefix, '--no-audit', '--no-fund', join(tmp, info.filename)], { cwd: tmp });
      expect(inst.code, inst.stderr).toBe(0);
      const pkgDir = join(prefix, 'lib', 'node_modules', 'rolltrace');
      // nothing of the TypeScript toolchain at run time
      for (const dev of ['tsx', 'typescript', 'vitest']) expect(existsSync(join(pkgDir, 'node_modules', dev)), dev).toBe(false);
      // the capture addon ships as source and was built by the package's install script (libpcap-dev is here)
      expect(files).toEqual(expect.arrayContaining(['native/capture/capture.c', 'native/capture/binding.gyp', 'scripts/addon.mjs']));
      expect(existsSync(join(pkgDir, 'native', 'capture', 'build', 'Release', 'rolltrace_capture.node'))).toBe(true);
      // a machine without libpcap: the optional binding did not build
      rmSync(join(pkgDir, 'node_modules', 'cap'), { recursive: true, force: true });

      const bundle = join(tmp, 'race.rtb');
      copyFileSync(join(ROOT, 'fixtures/bundles/race-synthetic.rtb'), bundle);
      chmodSync(bundle, 0o644);
      const asNobody = (args: string[]) => run('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', join(prefix, 'bin', 'rolltrace'), ...args],
        { cwd: tmp, env: { PATH: '/usr/local/bin:/usr/bin:/bin', HOME: tmp } });

      // kubectl finds the plugin next to rolltrace
      const plugin = await run('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', join(prefix, 'bin', 'kubectl-rolltrace'), '--version'],
        { cwd: tmp, env: { PATH: '/usr/local/bin:/usr/bin:/bin', HOME: tmp } });
      expect(plugin.stderr).toBe('');
      expect(plugin.stdout.trim()).toBe(JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')).version);
      expect(files).toContain('bin/kubectl-rolltrace.mjs');
      expect(files).toContain('deploy/krew/rolltrace.yaml');

      const version = await asNobody(['--version']);
      expect(version.stderr).toBe('');
      expect(version.stdout.trim()).toBe(JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')).version);

      const installed = await asNobody(['analyze', bundle, '--format', 'json']);
      expect(installed.stderr).toBe('');
      expect(installed.code).toBe(1); // the fixture records failures
      const report = JSON.parse(installed.stdout);
      expect(report.schema).toBe('rolltrace.analysis/v1');
      expect(report.failures.map((f: { cause: string }) => f.cause)).toEqual(['listener-closed', 'listener-closed']);
      expect(report.pods[0].verdict).toBe('listener-closed-before-rule-removed');
      // the installed copy and the repository give the same answer
      const repo = cli(['analyze', bundle, '--format', 'json']);
      expect(installed.stdout).toBe(repo.stdout);

      const text = await asNobody(['analyze', bundle]);
      expect(text.code).toBe(1);
      expect(text.stdout).toMatch(/^VERDICT: FAILURES/);

      // bad input from the installed copy: one line, exit 2
      const bad = await asNobody(['analyze', join(tmp, 'missing.rtb')]);
      expect(bad.code).toBe(2);
      expect(bad.stderr.trim().split('\n')).toHaveLength(1);
    } finally {
      rmSync(tmp, { recursive: true, force: true });
    }
  }, 600_000);
});
