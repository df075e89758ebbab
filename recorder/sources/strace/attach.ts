/**
 * When the strace source attaches, and to which processes (issue 14). Pure: triggers in, decisions out.
 *
 * strace stops every traced thread on each syscall of its set: attached to a busy server it costs most
 * of its throughput. eBPF sees what every process needs (SIGTERM generated, LISTEN->CLOSE, RSTs,
 * exits) at ~no cost, so by default (`lazy`) strace attaches only to the processes of a pod whose
 * termination began — the kube source saw its deletionTimestamp, or ebpf saw a SIGTERM generated to
 * one of its processes — and to a --pid process once a SIGTERM is generated to it. From then on it
 * adds what eBPF cannot: the signal as delivered, which fd closed (close/shutdown), accepts while
 * draining, the exit code. `all` attaches to every pod process and --pid from the start (the cost
 * for the whole recording).
 */

import type { StraceMode } from '../../source.js';

export type { StraceMode };
export type AttachReason = 'all' | 'pod-terminating' | 'signal';

/** Something the strace source learnt; `pids` is pid -> pod uid of every process of a watched pod now. */
export type AttachTrigger =
  | { t: 'start'; ts: number; pids: ReadonlyMap<number, string>; terminating: ReadonlySet<string> }
  | { t: 'pods'; ts: number; pids: ReadonlyMap<number, string>; terminating: ReadonlySet<string> }
  | { t: 'signal'; ts: number; pid: number; signame: string; podUid: string | null };

export interface AttachDecision {
  /** instant of the trigger */
  ts: number;
  pids: number[];
  reason: AttachReason;
  /** the pod these pids belong to (null: --pid processes) */
  podUid: string | null;
}

/** Signals that start a process's termination (ebpf traces SIGTERM and SIGKILL; SIGKILL leaves nothing to trace). */
const TERMINATING_SIGNALS = new Set(['SIGTERM']);

export class AttachPlanner {
  private attached = new Set<number>();
  /** pods whose termination began, and why (the first reason wins) */
  private hot = new Map<string, { reason: AttachReason; ts: number }>();
  private explicit: Set<number>;
  private podOf = new Map<number, string>();

  constructor(readonly mode: StraceMode, explicitPids: readonly number[]) {
    this.explicit = new Set(explicitPids);
  }

  /** The same planner in `all` mode (ebpf failed while recording): what was decided stays decided. */
  escalate(): AttachPlanner {
    const p = new AttachPlanner('all', [...this.explicit]);
    for (const pid of this.attached) p.attached.add(pid);
    p.podOf = new Map(this.podOf);
    return p;
  }

  /** PIDs decided so far. */
  get decided(): ReadonlySet<number> { return this.attached; }

  push(tr: AttachTrigger): AttachDecision[] {
    const out: AttachDecision[] = [];
    const take = (pids: Iterable<number>, reason: AttachReason, podUid: string | null, ts: number) => {
      const fresh = [...pids].filter((p) => !this.attached.has(p));
      if (!fresh.length) return;
      for (const p of fresh) this.attached.add(p);
      out.push({ ts, pids: fresh.sort((a, b) => a - b), reason, podUid });
    };
    if (tr.t === 'signal') {
      if (!TERMINATING_SIGNALS.has(tr.signame) || this.mode === 'all') return out;
      const uid = this.podOf.get(tr.pid) ?? tr.podUid;
      // only watched pods (those with processes in the last snapshot): a SIGTERM to any other process
      // of the node is none of this recording's business
      const mine = uid === null ? [] : [...this.podOf].filter(([, u]) => u === uid).map(([p]) => p);
      if (uid !== null && mine.length) {
        if (!this.hot.has(uid)) this.hot.set(uid, { reason: 'signal', ts: tr.ts });
        take(mine.includes(tr.pid) ? mine : [...mine, tr.pid], this.hot.get(uid)!.reason, uid, tr.ts);
      } else if (this.explicit.has(tr.pid)) {
        take([tr.pid], 'signal', null, tr.ts);
      }
      return out;
    }
    this.podOf = new Map(tr.pids);
    if (this.mode === 'all') {
      if (tr.t === 'start') take(this.explicit, 'all', null, tr.ts);
      const byPod = new Map<string, number[]>();
      for (const [pid, uid] of tr.pids) byPod.set(uid, [...(byPod.get(uid) ?? []), pid]);
      for (const [uid, pids] of byPod) take(pids, 'all', uid, tr.ts);
      return out;
    }
    for (const uid of tr.terminating) if (!this.hot.has(uid)) this.hot.set(uid, { reason: 'pod-terminating', ts: tr.ts });
    for (const [uid, h] of this.hot) {
      const pids = [...tr.pids].filter(([, u]) => u === uid).map(([p]) => p);
      take(pids, h.reason, uid, tr.ts);
    }
    return out;
  }
}

/** The whole decision sequence for a sequence of triggers (for tests and for explaining a bundle). */
export function planAttaches(mode: StraceMode, explicitPids: readonly number[], triggers: readonly AttachTrigger[]): AttachDecision[] {
  const p = new AttachPlanner(mode, explicitPids);
  return triggers.flatMap((t) => p.push(t));
}

export interface StraceModeDecision {
  /** what the command line asked for */
  requested: StraceMode;
  /** what runs */
  mode: StraceMode;
  /** why it differs from the request (null when it does not) */
  reason: string | null;
}

/**
 * lazy needs eBPF: without it nothing sees a SIGTERM generated, a --pid process would never be
 * traced, and a pod whose kubelet signals it before this node's watch shows the deletion would lose
 * its first instants. Then strace attaches to everything from the start, as before issue 14.
 */
export function resolveStraceMode(requested: StraceMode, ebpf: { ready: boolean; why: string }): StraceModeDecision {
  if (requested === 'lazy' && !ebpf.ready) {
    return { requested, mode: 'all', reason: `ebpf cannot run (${ebpf.why}): strace attaches to every process from the start, at its full cost` };
  }
  return { requested, mode: requested, reason: null };
}

/** The cost line printed in the preflight and stored in the source's detail (measured by bench/run.ts). */
export function straceModeCost(mode: StraceMode): string {
  return mode === 'lazy'
    ? 'mode lazy: no cost until a pod terminates, then its processes run strace-slowed (0.04x requests/s for a busy Node server in bench/tracing-overhead.ts) until they exit'
    : 'mode all: every traced process runs strace-slowed (0.04x requests/s for a busy Node server in bench/tracing-overhead.ts) for the whole recording';
}
