/**
 * What a real lab made, appended as it is made to /run/rolltrace-real/<prefix>/resources, so that
 * `rolltrace lab down` removes everything also after the lab was killed: processes (pid + start time),
 * namespaces, the cgroup subtree /<prefix> in every hierarchy (kubelet's cgroupRoot: every container,
 * every shim and every lab process lives under it), mounts under the lab's directories, the sysctls
 * kubelet writes (their values before it started), containerd's shim sockets, and the directories.
 * Its own root (not /run/rolltrace-lab): the fast lab's sweep must not see half of a real lab.
 */
import { appendFileSync, existsSync, mkdirSync, readdirSync, readFileSync, rmdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { procStartTime } from '../state.js';
import { deleteNetns, listNetns } from '../node/netns.js';
import { run } from '../sys.js';
import { paths, REAL_STATE_ROOT, realLayout, type RealLayout } from './config.js';

export const REAL_PREFIX_RE = /^rtr[0-9a-f]{6}$/;

export class RealState {
  readonly layout: RealLayout;
  constructor(readonly prefix: string) {
    this.layout = realLayout(prefix);
    mkdirSync(this.layout.state, { recursive: true });
  }
  private add(line: string) { appendFileSync(paths(this.layout).resources, line + '\n'); }
  pid(pid: number) { this.add(`pid ${pid} ${procStartTime(pid) ?? '?'}`); }
  netns(name: string) { this.add(`netns ${name}`); }
  cgroup(rel: string) { this.add(`cgroup ${rel}`); }
  sysctl(key: string, value: string) { this.add(`sysctl ${key} ${value}`); }
  dir(path: string) { this.add(`dir ${path}`); }
  info(key: string, value: string) { this.add(`info ${key} ${value}`); }
}

/** The mount point of every cgroup hierarchy (v1 controllers, named ones, and the v2 one). */
export function cgroupMounts(): string[] {
  return readFileSync('/proc/self/mounts', 'utf8').split('\n').map((l) => l.split(' '))
    .filter((f) => f[2] === 'cgroup' || f[2] === 'cgroup2').map((f) => f[1]!);
}

/** Create /<rel> in every hierarchy; cpuset needs cpus and mems before a task can join. */
export function makeCgroup(rel: string): void {
  for (const m of cgroupMounts()) {
    const dir = join(m, rel);
    mkdirSync(dir, { recursive: true });
    if (existsSync(join(dir, 'cpuset.cpus'))) {
      // copy down from the first ancestor that has them
      const parts = rel.split('/').filter(Boolean);
      for (let i = 1; i <= parts.length; i++) {
        const d = join(m, ...parts.slice(0, i));
        for (const f of ['cpuset.cpus', 'cpuset.mems']) {
          if (!readFileSync(join(d, f), 'utf8').trim()) writeFileSync(join(d, f), readFileSync(join(d, '..', f), 'utf8').trim());
        }
      }
    }
  }
}

/** cgroup.procs of /<rel> in every hierarchy, for a process to join them all. */
export const cgroupProcsFiles = (rel: string) => cgroupMounts().map((m) => join(m, rel, 'cgroup.procs')).filter((f) => existsSync(f));

function walkDirs(dir: string): string[] {
  const out: string[] = [];
  let ents: string[] = [];
  try { ents = readdirSync(dir); } catch { return out; }
  for (const e of ents) {
    const p = join(dir, e);
    try { if (statSync(p).isDirectory()) out.push(...walkDirs(p)); } catch { /* gone */ }
  }
  out.push(dir);
  return out; // children before parents
}

/** Every PID in a cgroup subtree (any hierarchy). */
export function pidsUnder(rel: string): number[] {
  const pids = new Set<number>();
  for (const m of cgroupMounts()) {
    for (const d of walkDirs(join(m, rel))) {
      try { for (const p of readFileSync(join(d, 'cgroup.procs'), 'utf8').split('\n')) if (p) pids.add(Number(p)); } catch { /* gone */ }
    }
  }
  return [...pids];
}

/** Kill everything in the subtree (until it stays empty), then rmdir it bottom-up in every hierarchy. */
export function removeCgroupTree(rel: string): number {
  let killed = 0;
  for (let round = 0; round < 100; round++) {
    const pids = pidsUnder(rel).filter((p) => p !== process.pid);
    if (!pids.length) break;
    for (const p of pids) { try { process.kill(p, 'SIGKILL'); killed++; } catch { /* gone */ } }
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 50);
  }
  for (const m of cgroupMounts()) {
    for (const d of walkDirs(join(m, rel))) {
      for (let i = 0; i < 40; i++) {
        try { rmdirSync(d); break; } catch (e) {
          if ((e as NodeJS.ErrnoException).code === 'ENOENT') break;
          Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 50);
        }
      }
    }
  }
  return killed;
}

/** Mount points at or under one of the dirs, deepest first. */
export function mountsUnder(dirs: string[]): string[] {
  const mi = readFileSync('/proc/self/mountinfo', 'utf8').split('\n').map((l) => l.split(' ')[4]).filter((x): x is string => !!x)
    .map((m) => m.replace(/\\040/g, ' '));
  return mi.filter((m) => dirs.some((d) => m === d || m.startsWith(d + '/'))).sort((a, b) => b.length - a.length);
}

