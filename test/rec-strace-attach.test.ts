// Issue 14: when the strace source attaches, as a pure function of what it learns (pods and their
// processes, deletions seen by the kube source, SIGTERMs seen by ebpf), the mode fallback without ebpf,
// the --strace option, and strace's own attach reports.
import { describe, expect, it } from 'vitest';
import { AttachPlanner, planAttaches, resolveStraceMode, type AttachTrigger } from '../recorder/sources/strace/attach.js';
import { parseStraceNotice } from '../recorder/sources/strace/index.js';
import { normalizeRecordOptions, straceOption } from '../recorder/record.js';
import { applyStraceMode, type PlannedSource } from '../recorder/preflight.js';
import type { RecordContext, RecordOptions } from '../recorder/source.js';

const A = 'uid-a', B = 'uid-b';
const pids = (o: Record<number, string>) => new Map(Object.entries(o).map(([k, v]) => [Number(k), v]));
const start = (ts: number, p: Record<number, string>, terminating: string[] = []): AttachTrigger => ({ t: 'start', ts, pids: pids(p), terminating: new Set(terminating) });
const podsT = (ts: number, p: Record<number, string>, terminating: string[] = []): AttachTrigger => ({ t: 'pods', ts, pids: pids(p), terminating: new Set(terminating) });
const sig = (ts: number, pid: number, signame = 'SIGTERM', podUid: string | null = null): AttachTrigger => ({ t: 'signal', ts, pid, signame, podUid });

describe('lazy: attach a pod once its termination begins', () => {
  it('nothing at start, the pod whose deletionTimestamp appears, its later processes too, never twice', () => {
    const d = planAttaches('lazy', [], [
      start(1, { 10: A, 11: A, 20: B }),
      podsT(2, { 10: A, 11: A, 20: B }), // a pod change that is not a deletion
      podsT(3, { 10: A, 11: A, 20: B }, [A]),
      podsT(4, { 10: A, 11: A, 12: A, 20: B }, [A]), // preStop exec: a new process of the terminating pod
      podsT(5, { 10: A, 11: A, 12: A, 20: B }, [A]),
    ]);
    expect(d).toEqual([
      { ts: 3, pids: [10, 11], reason: 'pod-terminating', podUid: A },
      { ts: 4, pids: [12], reason: 'pod-terminating', podUid: A },
    ]);
  });

  it('a pod already terminating when recording starts is attached at start', () => {
    expect(planAttaches('lazy', [], [start(1, { 10: A, 20: B }, [B])])).toEqual([{ ts: 1, pids: [20], reason: 'pod-terminating', podUid: B }]);
  });

  it('a SIGTERM generated to one process of a watched pod attaches the whole pod, before the watch shows the deletion', () => {
    const d = planAttaches('lazy', [], [
      start(1, { 10: A, 11: A, 20: B }),
      sig(2, 11, 'SIGTERM', A),
      podsT(3, { 10: A, 11: A, 20: B }, [A]), // the watch catches up: nothing new
    ]);
    expect(d).toEqual([{ ts: 2, pids: [10, 11], reason: 'signal', podUid: A }]);
  });

  it('the pod is found from the last process snapshot when ebpf could not read the target cgroup', () => {
    expect(planAttaches('lazy', [], [start(1, { 10: A }), sig(2, 10, 'SIGTERM', null)])).toEqual([{ ts: 2, pids: [10], reason: 'signal', podUid: A }]);
  });

  it('ignores SIGKILL, other signals and SIGTERMs to processes of pods it does not watch', () => {
    expect(planAttaches('lazy', [], [
      start(1, { 10: A }),
      sig(2, 10, 'SIGKILL', A),
      sig(3, 10, 'SIGINT', A),
      sig(4, 99, 'SIGTERM', 'uid-elsewhere'),
      sig(5, 98, 'SIGTERM', null),
    ])).toEqual([]);
  });

  it('--pid processes: only once a SIGTERM is generated to them', () => {
    const d = planAttaches('lazy', [500, 501], [start(1, {}), sig(2, 777), sig(3, 501), sig(4, 501)]);
    expect(d).toEqual([{ ts: 3, pids: [501], reason: 'signal', podUid: null }]);
  });
});

