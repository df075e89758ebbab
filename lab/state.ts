/**
 * What a lab made, appended as it is made to /run/rolltrace-lab/<prefix>/resources (one line each:
 * `netns NAME`, `cgroup PODDIR SCOPEDIR`, `pid PID STARTTIME`), so `rolltrace lab down` can remove
 * everything even after a SIGKILL of the lab. `sweep` also removes any netns with the lab prefix shape.
 */
import { appendFileSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { deleteNetns, listNetns } from './node/netns.js';
import { absCgroup, cgroup2Root, removePodCgroup } from './node/cgroup.js';

export const STATE_ROOT = '/run/rolltrace-lab';
export const PREFIX_RE = /^rtl[0-9a-f]{6}-/;

export function procStartTime(pid: number): string | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19] ?? null;
  } catch { return null; }
}

export class LabState {
  readonly dir: string;
  constructor(readonly prefix: string) {
    this.dir = join(STATE_ROOT, prefix);
    mkdirSync(this.dir, { recursive: true });
  }
  private add(line: string) { appendFileSync(join(this.dir, 'resources'), line + '\n'); }
  netns(name: string) { this.add(`netns ${name}`); }
  cgroup(podDir: string, scopeDir: string) { this.add(`cgroup ${podDir} ${scopeDir}`); }
  pid(pid: number) { this.add(`pid ${pid} ${procStartTime(pid) ?? '?'}`); }
  info(key: string, value: string) { this.add(`info ${key} ${value}`); }
}

export interface Cleanup { killed: number; netns: string[]; cgroups: number; labs: string[] }

/** Remove one lab's resources (processes first, then namespaces, then cgroups). */
export function cleanupLab(prefix: string): Cleanup {
  const dir = join(STATE_ROOT, prefix);
  const res: Cleanup = { killed: 0, netns: [], cgroups: 0, labs: [prefix] };
  let lines: string[] = [];
  try { lines = readFileSync(join(dir, 'resources'), 'utf8').split('\n').filter(Boolean); } catch { /* none */ }
  for (const l of lines) {
    const [k, a, b] = l.split(' ');
    if (k === 'pid' && a) {
      const pid = Number(a);
      if (pid !== process.pid && procStartTime(pid) === b) { try { process.kill(pid, 'SIGKILL'); res.killed++; } catch { /* gone */ } }
    }
  }
  const nsList = new Set(listNetns());
  for (const l of lines) {
    const [k, a] = l.split(' ');
    if (k === 'netns' && a && nsList.has(a)) { deleteNetns(a); res.netns.push(a); }
  }
  const cgLines = lines.filter((l) => l.startsWith('cgroup ')).reverse();
  if (cgLines.length) {
    const root = cgroup2Root();
    for (const l of cgLines) {
      // paths are stored relative to the cgroup2 root (mount points differ between mount namespaces)
      const [, a, b] = l.split(' ');
      if (!a || !b) continue;
      const podDir = absCgroup(root, a), scopeDir = absCgroup(root, b);
      if (existsSync(scopeDir) || existsSync(podDir)) { removePodCgroup({ podDir, scopeDir }); res.cgroups++; }
    }
  }
  for (const l of lines) {
    const [k, a, b] = l.split(' ');
    if (k === 'info' && a === 'workdir' && b && b.startsWith('/tmp/rtl')) rmSync(b, { recursive: true, force: true });
  }
  rmSync(dir, { recursive: true, force: true });
  return res;
}

/** `lab down`: every lab with a state dir, plus any netns with a lab-shaped prefix. */
export function sweepAll(): Cleanup {
  const total: Cleanup = { killed: 0, netns: [], cgroups: 0, labs: [] };
  let dirs: string[] = [];
  try { dirs = readdirSync(STATE_ROOT); } catch { /* none */ }
  for (const d of dirs) {
    const r = cleanupLab(d);
    total.killed += r.killed; total.netns.push(...r.netns); total.cgroups += r.cgroups; total.labs.push(d);
  }
  for (const ns of listNetns()) if (PREFIX_RE.test(ns)) { deleteNetns(ns); total.netns.push(ns); }
  return total;
}
