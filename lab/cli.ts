/**
 * `rolltrace lab run|up|down`. The host side: builds the node (and client) namespaces, re-execs the
 * lab's control process (lab/run.ts) inside the node namespace, forwards Ctrl-C, and removes every
 * namespace, cgroup and process at the end (also after a failure). `lab down` sweeps what a killed lab
 * left behind, from the state files under /run/rolltrace-lab/ and the netns prefix.
 */
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { mkdtempSync, readFileSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { dirname, join, resolve } from 'node:path';
import { tmpdir } from 'node:os';
import { fileURLToPath } from 'node:url';
import { InputError } from '../schemas/errors.js';
import { createNode, createSecondNode } from './node/netns.js';
import { cleanupLab, LabState, sweepAll } from './state.js';
import { getScenario, SCENARIOS } from './scenarios/index.js';
import { onPath } from './sys.js';
import { packageRoot } from '../schemas/version.js';
import type { RunConfig } from './run.js';

// the lab runs from the sources (tsx: tests, development) or compiled (dist/: the package, the image)
const labDir = dirname(fileURLToPath(import.meta.url));
const compiled = import.meta.url.endsWith('.js');
/** where lab/, recorder/ live: the repository, or dist/ */
const codeRoot = resolve(labDir, '..');
/** the package root (bin/rolltrace.mjs) */
const repoRoot = packageRoot() ?? codeRoot;

export interface LabRunOptions {
  scenario: string; out: string; truth?: string; seed?: number; keep?: boolean; noRecorder?: boolean; recorderTimeoutS?: number; prefix?: string;
  /** a strategic merge patch of the Deployment (JSON text, or a file holding it), applied before recording */
  patch?: string;
}

/** --patch: inline JSON or a file of JSON (e.g. `rolltrace analyze B --format json | jq .recommendation.patch`). */
export function readPatch(p: string): Record<string, unknown> {
  const text = p.trim().startsWith('{') ? p : (() => {
    if (!existsSync(p)) throw new InputError(`--patch ${p}: neither JSON nor an existing file`);
    return readFileSync(p, 'utf8');
  })();
  let v: unknown;
  try { v = JSON.parse(text); } catch (e) { throw new InputError(`--patch: not JSON (${(e as Error).message})`); }
  if (!v || typeof v !== 'object' || Array.isArray(v)) throw new InputError('--patch: a strategic merge patch is a JSON object');
  return v as Record<string, unknown>;
}

function checkRoot(): void {
  if (process.getuid?.() !== 0) throw new InputError('the lab needs root (network namespaces, nftables, cgroups)');
}

/** The tools the lab runs, and the Debian package of each. */
const LAB_TOOLS: Array<[cmd: string, pkg: string]> = [
  ['ip', 'iproute2'], ['nft', 'nftables'], ['iptables-restore', 'iptables'], ['iptables', 'iptables'], ['conntrack', 'conntrack'],
];

function checkTools(): void {
  for (const [cmd, pkg] of LAB_TOOLS) {
    if (!onPath(cmd)) throw new InputError(`the lab needs ${cmd}, not found on PATH (install the ${pkg} package)`);
  }
}

export function newPrefix(): string { return `rtl${randomBytes(3).toString('hex')}`; }

/** Build the lab, run lab/run.ts inside the node ns, tear down. Returns the exit code. */
export async function labSession(opts: LabRunOptions & { mode: 'run' | 'up'; onLine?: (l: string) => void }): Promise<{ code: number; prefix: string }> {
  checkRoot();
  checkTools();
  const sc = getScenario(opts.scenario);
  if (!sc) throw new InputError(`unknown scenario "${opts.scenario}" (one of: ${Object.keys(SCENARIOS).join(', ')})`);
  const patch = opts.patch ? readPatch(opts.patch) : null;
  const prefix = opts.prefix ?? newPrefix();
  const state = new LabState(prefix);
  state.pid(process.pid);
  const workDir = mkdtempSync(join(tmpdir(), `${prefix}-`));
  state.info('workdir', workDir);
  let code = 1;
  let child: ReturnType<typeof spawn> | null = null;
  let interrupted = false;
  const onSig = () => { interrupted = true; if (child?.pid) { try { child.kill('SIGTERM'); } catch { /* gone */ } } };
  process.on('SIGINT', onSig);
  process.on('SIGTERM', onSig);
  try {
    const node = createNode(prefix, sc.client, (_k, name) => state.netns(name));
    const node2 = sc.secondNode ? createSecondNode(node, (_k, name) => state.netns(name)) : null;
    const cfg: RunConfig = {
      prefix, scenario: sc.name, seed: opts.seed ?? 1, out: opts.out ? resolve(opts.out) : null, truth: opts.truth ? resolve(opts.truth) : null,
      repoRoot, codeRoot, workDir, node, node2, mode: opts.mode, noRecorder: opts.noRecorder, recorderTimeoutS: opts.recorderTimeoutS, patch,
    };
    const cfgPath = join(workDir, 'config.json');
    writeFileSync(cfgPath, JSON.stringify(cfg));
    const runArgs = compiled ? [join(labDir, 'run.js')] : ['--import', 'tsx', join(labDir, 'run.ts')];
    child = spawn('ip', ['netns', 'exec', node.nodeNs, process.execPath, ...runArgs, cfgPath],
      { cwd: repoRoot, stdio: ['ignore', 'pipe', 'inherit'] });
    if (child.pid) state.pid(child.pid);
    const spawnFailed = new Promise<number>((r) => child!.on('error', (e) => { process.stderr.write(`lab: ${e.message}\n`); r(1); }));
    createInterface({ input: child.stdout! }).on('line', (line) => {
      if (opts.onLine) opts.onLine(line); else process.stdout.write(line + '\n');
    });
    code = await Promise.race([spawnFailed, new Promise<number>((r) => child!.on('exit', (c, s) => r(c ?? (s ? 1 : 0))))]);
    if (interrupted) code = 130;
    if (opts.keep && opts.mode === 'run') return { code, prefix };
  } finally {
    process.off('SIGINT', onSig);
    process.off('SIGTERM', onSig);
    if (!(opts.keep && opts.mode === 'run')) {
      cleanupLab(prefix);
      rmSync(workDir, { recursive: true, force: true });
    }
  }
  return { code, prefix };
}

export async function runLabRun(opts: LabRunOptions & { onLine?: (l: string) => void }): Promise<number> {
  if (opts.out && existsSync(opts.out)) throw new InputError(`--out ${opts.out} exists; remove it or choose another path`);
  const { code } = await labSession({ ...opts, mode: 'run' });
  return code === 0 ? 0 : code === 130 ? 130 : 1;
}

export async function runLabUp(opts: { scenario?: string }): Promise<number> {
  const { code } = await labSession({ scenario: opts.scenario ?? 'race', out: '', mode: 'up', onLine: (l) => {
    if (!l.startsWith('LAB ')) { process.stdout.write(l + '\n'); return; }
    const o = JSON.parse(l.slice(4));
    if (o.kind === 'ready') {
      process.stdout.write(`lab up (Ctrl-C to stop, or \`rolltrace lab down\`)\n  node netns: ${o.nodeNs}\n  kubeconfig: ${o.kubeconfig}\n  API server: ${o.url} (inside the node netns)\n  service VIP: ${o.vip}${o.nodePort ? `\n  NodePort: ${o.nodePort}` : ''}\n  record with:\n    ${o.record}\n`);
    } else process.stdout.write(l + '\n');
  } });
  return code === 130 ? 0 : code;
}

export async function runLabDown(): Promise<number> {
  checkRoot();
  const r = sweepAll();
  process.stdout.write(`lab down: ${r.labs.length} lab(s), ${r.netns.length} netns, ${r.cgroups} cgroup(s), ${r.killed} process(es) removed\n`);
  const { sweepRealLabs } = await import('./real/state.js');
  const { describeCleanup } = await import('./real/cli.js');
  process.stdout.write(`lab down: ${describeCleanup(sweepRealLabs())} removed\n`);
  return 0;
}
