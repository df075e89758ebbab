import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runAsync } from './run.js';

export const ROOT = join(__dirname, '..', '..');
export const BIN = join(ROOT, 'bin', 'rolltrace.mjs');

export interface CliResult {
  code: number; stdout: string; stderr: string;
  /** with `peakRss`: the child's peak resident set in kB (VmHWM at exit), null when it died before exiting */
  peakRssKb?: number | null;
}

/**
 * Run the real CLI as a user would (bin entry executed directly). `peakRss` runs the same entry under
 * `node --require test/helpers/peak-rss.cjs` to learn the child's peak memory.
 */
export function cli(args: string[], opts: { cwd?: string; timeoutMs?: number; env?: NodeJS.ProcessEnv; peakRss?: boolean } = {}): CliResult {
  if (!opts.peakRss) {
    const r = spawnSync(BIN, args, { encoding: 'utf8', cwd: opts.cwd ?? ROOT, timeout: opts.timeoutMs ?? 60_000, env: opts.env ?? process.env });
    return { code: r.status ?? -1, stdout: r.stdout ?? '', stderr: r.stderr ?? '' };
  }
  const dir = mkdtempSync(join(tmpdir(), 'rt-rss-'));
  const file = join(dir, 'peak');
  try {
    const r = spawnSync(process.execPath, ['--require', join(__dirname, 'peak-rss.cjs'), BIN, ...args], {
      encoding: 'utf8', cwd: opts.cwd ?? ROOT, timeout: opts.timeoutMs ?? 60_000, env: { ...(opts.env ?? process.env), RT_PEAK_RSS_FILE: file },
    });
    let peak: number | null = null;
    try { peak = Number(readFileSync(file, 'utf8')); } catch { /* died before exit */ }
    return { code: r.status ?? -1, stdout: r.stdout ?? '', stderr: r.stderr ?? '', peakRssKb: peak };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * The real CLI, asynchronously: a lab run takes ~20-40 s and a worker blocked in spawnSync that long
 * cannot answer vitest's RPC ("Timeout calling onTaskUpdate"). On timeout: SIGINT (the lab then tears
 * down everything it created).
 */
export function cliAsync(args: string[], timeoutMs = 60_000): Promise<CliResult> {
  return runAsync(BIN, args, { cwd: ROOT, timeoutMs, killSignal: 'SIGINT' });
}
