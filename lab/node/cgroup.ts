/**
 * Kubelet-shaped cgroup v2 paths for pods:
 * <cgroup2 root>/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod<uid_>.slice/cri-containerd-<64hex>.scope
 */
import { mkdirSync, readFileSync, rmdirSync, existsSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { execFileSync } from 'node:child_process';

/**
 * Where the cgroup v2 hierarchy is mounted in this mount namespace. `ip netns exec` gives its children a
 * fresh /sys without cgroup mounts: there the lab mounts cgroup2 (private to that mount namespace,
 * same hierarchy) under /run/rolltrace-lab/.cgroup2.
 */
export function cgroup2Root(): string {
  const find = () => readFileSync('/proc/self/mounts', 'utf8').split('\n').map((l) => l.split(' ')).find((f) => f[2] === 'cgroup2')?.[1];
  const m = find();
  if (m) return m;
  const dir = '/run/rolltrace-lab/.cgroup2';
  mkdirSync(dir, { recursive: true });
  execFileSync('mount', ['-t', 'cgroup2', 'cgroup2', dir]);
  return find() ?? dir;
}

/** A cgroup path relative to the hierarchy root (as /proc/PID/cgroup shows it) and back. */
export const relCgroup = (root: string, abs: string) => abs.startsWith(root) ? abs.slice(root.length) || '/' : abs;
export const absCgroup = (root: string, rel: string) => join(root, rel);

export interface PodCgroup { podDir: string; scopeDir: string; containerId: string }

export function podCgroupPaths(root: string, uid: string, containerId = randomBytes(32).toString('hex')): PodCgroup {
  const podDir = join(root, 'kubepods.slice', 'kubepods-besteffort.slice', `kubepods-besteffort-pod${uid.replace(/-/g, '_')}.slice`);
  return { podDir, scopeDir: join(podDir, `cri-containerd-${containerId}.scope`), containerId };
}

export function createPodCgroup(cg: PodCgroup): void {
  mkdirSync(cg.scopeDir, { recursive: true });
}

/** Kill what is left in the scope, then rmdir leaf first; parents only when empty. */
export function removePodCgroup(cg: { podDir: string; scopeDir: string }): void {
  try {
    const pids = readFileSync(join(cg.scopeDir, 'cgroup.procs'), 'utf8').split('\n').filter(Boolean).map(Number);
    for (const p of pids) { try { process.kill(p, 'SIGKILL'); } catch { /* gone */ } }
  } catch { /* no cgroup */ }
  for (let i = 0; i < 50; i++) {
    try { if (existsSync(cg.scopeDir)) rmdirSync(cg.scopeDir); break; } catch { Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 20); }
  }
  try { if (existsSync(cg.podDir)) rmdirSync(cg.podDir); } catch { /* busy */ }
  const bestEffort = join(cg.podDir, '..');
  try { rmdirSync(bestEffort); } catch { /* others use it */ }
  try { rmdirSync(join(bestEffort, '..')); } catch { /* others use it */ }
}