describe('all: attach everything from the start', () => {
  it('every --pid and pod process at start, new pod processes as they appear, signals change nothing', () => {
    const d = planAttaches('all', [500], [
      start(1, { 10: A, 20: B }),
      podsT(2, { 10: A, 20: B, 30: 'uid-c' }),
      sig(3, 10, 'SIGTERM', A),
      podsT(4, { 10: A, 20: B, 30: 'uid-c' }, [A]),
    ]);
    expect(d).toEqual([
      { ts: 1, pids: [500], reason: 'all', podUid: null },
      { ts: 1, pids: [10], reason: 'all', podUid: A },
      { ts: 1, pids: [20], reason: 'all', podUid: B },
      { ts: 2, pids: [30], reason: 'all', podUid: 'uid-c' },
    ]);
  });

  it('escalating a lazy planner (ebpf failed) attaches the rest, never what is attached already', () => {
    const p = new AttachPlanner('lazy', [500]);
    expect(p.push(start(1, { 10: A, 20: B }, [A]))).toEqual([{ ts: 1, pids: [10], reason: 'pod-terminating', podUid: A }]);
    const q = p.escalate();
    expect(q.mode).toBe('all');
    expect(q.push(start(5, { 10: A, 20: B }))).toEqual([
      { ts: 5, pids: [500], reason: 'all', podUid: null },
      { ts: 5, pids: [20], reason: 'all', podUid: B },
    ]);
  });
});

describe('mode resolution and the command line', () => {
  it('lazy falls back to all when ebpf cannot run, and says why', () => {
    expect(resolveStraceMode('lazy', { ready: true, why: '' })).toEqual({ requested: 'lazy', mode: 'lazy', reason: null });
    const r = resolveStraceMode('lazy', { ready: false, why: 'disabled: --no-ebpf' });
    expect(r.mode).toBe('all');
    expect(r.reason).toMatch(/ebpf cannot run \(disabled: --no-ebpf\)/);
    expect(resolveStraceMode('all', { ready: false, why: 'x' })).toEqual({ requested: 'all', mode: 'all', reason: null });
  });

  it('the preflight line of strace starts with the mode that runs and its cost; ctx learns the mode', () => {
    const plan = (ebpf: PlannedSource['state']): PlannedSource[] => [
      { name: 'strace', state: 'ready', detail: 'strace -- version 6.1', clock: 'kernel' },
      { name: 'ebpf', state: ebpf, detail: ebpf === 'ready' ? 'bpftrace v0.17.0' : 'bpftrace not found', clock: 'converted-monotonic' },
    ];
    const ctx = {} as RecordContext;
    const p1 = plan('ready');
    applyStraceMode(p1, { straceMode: 'lazy' } as RecordOptions, ctx);
    expect(p1[0]!.detail).toMatch(/^mode lazy: .*; strace -- version 6\.1$/);
    expect(ctx.straceMode).toEqual({ requested: 'lazy', mode: 'lazy', reason: null });
    const p2 = plan('unavailable');
    applyStraceMode(p2, {} as RecordOptions, ctx);
    expect(p2[0]!.detail).toMatch(/^mode all: .*WARNING: ebpf cannot run \(unavailable: bpftrace not found\)/);
    expect(ctx.straceMode?.mode).toBe('all');
  });

  it('--strace lazy|all|off, --no-strace, and a bad mode is a usage error', () => {
    expect(straceOption(undefined)).toEqual({ strace: true, straceMode: 'lazy' });
    expect(straceOption('all')).toEqual({ strace: true, straceMode: 'all' });
    expect(straceOption('off')).toEqual({ strace: false, straceMode: 'lazy' });
    expect(straceOption(false)).toEqual({ strace: false, straceMode: 'lazy' });
    expect(() => normalizeRecordOptions({ out: '/tmp/rt-never-written.rtb', strace: 'sometimes' })).toThrow(/--strace sometimes: expected lazy, all or off/);
  });
});

describe("strace's attach reports (captured from strace 6.1 here)", () => {
  it('attached, detached, attach failed, anything else', () => {
    expect(parseStraceNotice('strace: Process 24090 attached')).toEqual({ pid: 24090, attached: true });
    expect(parseStraceNotice('strace: Process 24090 detached')).toEqual({ pid: 24090, detached: true });
    expect(parseStraceNotice('strace: attach: ptrace(PTRACE_SEIZE, 4242): No such process')).toEqual({ pid: 4242, attached: false, error: 'No such process' });
    expect(parseStraceNotice('strace: Could not attach to process.')).toBeNull();
  });
});
