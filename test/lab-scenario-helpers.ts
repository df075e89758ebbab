import { existsSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { cgroup2Root, podCgroupPaths } from '../lab/node/cgroup.js';
import { labSession, newPrefix } from '../lab/cli.js';
import type { Truth } from '../lab/truth.js';

/** Run a scenario with the lab alone (its own rollout and traffic, no recorder); the truth file is removed after reading. */
export async function runScenario(scenario: string): Promise<{ code: number; prefix: string; truth: Truth | null }> {
  const prefix = newPrefix();
  const truthPath = `/tmp/${prefix}-truth.json`;
  try {
    const { code } = await labSession({ scenario, out: '', truth: truthPath, mode: 'run', noRecorder: true, prefix, onLine: () => undefined });
    const truth = existsSync(truthPath) ? JSON.parse(readFileSync(truthPath, 'utf8')) as Truth : null;
    return { code, prefix, truth };
  } finally {
    rmSync(truthPath, { force: true });
  }
}

/** What a finished lab must not leave behind. */
export function leftovers(prefix: string, truth: Truth): string[] {
  const out: string[] = [];
  const ns = spawnSync('ip', ['netns', 'list'], { encoding: 'utf8' }).stdout.split('\n').map((l) => l.split(' ')[0]!).filter((n) => n.startsWith(prefix));
  out.push(...ns.map((n) => `netns ${n}`));
  const root = cgroup2Root();
  for (const p of truth.allPods) {
    const dir = podCgroupPaths(root, p.uid).podDir;
    if (existsSync(dir)) out.push(`cgroup ${dir}`);
  }
  const names = new Set(truth.allPods.map((p) => p.name));
  for (const pid of readdirSync('/proc').filter((d) => /^\d+$/.test(d))) {
    let cmd = '';
    try { cmd = readFileSync(join('/proc', pid, 'cmdline'), 'utf8').split('\0').join(' '); } catch { continue; }
    if (cmd.includes(prefix) || (cmd.includes('server.mjs') && [...names].some((n) => cmd.includes(n)))) out.push(`process ${pid} ${cmd}`);
  }
  if (existsSync(`/run/rolltrace-lab/${prefix}`)) out.push(`state /run/rolltrace-lab/${prefix}`);
  return out;
}
