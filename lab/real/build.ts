/**
 * The real node's Kubernetes binaries, built from the Go module proxy at one pinned release.
 *
 * The published k8s.io/kubernetes go.mod requires its staging modules (k8s.io/api, k8s.io/client-go, ...)
 * at v0.0.0 and points them at ./staging with `replace`, which only works inside the kubernetes tree, so
 * a plain `go install k8s.io/kubernetes/cmd/kubelet@v1.33.x` fails. We generate a module that requires
 * k8s.io/kubernetes at the tag and pins every staging module to the matching v0.33.x with `replace`
 * lines, then `go build` each command. Binaries are cached by version outside the repository
 * (/var/cache/rolltrace/k8s/<version>/bin), built once per machine; GOMODCACHE and GOCACHE make a second
 * build (another version, or after `rm -r bin`) fast.
 */
import { spawn, spawnSync } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, renameSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { InputError } from '../../schemas/errors.js';

/** The one place the release is pinned. v1.33: its kubelet still starts on cgroup v1 with failCgroupV1: false. */
export const K8S_VERSION = 'v1.33.13';
export const K8S_COMPONENTS = ['kube-apiserver', 'kube-controller-manager', 'kube-scheduler', 'kubelet', 'kube-proxy', 'kubectl'] as const;
export type K8sComponent = typeof K8S_COMPONENTS[number];

export const CACHE_ROOT = process.env.ROLLTRACE_CACHE_DIR ?? '/var/cache/rolltrace';
export const k8sDir = (version = K8S_VERSION) => join(CACHE_ROOT, 'k8s', version);
export const k8sBinDir = (version = K8S_VERSION) => join(k8sDir(version), 'bin');
export const k8sBin = (c: K8sComponent, version = K8S_VERSION) => join(k8sBinDir(version), c);

const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '../..');

/** v1.33.13 -> v0.33.13: the tag of the staging modules released with it. */
export function stagingVersion(version: string): string {
  const m = /^v1\.(\d+)\.(\d+)$/.exec(version);
  if (!m) throw new InputError(`not a Kubernetes release tag: ${version} (want v1.N.M)`);
  return `v0.${m[1]}.${m[2]}`;
}

/** The staging modules of a kubernetes go.mod: the k8s.io modules it requires at v0.0.0. */
export function stagingModules(goMod: string): string[] {
  const mods = new Set<string>();
  for (const line of goMod.split('\n')) {
    const m = /^\s*(?:require\s+)?(k8s\.io\/[A-Za-z0-9._-]+)\s+v0\.0\.0(?:\s|$)/.exec(line);
    if (m) mods.add(m[1]!);
  }
  return [...mods].sort();
}

/** The generated module: requires k8s.io/kubernetes at the tag, every staging module replaced by its tag. */
export function generateGoMod(version: string, staging: string[], goVersion = '1.24.0'): string {
  const sv = stagingVersion(version);
  return [
    'module rolltrace.local/k8sbuild', '', `go ${goVersion}`, '',
    `require k8s.io/kubernetes ${version}`, '',
    ...staging.map((m) => `replace ${m} => ${m} ${sv}`), '',
  ].join('\n');
}

/** -X flags so the binaries report the release (kubelet's node status, `kubectl version`). */
export function versionLdflags(version: string): string {
  const [, major, minor] = /^v(\d+)\.(\d+)/.exec(version) ?? [];
  const vars: Record<string, string> = { gitVersion: version, gitMajor: major ?? '', gitMinor: minor ?? '', gitTreeState: 'clean', buildDate: '1970-01-01T00:00:00Z' };
  const pkgs = ['k8s.io/component-base/version', 'k8s.io/client-go/pkg/version'];
  return ['-s', '-w', ...pkgs.flatMap((p) => Object.entries(vars).map(([k, v]) => `-X ${p}.${k}=${v}`))].join(' ');
}

export interface BuildReport { version: string; binDir: string; built: string[]; seconds: number; perComponent: Record<string, number>; go: string; cached: boolean }

export function missingComponents(version = K8S_VERSION): K8sComponent[] {
  return K8S_COMPONENTS.filter((c) => !existsSync(k8sBin(c, version)));
}

function goEnv(): NodeJS.ProcessEnv {
  // GOTOOLCHAIN: ROLLTRACE_GOTOOLCHAIN=go1.24.x fetches a matching toolchain through the proxy when
  // the machine's Go cannot build the release
  const env: NodeJS.ProcessEnv = { ...process.env, CGO_ENABLED: '0', GOFLAGS: '-mod=mod' };
  if (process.env.ROLLTRACE_GOTOOLCHAIN) env.GOTOOLCHAIN = process.env.ROLLTRACE_GOTOOLCHAIN;
  return env;
}

/** Run a command, its output appended to the build log; reject with the log's tail. */
function step(cmd: string, args: string[], cwd: string, logPath: string, nice = true): Promise<string> {
  return new Promise((res, rej) => {
    const fd = openSync(logPath, 'a');
    writeSync(fd, `\n$ ${cmd} ${args.join(' ')}\n`);
    const argv = nice ? ['-n', '10', cmd, ...args] : args;
    let stdout = '';
    const p = spawn(nice ? 'nice' : cmd, argv, { cwd, env: goEnv(), stdio: ['ignore', 'pipe', fd] });
    p.stdout!.on('data', (d: Buffer) => { stdout += d; writeSync(fd, d); });
    p.on('error', (e) => { closeSync(fd); rej(new Error(`${cmd}: ${e.message}`)); });
    p.on('exit', (code) => {
      closeSync(fd);
      if (code === 0) return res(stdout);
      const tail = readFileSync(logPath, 'utf8').trim().split('\n').slice(-6).join(' | ');
      rej(new Error(`${cmd} ${args.slice(0, 2).join(' ')} failed (exit ${code}); see ${logPath}: ${tail}`));
    });
  });
}

