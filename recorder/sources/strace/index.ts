/**
 * strace source: attaches `strace -f -ttt -y` to the processes of the watched pods on this node (found
 * from pod UIDs in /proc/PID/cgroup) and to every --pid — in `lazy` mode (the default) only once their
 * termination begins (deletionTimestamp seen by the kube source, or a SIGTERM generated to them seen by
 * ebpf), in `all` mode from the start (see attach.ts for the why and the cost). Lines go through the
 * pure StraceParser. Clock: kernel realtime as read by the tracer (-ttt, µs).
 * --seccomp-bpf is not used: strace refuses it for processes attached with -p (it only applies to
 * processes strace starts), so every traced thread stops for each syscall of the traced set.
 * Each attach is one `process-attached` event stamped when strace reported "Process N attached" (the
 * instant from which every syscall and signal of N is seen), with the mode, the reason and the trigger.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { ev, type ProcessAttachedAttrs } from '../../../schemas/events.js';
import { nowNs } from '../../clock.js';
import type { Sink } from '../../bundle-writer.js';
import type { Preflight, RecordContext, RecordOptions, Source, SourceStats } from '../../source.js';
import {
  tasksOf, cgroupOf, cmdlineOf, commOf, findPodPids, listenersOf, netnsAddrs, netnsOf, rawCgroup, tgidOf,
} from '../../procfs/index.js';
import { StraceParser } from './parse.js';
import { AttachPlanner, type AttachDecision, type AttachTrigger, type StraceMode } from './attach.js';

export const STRACE_SYSCALLS = 'bind,listen,accept,accept4,close,shutdown,exit_group';

export function straceArgs(pids: number[]): string[] {
  // no -q: strace's "Process N attached" on stderr tells when the attach took effect
  return ['-o', '|cat', '-f', '-ttt', '-y', '-e', `trace=${STRACE_SYSCALLS}`, '-e', 'signal=!SIGURG,SIGCHLD,SIGWINCH', ...pids.flatMap((p) => ['-p', String(p)])];
}

/** "strace: Process 123 attached" / "attach: ptrace(PTRACE_SEIZE, 123): No such process" (pure). */
export function parseStraceNotice(line: string): { pid: number; attached: true } | { pid: number; attached: false; error: string } | { pid: number; detached: true } | null {
  const l = line.replace(/^strace: /, '');
  let m = /^Process (\d+) attached/.exec(l);
  if (m) return { pid: Number(m[1]), attached: true };
  m = /^Process (\d+) detached/.exec(l);
  if (m) return { pid: Number(m[1]), detached: true };
  m = /^attach: ptrace\(PTRACE_\w+, (\d+)\): (.*)$/.exec(l);
  if (m) return { pid: Number(m[1]), attached: false, error: m[2]! };
  return null;
}

/**
 * How long an attach waits for strace's report before its event is written anyway (with the request
 * instant, confirmed: false): a recorder killed meanwhile loses at most this much, like the writer's
 * flush. A report arriving later still writes the confirmed event.
 */
