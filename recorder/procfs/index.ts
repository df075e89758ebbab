/** Thin I/O wrappers over the pure /proc parsers: pod PIDs, listeners, namespace addresses. */
import { readFileSync, readdirSync, readlinkSync, statSync } from 'node:fs';
import {
  parseCgroupFile, parseFibTrieLocal, parseIfInet6, parseProcNetTcp, socketInode, TCP_LISTEN, type CgroupMatch,
} from './parse.js';

export * from './parse.js';

function read(p: string): string | null { try { return readFileSync(p, 'utf8'); } catch { return null; } }

export function listPids(): number[] {
  return readdirSync('/proc').filter((n) => /^\d+$/.test(n)).map(Number);
}

export function cgroupOf(pid: number): CgroupMatch | null {
  const t = read(`/proc/${pid}/cgroup`);
  return t ? parseCgroupFile(t) : null;
}

export function rawCgroup(pid: number): string | null {
  const t = read(`/proc/${pid}/cgroup`);
  if (!t) return null;
  const l = t.split('\n').find((x) => x.startsWith('0::')) ?? t.split('\n')[0];
  return l ? l.replace(/^\d+:[^:]*:/, '') : null;
}

/** PIDs (thread-group leaders) whose cgroup names one of the pod UIDs. */
export function findPodPids(uids: Set<string>): Map<number, CgroupMatch> {
  const out = new Map<number, CgroupMatch>();
  if (uids.size === 0) return out;
  for (const pid of listPids()) {
    const m = cgroupOf(pid);
    if (m && uids.has(m.podUid)) out.set(pid, m);
  }
  return out;
}

export function tgidOf(tid: number): number | null {
  const t = read(`/proc/${tid}/status`);
  const m = t && /^Tgid:\s+(\d+)/m.exec(t);
  return m ? Number(m[1]) : null;
}

export function commOf(pid: number): string | undefined { return read(`/proc/${pid}/comm`)?.trim(); }
export function cmdlineOf(pid: number): string | undefined {
  return read(`/proc/${pid}/cmdline`)?.split('\0').filter(Boolean).join(' ');
}
export function netnsOf(pid: number): number | undefined {
  try { return statSync(`/proc/${pid}/ns/net`).ino; } catch { return undefined; }
}

/** Listening TCP sockets held by pid: /proc/PID/fd socket inodes against /proc/PID/net/tcp{,6} rows in LISTEN. */
export function listenersOf(pid: number): Array<{ fd: number; addr: string; port: number; inode: number }> {
  const byInode = new Map<number, { addr: string; port: number }>();
  for (const f of ['tcp', 'tcp6']) {
    const t = read(`/proc/${pid}/net/${f}`);
    if (!t) continue;
    for (const r of parseProcNetTcp(t).rows) if (r.state === TCP_LISTEN) byInode.set(r.inode, { addr: r.addr, port: r.port });
  }
  const out: Array<{ fd: number; addr: string; port: number; inode: number }> = [];
  let fds: string[] = [];
  try { fds = readdirSync(`/proc/${pid}/fd`); } catch { return out; }
  for (const fd of fds) {
    let link: string;
    try { link = readlinkSync(`/proc/${pid}/fd/${fd}`); } catch { continue; }
    const ino = socketInode(link);
    const l = ino !== null ? byInode.get(ino) : undefined;
    if (l && ino !== null) out.push({ fd: Number(fd), ...l, inode: ino });
  }
  return out;
}

/** The addresses of pid's network namespace (no loopback, no link-local). */
export function netnsAddrs(pid: number): string[] {
  const v4 = parseFibTrieLocal(read(`/proc/${pid}/net/fib_trie`) ?? '').filter((a) => !a.startsWith('127.'));
  const v6 = parseIfInet6(read(`/proc/${pid}/net/if_inet6`) ?? '')
    .filter((x) => x.scope === 0 && x.addr !== '::1').map((x) => x.addr);
  return [...v4, ...v6];
}

/** Thread ids of a process (/proc/PID/task). */
export function tasksOf(pid: number): number[] {
  try { return readdirSync(`/proc/${pid}/task`).filter((n) => /^\d+$/.test(n)).map(Number); } catch { return []; }
}