export interface RealCleanup { prefix: string; killed: number; netns: string[]; mounts: number; cgroups: boolean; sysctls: number; dirs: string[] }

/** Remove one real lab: processes, cgroups, mounts, namespaces, sysctls, sockets, directories. */
export function cleanupRealLab(prefix: string): RealCleanup {
  const l = realLayout(prefix);
  const res: RealCleanup = { prefix, killed: 0, netns: [], mounts: 0, cgroups: false, sysctls: 0, dirs: [] };
  let lines: string[] = [];
  try { lines = readFileSync(paths(l).resources, 'utf8').split('\n').filter(Boolean); } catch { /* none */ }
  const rec = (kind: string) => lines.filter((x) => x.startsWith(kind + ' ')).map((x) => x.split(' ').slice(1));
  // 1. the lab's processes (daemons first: nothing restarts the rest)
  for (const [pid, st] of rec('pid')) {
    const n = Number(pid);
    if (n !== process.pid && procStartTime(n) === st) { try { process.kill(n, 'SIGKILL'); res.killed++; } catch { /* gone */ } }
  }
  // 2. shims' sockets (containerd keeps them under /run/containerd/s/ whatever its state dir)
  const shimSockets: string[] = [];
  const taskDir = join(paths(l).containerdState, 'io.containerd.runtime.v2.task');
  for (const d of walkDirs(taskDir)) {
    try { const a = readFileSync(join(d, 'address'), 'utf8').trim().replace(/^unix:\/\//, ''); if (a.startsWith('/run/containerd/s/')) shimSockets.push(a); } catch { /* none */ }
  }
  // 3. every process in the cgroup subtree: containers, shims, pause
  const cgs = rec('cgroup').map(([r]) => r!).filter(Boolean);
  for (const rel of cgs) { res.killed += removeCgroupTree(rel); res.cgroups = true; }
  // 4. mounts under the lab's directories (rootfs overlays, pod netns, shm, kubelet volumes)
  const dirs = [l.state, l.data, ...rec('dir').map(([d]) => d!)];
  for (const m of mountsUnder(dirs)) { if (run('umount', ['-l', m], { allowFail: true }).code === 0) res.mounts++; }
  // 5. namespaces
  const have = new Set(listNetns());
  for (const [ns] of rec('netns')) if (ns && have.has(ns)) { deleteNetns(ns); res.netns.push(ns); }
  // 6. sysctls back to what they were before kubelet started (the first value recorded wins)
  const seen = new Set<string>();
  for (const [k, v] of rec('sysctl')) {
    if (!k || v === undefined || seen.has(k)) continue;
    seen.add(k);
    try { writeFileSync(join('/proc/sys', k), v); res.sysctls++; } catch { /* read-only */ }
  }
  for (const s of shimSockets) rmSync(s, { force: true });
  // the shims made these under containerd's fixed /run/containerd (sockets, fifos, runc state); removed
  // when empty (another lab's, or a system containerd's, are not)
  if (res.cgroups) {
    for (const d of ['/run/containerd/s', '/run/containerd/fifo', '/run/containerd/runc/k8s.io', '/run/containerd/runc', '/run/containerd']) {
      try { rmdirSync(d); } catch { /* in use, not empty or absent */ }
    }
  }
  for (const d of dirs) { if (existsSync(d)) { rmSync(d, { recursive: true, force: true }); res.dirs.push(d); } }
  return res;
}

/** Every real lab on the machine (state dirs and namespaces named rtr<6 hex>-*). */
export function sweepRealLabs(): RealCleanup[] {
  let dirs: string[] = [];
  try { dirs = readdirSync(REAL_STATE_ROOT).filter((d) => REAL_PREFIX_RE.test(d)); } catch { /* none */ }
  const out = dirs.map((d) => cleanupRealLab(d));
  for (const ns of listNetns()) if (/^rtr[0-9a-f]{6}-/.test(ns)) { deleteNetns(ns); out.push({ prefix: ns, killed: 0, netns: [ns], mounts: 0, cgroups: false, sysctls: 0, dirs: [] }); }
  return out;
}

/** What is left of a real lab (empty after a clean `lab down`): namespaces, processes, cgroups, mounts, dirs. */
export function realLeftovers(prefix: string): string[] {
  const l = realLayout(prefix);
  const out: string[] = [];
  for (const ns of listNetns()) if (ns.startsWith(`${prefix}-`)) out.push(`netns ${ns}`);
  for (const m of cgroupMounts()) if (existsSync(join(m, prefix))) out.push(`cgroup ${join(m, prefix)}`);
  for (const pid of readdirSync('/proc').filter((d) => /^\d+$/.test(d))) {
    try {
      // a zombie (killed, not yet reaped by its new parent) holds nothing but its PID
      const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
      if (stat.slice(stat.lastIndexOf(')') + 2).startsWith('Z')) continue;
      const cg = readFileSync(`/proc/${pid}/cgroup`, 'utf8');
      if (cg.includes(`:/${prefix}/`) || cg.includes(`:/${prefix}\n`)) out.push(`process ${pid} ${readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').join(' ').trim()}`);
    } catch { /* gone */ }
  }
  for (const m of mountsUnder([l.state, l.data])) out.push(`mount ${m}`);
  for (const d of [l.state, l.data]) if (existsSync(d)) out.push(`dir ${d}`);
  return out;
}
