/** Small process helpers for the lab (root, Linux). */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { accessSync, constants } from 'node:fs';
import { delimiter, join } from 'node:path';

export class CmdError extends Error {}

/** Run a command synchronously; throw with its stderr on failure unless allowFail. */
export function run(cmd: string, args: string[], opts: { input?: string; allowFail?: boolean } = {}): { code: number; stdout: string; stderr: string } {
  const r = spawnSync(cmd, args, { input: opts.input, encoding: 'utf8', maxBuffer: 64 << 20 });
  const code = r.status ?? (r.error ? 127 : 1);
  if (code !== 0 && !opts.allowFail) {
    throw new CmdError(`${cmd} ${args.join(' ')}: ${(r.stderr || String(r.error ?? '')).trim().split('\n').slice(0, 3).join(' | ')}`);
  }
  return { code, stdout: r.stdout ?? '', stderr: r.stderr ?? '' };
}

/** Run a command asynchronously (stdin optional) and resolve with its result. */
export function runAsync(cmd: string, args: string[], input?: string): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const p = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '', stderr = '';
    p.stdout.on('data', (d) => { stdout += d; });
    p.stderr.on('data', (d) => { stderr += d; });
    p.on('error', (e) => resolve({ code: 127, stdout, stderr: stderr + String(e) }));
    p.on('close', (code) => resolve({ code: code ?? 1, stdout, stderr }));
    p.stdin.end(input ?? '');
  });
}

/** Whether an executable named cmd is on PATH. */
export function onPath(cmd: string): boolean {
  for (const dir of (process.env.PATH ?? '').split(delimiter)) {
    if (!dir) continue;
    try { accessSync(join(dir, cmd), constants.X_OK); return true; } catch { /* not here */ }
  }
  return false;
}

export const nsExec = (ns: string, cmd: string, args: string[]) => ['ip', ['netns', 'exec', ns, cmd, ...args]] as const;

/** Run inside a network namespace (null: current). */
export function runIn(ns: string | null, cmd: string, args: string[], opts: { input?: string; allowFail?: boolean } = {}) {
  return ns ? run('ip', ['netns', 'exec', ns, cmd, ...args], opts) : run(cmd, args, opts);
}

/** Realtime Unix-epoch ns as a JS number, sub-ms from hrtime. */
const base = { ms: Date.now(), hr: process.hrtime.bigint() };
export function nowNs(): number {
  return base.ms * 1e6 + Number(process.hrtime.bigint() - base.hr);
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

export function pidAlive(pid: number): boolean {
  try { process.kill(pid, 0); return true; } catch { return false; }
}

/**
 * The recorder's end as the lab reports it: its exit code, or (timed out / the lab was stopped) SIGINT,
 * then SIGKILL if it has not exited after graceMs.
 */
export async function settleRecorder(rec: ChildProcess, exit: Promise<number | null>, res: number | null | 'timeout' | 'stopped', graceMs: number):
  Promise<{ exitCode: number | null; reason: string | null }> {
  if (res !== 'timeout' && res !== 'stopped') return { exitCode: res, reason: res === 0 ? null : `exit ${res}` };
  rec.kill('SIGINT');
  const r2 = await Promise.race([exit, sleep(graceMs).then(() => null)]);
  if (r2 === null) rec.kill('SIGKILL');
  return { exitCode: r2, reason: res };
}
