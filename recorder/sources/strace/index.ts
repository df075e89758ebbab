/**
 * strace source: attaches `strace -f -ttt -q -y` to the processes of the watched pods on this node
 * (found from pod UIDs in /proc/PID/cgroup), to pods that appear later, and to every --pid. Lines go
 * through the pure StraceParser. Clock: kernel realtime as read by the tracer (-ttt, µs).
 * --seccomp-bpf is not used: strace refuses it for processes attached with -p (it only applies to
 * processes strace starts), so every traced thread stops for each syscall of the traced set.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { ev } from '../../../schemas/events.js';
import type { Sink } from '../../bundle-writer.js';
import type { Preflight, RecordContext, RecordOptions, Source, SourceStats } from '../../source.js';
import {
  tasksOf, cgroupOf, cmdlineOf, commOf, findPodPids, listenersOf, netnsAddrs, netnsOf, rawCgroup, tgidOf,
} from '../../procfs/index.js';
import { StraceParser } from './parse.js';

export const STRACE_SYSCALLS = 'bind,listen,accept,accept4,close,shutdown,exit_group';

export function straceArgs(pids: number[]): string[] {
  return ['-o', '|cat', '-f', '-ttt', '-q', '-y', '-e', `trace=${STRACE_SYSCALLS}`, '-e', 'signal=!SIGURG,SIGCHLD,SIGWINCH', ...pids.flatMap((p) => ['-p', String(p)])];
}

export function create(opts: RecordOptions): Source {
  const name = 'strace';
  const children = new Set<ChildProcess>();
  const traced = new Set<number>();
  const tgidCache = new Map<number, number>();
  let sink: Sink | null = null;
  let ctx: RecordContext | null = null;
  let events = 0;
  let stopping = false;
  const bin = process.env.ROLLTRACE_STRACE ?? 'strace';
  const parser = new StraceParser({
    tgidOf: (tid) => {
      let t = tgidCache.get(tid);
      if (t === undefined) { t = tgidOf(tid) ?? tid; tgidCache.set(tid, t); }
      return t;
    },
  });

  function explicitPids(): number[] {
    return opts.pid.map(Number).filter((p) => Number.isInteger(p) && p > 0);
  }

  function podPids(): Map<number, { podUid: string; containerId: string | null }> {
    if (!ctx || ctx.pods.size === 0) return new Map();
    return findPodPids(new Set(ctx.pods.keys()));
  }

  function attach(pids: number[]): void {
    const fresh = pids.filter((p) => !traced.has(p));
    if (fresh.length === 0 || !sink || stopping) return;
    const now = Date.now() * 1e6;
    for (const pid of fresh) {
      traced.add(pid);
      tgidCache.set(pid, pid);
      for (const t of tasksOf(pid)) tgidCache.set(t, pid);
      const cg = cgroupOf(pid);
      const listeners = listenersOf(pid);
      for (const l of listeners) parser.addListener({ pid, ...l });
      const comm = commOf(pid);
      sink.event(ev('process-attached', now, name, `pid:${pid}`, {
        pid, comm, cmdline: cmdlineOf(pid), pod_uid: cg?.podUid ?? null, container_id: cg?.containerId ?? null,
        cgroup: rawCgroup(pid) ?? undefined, netns: netnsOf(pid), addrs: netnsAddrs(pid),
        listeners: listeners.map((l) => ({ fd: l.fd, addr: l.addr, port: l.port })),
      }));
      events++;
      for (const l of listeners) {
        sink.event(ev('listen', now, name, `pid:${pid}`, { pid, comm, fd: l.fd, addr: l.addr, port: l.port, how: 'proc', netns: netnsOf(pid) }));
        events++;
      }
    }
    // -o '|cat': the trace on stdout (through cat: node's stdio is a socket strace cannot open) with a pid on every line; strace's own messages on stderr
    const child = spawn(bin, straceArgs(fresh), { stdio: ['ignore', 'pipe', 'pipe'] });
    children.add(child);
    createInterface({ input: child.stderr! }).on('line', (line) => ctx?.log(`strace: ${line.replace(/^strace: /, '')}`));
    const rl = createInterface({ input: child.stdout! });
    rl.on('line', (line) => {
      if (process.env.ROLLTRACE_STRACE_DEBUG) process.stderr.write(`[strace] ${line}\n`);
      for (const e of parser.line(line)) { sink?.event(e); events++; }
    });
    child.on('exit', () => { children.delete(child); });
    child.on('error', (e) => { ctx?.log(`strace: ${e.message}`); });
  }

  function refreshPods(): void {
    attach([...podPids().keys()]);
  }

  return {
    name,
    async preflight(c: RecordContext): Promise<Preflight> {
      const v = spawnSync(bin, ['-V'], { encoding: 'utf8' });
      if (v.error || v.status !== 0) {
        return { ok: false, detail: `${bin} not found or not runnable (${v.error?.message ?? v.stderr.trim()})`, clock: 'kernel' };
      }
      const version = v.stdout.split('\n')[0]!.trim();
      if (process.getuid && process.getuid() !== 0) {
        return { ok: false, detail: 'needs root (ptrace of other users\' processes)', clock: 'kernel', versions: { strace: version } };
      }
      const pids = explicitPids();
      const dead = pids.filter((p) => tgidOf(p) === null);
      if (dead.length) return { ok: false, detail: `--pid ${dead.join(',')}: no such process`, clock: 'kernel', versions: { strace: version } };
      const pods = c.pods.size ? findPodPids(new Set(c.pods.keys())).size : 0;
      return {
        ok: true, clock: 'kernel', versions: { strace: version },
        detail: `${version}; -f -ttt (realtime, µs, stamped in the tracer); ${pids.length} --pid, ${pods} pod processes now, more as pods appear; `
          + `syscalls ${STRACE_SYSCALLS} + signals; no --seccomp-bpf (unsupported with -p)`,
      };
    },
    async start(s: Sink, c: RecordContext): Promise<void> {
      sink = s; ctx = c;
      c.onPodsChanged(() => refreshPods());
      attach([...explicitPids(), ...podPids().keys()]);
      // give strace time to seize the threads so the first events are not lost
      await new Promise((r) => setTimeout(r, 200));
    },
    async stop(): Promise<void> {
      stopping = true;
      const waits = [...children].map((ch) => new Promise<void>((res) => {
        if (ch.exitCode !== null || ch.signalCode !== null) return res();
        const t = setTimeout(() => { ch.kill('SIGKILL'); }, 3000);
        ch.on('exit', () => { clearTimeout(t); res(); });
        ch.kill('SIGINT'); // strace detaches cleanly on SIGINT
      }));
      await Promise.all(waits);
      if (sink && parser.malformed) sink.dropped(name, parser.malformed);
    },
    stats(): SourceStats {
      return { events, dropped: parser.malformed, extra: `${traced.size} pids` };
    },
  };
}