const CONFIRM_TIMEOUT_MS = 1000;

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

  let planner: AttachPlanner | null = null;
  let mode: StraceMode = opts.straceMode ?? 'lazy';

  function trigger(t: 'start' | 'pods'): AttachTrigger {
    const pids = new Map([...podPids()].map(([pid, m]) => [pid, m.podUid]));
    const terminating = new Set([...(ctx?.pods.values() ?? [])].filter((p) => p.terminating).map((p) => p.uid));
    return { t, ts: nowNs(), pids, terminating };
  }

  function decide(tr: AttachTrigger): void {
    if (!planner || stopping) return;
    for (const d of planner.push(tr)) attach(d);
  }

  /** one process-attached per pid, written when strace confirms (or gives up): pending until then */
  const pending = new Map<number, { attrs: ProcessAttachedAttrs; timer: NodeJS.Timeout }>();
  /** written unconfirmed on timeout: a late report still gets its confirmed event */
  const overdue = new Map<number, ProcessAttachedAttrs>();
  function settle(pid: number, confirmed: boolean, error?: string, timedOut = false): void {
    const p = pending.get(pid);
    const attrs = p?.attrs ?? (confirmed ? overdue.get(pid) : undefined);
    if (!attrs || !sink) return;
    if (p) { pending.delete(pid); clearTimeout(p.timer); } else overdue.delete(pid);
    if (timedOut) overdue.set(pid, attrs);
    const ts = confirmed ? nowNs() : attrs.requested_ns!;
    sink.event(ev('process-attached', ts, name, `pid:${pid}`, { ...attrs, confirmed, ...(error ? { error } : {}) }));
    events++;
  }

  function attach(d: AttachDecision): void {
    const fresh = d.pids.filter((p) => !traced.has(p));
    if (fresh.length === 0 || !sink || stopping) return;
    const now = nowNs();
    for (const pid of fresh) {
      traced.add(pid);
      tgidCache.set(pid, pid);
      for (const t of tasksOf(pid)) tgidCache.set(t, pid);
      const cg = cgroupOf(pid);
      const listeners = listenersOf(pid);
      for (const l of listeners) parser.addListener({ pid, ...l });
      const comm = commOf(pid);
      const attrs: ProcessAttachedAttrs = {
        pid, comm, cmdline: cmdlineOf(pid), pod_uid: cg?.podUid ?? null, container_id: cg?.containerId ?? null,
        cgroup: rawCgroup(pid) ?? undefined, netns: netnsOf(pid), addrs: netnsAddrs(pid),
        listeners: listeners.map((l) => ({ fd: l.fd, addr: l.addr, port: l.port })),
        mode, reason: d.reason, trigger_ns: d.ts, requested_ns: now,
      };
      pending.set(pid, { attrs, timer: setTimeout(() => settle(pid, false, `strace had not reported the attach within ${CONFIRM_TIMEOUT_MS / 1000} s`, true), CONFIRM_TIMEOUT_MS) });
      for (const l of listeners) {
        sink.event(ev('listen', now, name, `pid:${pid}`, { pid, comm, fd: l.fd, addr: l.addr, port: l.port, how: 'proc', netns: netnsOf(pid) }));
        events++;
      }
    }
    // -o '|cat': the trace on stdout (through cat: node's stdio is a socket strace cannot open) with a pid on every line; strace's own messages on stderr
    const child = spawn(bin, straceArgs(fresh), { stdio: ['ignore', 'pipe', 'pipe'] });
    children.add(child);
    createInterface({ input: child.stderr! }).on('line', (line) => {
      const n = parseStraceNotice(line);
      if (n && 'detached' in n) return;
      if (n && n.attached) { settle(n.pid, true); return; }
      // a failed attach is in the bundle (process-attached, confirmed: false): a process that exits
      // right after its SIGTERM is the usual case in lazy mode, not worth a line on the terminal
      if (n && !n.attached) { settle(n.pid, false, n.error); return; }
      ctx?.log(`strace: ${line.replace(/^strace: /, '')}`);
    });
    const rl = createInterface({ input: child.stdout! });
    rl.on('line', (line) => {
      if (process.env.ROLLTRACE_STRACE_DEBUG) process.stderr.write(`[strace] ${line}\n`);
      for (const e of parser.line(line)) { sink?.event(e); events++; }
    });
    child.on('exit', (code) => {
      children.delete(child);
      for (const pid of fresh) settle(pid, false, `strace exited (${code}) before reporting the attach`);
    });
    child.on('error', (e) => { ctx?.log(`strace: ${e.message}`); });
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
        detail: `${version}; -f -ttt (realtime, µs, stamped in the tracer); ${pids.length} --pid, ${pods} pod processes now; `
          + `syscalls ${STRACE_SYSCALLS} + signals; no --seccomp-bpf (unsupported with -p)`,
      };
    },
    async start(s: Sink, c: RecordContext): Promise<void> {
      sink = s; ctx = c;
      mode = c.straceMode?.mode ?? opts.straceMode ?? 'lazy';
      planner = new AttachPlanner(mode, explicitPids());
      c.onPodsChanged(() => decide(trigger('pods')));
      c.onSignal?.((sig) => decide({ t: 'signal', ts: sig.ts, pid: sig.pid, signame: sig.signame, podUid: sig.podUid }));
      // the ebpf source failed: nothing sees SIGTERM any more, trace everything from now on
      c.onSourceFailed?.((failed) => {
        if (failed !== 'ebpf' || !planner || planner.mode === 'all') return;
        mode = 'all';
        planner = planner.escalate();
        decide(trigger('start'));
      });
      decide(trigger('start'));
      // give strace time to seize the threads so the first events are not lost
      if (traced.size) await new Promise((r) => setTimeout(r, 200));
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
      for (const pid of [...pending.keys()]) settle(pid, false, 'recording stopped before strace reported the attach');
      if (sink && parser.malformed) sink.dropped(name, parser.malformed);
    },
    stats(): SourceStats {
      return { events, dropped: parser.malformed, extra: `${mode} ${traced.size} pids` };
    },
  };
}
