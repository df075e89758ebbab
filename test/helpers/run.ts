import { spawn, type SpawnOptions } from 'node:child_process';

export interface RunResult { code: number; stdout: string; stderr: string }

/**
 * Run a command to completion without blocking the test worker: a spawnSync of minutes (npm install,
 * an image build) starves vitest's worker RPC ("Timeout calling onTaskUpdate"). At the timeout the child
 * gets `killSignal` (SIGKILL unless told: a lab run gets SIGINT, so it tears down what it created).
 */
export function runAsync(cmd: string, args: string[], opts: SpawnOptions & { timeoutMs?: number; killSignal?: NodeJS.Signals } = {}): Promise<RunResult> {
  return new Promise((resolve) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], ...opts });
    let stdout = '';
    let stderr = '';
    child.stdout!.setEncoding('utf8').on('data', (d: string) => { stdout += d; });
    child.stderr!.setEncoding('utf8').on('data', (d: string) => { stderr += d; });
    const timer = setTimeout(() => child.kill(opts.killSignal ?? 'SIGKILL'), opts.timeoutMs ?? 600_000);
    child.on('error', (e) => { clearTimeout(timer); resolve({ code: -1, stdout, stderr: stderr + e.message }); });
    child.on('close', (code) => { clearTimeout(timer); resolve({ code: code ?? -1, stdout, stderr }); });
  });
}