/** A lock so two lab runs do not build into the same directory at once. */
async function withLock<T>(path: string, fn: () => Promise<T>, say: (s: string) => void): Promise<T> {
  mkdirSync(dirname(path), { recursive: true });
  for (let waited = 0; ; waited++) {
    try {
      const fd = openSync(path, 'wx');
      writeSync(fd, String(process.pid));
      closeSync(fd);
      break;
    } catch {
      const owner = Number(readFileSync(path, 'utf8') || 0);
      let alive = false;
      try { if (owner) { process.kill(owner, 0); alive = true; } } catch { /* gone */ }
      if (!alive) { rmSync(path, { force: true }); continue; }
      if (waited % 30 === 0) say(`waiting for build ${owner} (lock ${path})`);
      await new Promise((r) => setTimeout(r, 2000));
    }
  }
  try { return await fn(); } finally { rmSync(path, { force: true }); }
}

/**
 * Build whatever of the pinned release is missing (nothing when cached). Progress lines go to `say`
 * (every step, and a heartbeat every 20 s while the compiler runs).
 */
export async function buildKubernetes(opts: { version?: string; say?: (s: string) => void; force?: boolean } = {}): Promise<BuildReport> {
  const version = opts.version ?? K8S_VERSION;
  const say = opts.say ?? ((s: string) => process.stderr.write(`[lab build] ${s}\n`));
  const goV = spawnSync('go', ['version'], { encoding: 'utf8', env: goEnv() });
  if (goV.status !== 0) throw new InputError('the real node is built with Go: `go` not found on PATH (install golang)');
  const dir = k8sDir(version), bin = k8sBinDir(version), modDir = join(dir, 'module');
  return withLock(join(dir, '.lock'), async () => {
    const todo = opts.force ? [...K8S_COMPONENTS] : missingComponents(version);
    if (!todo.length) return { version, binDir: bin, built: [], seconds: 0, perComponent: {}, go: goV.stdout.trim(), cached: true };
    mkdirSync(modDir, { recursive: true });
    mkdirSync(bin, { recursive: true });
    const log = join(dir, 'build.log');
    const t0 = Date.now();
    say(`building Kubernetes ${version} (${todo.join(', ')}) with ${goV.stdout.trim()} into ${bin}; log: ${log}`);
    say('this takes 5-10 minutes on 2 cores the first time (modules are downloaded from the Go module proxy)');
    const dl = JSON.parse(await step('go', ['mod', 'download', '-json', `k8s.io/kubernetes@${version}`], modDir, log, false)) as { GoMod?: string; Error?: string };
    if (!dl.GoMod) throw new Error(`go mod download k8s.io/kubernetes@${version}: ${dl.Error ?? 'no go.mod'}`);
    const staging = stagingModules(readFileSync(dl.GoMod, 'utf8'));
    if (staging.length < 10) throw new Error(`k8s.io/kubernetes@${version}: found only ${staging.length} staging modules in its go.mod`);
    writeFileSync(join(modDir, 'go.mod'), generateGoMod(version, staging));
    await step('go', ['get', `k8s.io/kubernetes@${version}`], modDir, log, false);
    say(`module ready (${staging.length} staging modules pinned to ${stagingVersion(version)}) after ${Math.round((Date.now() - t0) / 1000)} s`);
    const per: Record<string, number> = {};
    for (const [i, c] of todo.entries()) {
      const tc = Date.now();
      const beat = setInterval(() => say(`  ${c}: compiling, ${Math.round((Date.now() - tc) / 1000)} s`), 20000);
      try {
        const tmp = join(bin, `.${c}.tmp`);
        await step('go', ['build', '-trimpath', '-ldflags', versionLdflags(version), '-o', tmp, `k8s.io/kubernetes/cmd/${c}`], modDir, log);
        renameSync(tmp, join(bin, c));
      } finally { clearInterval(beat); }
      per[c] = Math.round((Date.now() - tc) / 100) / 10;
      say(`[${i + 1}/${todo.length}] ${c} built in ${per[c]} s`);
    }
    const seconds = Math.round((Date.now() - t0) / 100) / 10;
    const report: BuildReport = { version, binDir: bin, built: todo, seconds, perComponent: per, go: goV.stdout.trim(), cached: false };
    writeFileSync(join(dir, 'build.json'), JSON.stringify({ ...report, at: new Date().toISOString() }, null, 2) + '\n');
    say(`Kubernetes ${version} built in ${seconds} s`);
    return report;
  }, say);
}

/** The lab's own Go program (lab/real/app): the app and the pause process of the images. Cached by source hash. */
export async function buildApp(say: (s: string) => void = (s) => process.stderr.write(`[lab build] ${s}\n`)): Promise<string> {
  const src = join(repoRoot, 'lab/real/app');
  const { createHash } = await import('node:crypto');
  const h = createHash('sha256');
  for (const f of ['go.mod', 'main.go']) h.update(f).update(readFileSync(join(src, f)));
  const dir = join(CACHE_ROOT, 'app', h.digest('hex').slice(0, 16));
  const out = join(dir, 'rolltrace-app');
  if (existsSync(out)) return out;
  mkdirSync(dir, { recursive: true });
  say('building the lab app (lab/real/app)');
  await step('go', ['build', '-trimpath', '-ldflags', '-s -w', '-o', out + '.tmp', '.'], src, join(dir, 'build.log'), false);
  renameSync(out + '.tmp', out);
  return out;
}
