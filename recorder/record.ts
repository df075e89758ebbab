/**
 * `rolltrace record`: plan the sources (preflight), open the bundle, start every source that can run
 * (rollout last), show a live status, stop on --duration / SIGINT / SIGTERM / rollout completion,
 * stop the sources, finalize the bundle and print a summary with the analyze command to run next.
 * A source that cannot run or fails is recorded as such in `sources`; the others go on. A second
 * SIGINT while stopping closes the bundle at once (still valid). SIGKILL at any instant leaves a valid
 * bundle holding everything up to the writer's last flush (<= 250 ms).
 */
import { nowNs } from './clock.js';
import { parseProbeUrl } from './sources/probe/probe.js';
import { existsSync, statSync } from 'node:fs';
import { hostname, networkInterfaces, release } from 'node:os';
import { readFileSync } from 'node:fs';
import { BundleWriter } from './bundle-writer.js';
import { formatPlan, planSources, privilegeProblem, disabledReason, RECORD_SOURCES, type PlannedSource, type SourceLoader, defaultLoader, firstLine, withTimeout } from './preflight.js';
import { StatusLine, type StatusMode } from './status.js';
import type { RecordContext, RecordOptions, SignalSeen, Source, StraceMode } from './source.js';
import { straceModeCost } from './sources/strace/attach.js';
import { parseSelector } from './sources/kube/selector.js';
import { ev } from '../schemas/events.js';
import { InputError } from '../schemas/errors.js';
import { META_KEYS } from '../schemas/rows.js';
import { rolltraceVersion } from '../schemas/version.js';
import { netnsAddrs, netnsHostname, netnsPlanLine, NETNS_SOURCES, resolveNetns } from './netns.js';



/** Commander's parsed options -> RecordOptions with defaults; usage errors as InputError. */
export function normalizeRecordOptions(raw: Record<string, unknown>): RecordOptions {
  const num = (v: unknown, d: number) => (v === undefined || v === null || v === '' ? d : Number(v));
  const list = (v: unknown): string[] => (Array.isArray(v) ? v.map(String) : v === undefined || v === null ? [] : [String(v)]);
  const o: RecordOptions = {
    out: String(raw.out ?? ''),
    kubeconfig: raw.kubeconfig as string | undefined,
    namespace: (raw.namespace as string | undefined) || 'default',
    selector: raw.selector as string | undefined,
    deployment: raw.deployment as string | undefined,
    restart: !!raw.restart,
    iface: list(raw.iface),
    filter: raw.filter as string | undefined,
    snaplen: num(raw.snaplen, 128),
    probe: raw.probe as string | undefined,
    rate: num(raw.rate, 10),
    concurrency: num(raw.concurrency, 1),
    keepalive: !!raw.keepalive,
    duration: raw.duration === undefined ? undefined : Number(raw.duration),
    untilRolloutComplete: !!raw.untilRolloutComplete,
    settle: num(raw.settle, 5),
    preRoll: num(raw.preRoll, 2),
    packets: raw.packets !== false,
    ...straceOption(raw.strace),
    ebpf: raw.ebpf !== false,
    nft: raw.nft !== false,
    conntrack: raw.conntrack !== false,
    kube: raw.kube !== false,
    pid: list(raw.pid),
    maxSize: raw.maxSize === undefined ? undefined : Number(raw.maxSize),
    quiet: !!raw.quiet,
  };
  if (raw.netns !== undefined && raw.netns !== null) o.netns = resolveNetns(String(raw.netns));
  if (!o.out) throw new InputError('record needs --out FILE');
  if (o.selector && o.deployment) throw new InputError('--selector and --deployment are exclusive: give one');
  if ((o.restart || o.untilRolloutComplete) && !o.deployment) {
    throw new InputError(`${o.restart ? '--restart' : '--until-rollout-complete'} needs --deployment NAME`);
  }
  if (o.selector) parseSelector(o.selector);
  if (o.probe) parseProbeUrl(o.probe);
  if (o.probe && !(o.rate > 0)) throw new InputError('--rate must be above 0 with --probe');
  if (!(o.concurrency >= 1)) throw new InputError('--concurrency must be at least 1');
  if (o.duration !== undefined && !(o.duration > 0)) throw new InputError('--duration must be above 0 seconds');
  for (const p of o.pid) if (!/^\d+$/.test(p)) throw new InputError(`--pid ${p}: not a process id`);
  if (existsSync(o.out)) throw new InputError(`${o.out} already exists; choose another --out or remove it`);
  return o;
}

/** `--strace lazy|all|off` and `--no-strace` (= off) -> RecordOptions.strace / straceMode. */
export function straceOption(v: unknown): { strace: boolean; straceMode: StraceMode } {
  if (v === undefined || v === null || v === true || v === 'lazy') return { strace: true, straceMode: 'lazy' };
  if (v === false || v === 'off') return { strace: false, straceMode: 'lazy' };
  if (v === 'all') return { strace: true, straceMode: 'all' };
  throw new InputError(`--strace ${String(v)}: expected lazy, all or off`);
}

interface Running {
  plan: PlannedSource;
  source: Source;
  failed: string | null;
}

export interface RecordHooks {
  loader?: SourceLoader;
  /** status mode override (tests) */
  statusMode?: StatusMode;
  /** process.exit replacement for the forced-close path (tests) */
  exit?: (code: number) => void;
}

export async function runRecord(raw: Record<string, unknown>, hooks: RecordHooks = {}): Promise<number> {
  const opts = normalizeRecordOptions(raw);
  const enabled = RECORD_SOURCES.filter((n) => disabledReason(n, opts) === null);
  const priv = privilegeProblem(enabled);
  if (priv) throw new InputError(priv);

  const mode: StatusMode = hooks.statusMode ?? (opts.quiet ? 'quiet' : process.stderr.isTTY ? 'tty' : 'lines');
  const running: Running[] = [];
  let writer: BundleWriter | null = null;
  let stopReason: string | null = null;
  let wakeStop: () => void = () => undefined;
  const stopRequested = new Promise<void>((r) => { wakeStop = r; });
  const requestStop = (reason: string) => {
    if (stopReason) return;
    stopReason = reason;
    wakeStop();
  };
  const snapshot = () => ({
    elapsedS: startedMs ? (Date.now() - startedMs) / 1000 : 0,
    sources: running.map((r) => {
      let st = { events: 0, dropped: 0, extra: undefined as string | undefined };
      try { st = { ...st, ...r.source.stats() }; } catch { /* a broken stats() does not stop recording */ }
      const w = writer?.source(r.plan.name);
      return { name: r.plan.name, events: Math.max(st.events, w?.events ?? 0), dropped: Math.max(st.dropped, w?.dropped ?? 0), extra: st.extra, status: r.failed ? 'failed' : 'running' };
    }),
  });
  let startedMs = 0;
  const status = new StatusLine(mode, snapshot);
  const podCallbacks: Array<() => void> = [];
  const signalCallbacks: Array<(s: SignalSeen) => void> = [];
  const failedCallbacks: Array<(name: string, reason: string) => void> = [];
  const sourceFailed = (name: string, reason: string) => {
    // lazy strace is blind without ebpf: it switches to all; the bundle says so
    const sm = ctx.straceMode;
    if (name === 'ebpf' && sm?.mode === 'lazy' && running.some((r) => r.plan.name === 'strace' && !r.failed)) {
      ctx.straceMode = { ...sm, mode: 'all', reason: `ebpf ${reason} at ${new Date().toISOString()}: strace attached to every process from then on` };
      try {
        writer?.setMeta(META_KEYS.straceMode, ctx.straceMode);
        const cur = writer?.source('strace');
        writer?.setSource('strace', { status: cur?.status ?? 'running', detail: `${cur?.detail ?? ''}; ${ctx.straceMode.reason}` });
      } catch { /* bundle already closed */ }
      status.log(`rolltrace: ${ctx.straceMode.reason}`);
    }
    for (const cb of failedCallbacks) {
      try { cb(name, reason); } catch (e) { status.log(`rolltrace: source failure handler failed: ${(e as Error).message}`); }
    }
  };
  let podsRefreshPending = false;
  const markFailed = (name: string, reason: string) => {
    const r = running.find((x) => x.plan.name === name);
    if (r && !r.failed) {
      r.failed = reason;
      try { writer?.setSource(name, { status: 'failed', detail: reason }); } catch { /* bundle already closed */ }
      status.log(`rolltrace: source ${name} failed: ${reason} (the other sources go on)`);
      sourceFailed(name, reason);
    }
  };
  const ctx: RecordContext & { sourceFailed(name: string, reason: string): void } = {
    opts,
    pods: new Map(),
    onPodsChanged(cb) { podCallbacks.push(cb); },
    podsChanged() {
      // one refresh per burst of changes: a LIST of N pods calls this N times in one tick, and each
      // refresh rescans /proc and the cgroup tree
      if (podsRefreshPending) return;
      podsRefreshPending = true;
      setImmediate(() => {
        podsRefreshPending = false;
        for (const cb of podCallbacks) {
          try { cb(); } catch (e) { status.log(`rolltrace: pod change handler failed: ${(e as Error).message}`); }
        }
      });
    },
    onSignal(cb) { signalCallbacks.push(cb); },
    signalSeen(sig) {
      for (const cb of signalCallbacks) {
        try { cb(sig); } catch (e) { status.log(`rolltrace: signal handler failed: ${(e as Error).message}`); }
      }
    },
    onSourceFailed(cb) { failedCallbacks.push(cb); },
    requestStop,
    log: (line) => status.log(line),
    sourceFailed: markFailed,
  };

  process.stderr.write(`rolltrace record -> ${opts.out}\n`);
  const plan = await planSources(opts, ctx, hooks.loader ?? defaultLoader);
  process.stderr.write(`sources:\n${formatPlan(plan).join('\n')}\n`);
  if (opts.netns) process.stderr.write(`${netnsPlanLine(opts.netns)}\n`);
  const ready = plan.filter((p) => p.state === 'ready');
  if (ready.length === 0) {
    throw new InputError('no source can record here (see the list above); nothing recorded');
  }

  // 32 KiB pages: the packet chunks (~1 MiB BLOBs, most of a recording's bytes) cross 8× fewer page
  // boundaries than with 4 KiB ones, a quarter less CPU to store them while capturing (bench/capture-cpu.ts);
  // import keeps 4 KiB pages (a half-filled last page per chunk costs ~0.5 % more file at 32 KiB)
  writer = new BundleWriter(opts.out, { createdBy: 'record', pageSize: 32768 });
  const w = writer;
  const versions: Record<string, string> = {};
  const clockOffsets: Record<string, number | string> = {};
  for (const p of plan) {
    Object.assign(versions, p.preflight?.versions ?? {});
    for (const [k, v] of Object.entries(p.preflight?.meta ?? {})) {
      if (/clock|offset/i.test(k)) clockOffsets[k] = Number.isFinite(Number(v)) ? Number(v) : v;
      if (!(Object.values(META_KEYS) as string[]).includes(k)) w.setMeta(k, v);
    }
  }
  w.setMeta(META_KEYS.rolltraceVersion, rolltraceVersion());
  w.setMeta(META_KEYS.argv, process.argv.slice(2));
  w.setMeta(META_KEYS.hostname, hostname());
  const nodeName = plan.map((p) => p.preflight?.meta?.node).find((n) => !!n) ?? (opts.netns ? netnsHostname(opts.netns) : null) ?? hostname();
  w.setMeta(META_KEYS.node, nodeName);
  w.setMeta(META_KEYS.kernel, release());
  // this node's own addresses (in the recorder's network namespace): a connection from one of them straight to
  // a pod is host traffic such as the kubelet's probes, not traffic another node already DNATed
  // with --netns the node is that namespace (a kind/k3d node container): its addresses are the node's
  const ownAddrs = opts.netns ? netnsAddrs(opts.netns) : Object.values(networkInterfaces()).flat().filter((a) => !!a && !a.internal && !/^fe80:/i.test(a.address)).map((a) => a!.address);
  w.setMeta(META_KEYS.nodeAddrs, { [nodeName]: [...new Set(ownAddrs)] });
  if (opts.netns) {
    w.setMeta(META_KEYS.netns, { arg: opts.netns.arg, path: opts.netns.path, inode: opts.netns.inode, own: opts.netns.own, sources: [...NETNS_SOURCES] });
  }
  w.setMeta(META_KEYS.toolVersions, versions);
  w.setMeta(META_KEYS.clockOffsets, clockOffsets);
  w.setMeta(META_KEYS.receiptStamped, ready.filter((p) => p.clock === 'receipt').map((p) => p.name));
  w.setMeta(META_KEYS.closedCleanly, '0');
  const stracePlan = plan.find((p) => p.name === 'strace');
  w.setMeta(META_KEYS.straceMode, ctx.straceMode ?? (opts.strace
    ? { requested: opts.straceMode ?? 'lazy', mode: 'off', reason: `strace ${stracePlan?.state ?? 'not planned'}: ${stracePlan?.detail ?? ''}` }
    : { requested: 'off', mode: 'off', reason: disabledReason('strace', opts) }));
  for (const p of plan) {
    w.setSource(p.name, { status: p.state === 'ready' ? 'running' : p.state, detail: p.detail, clock: p.clock });
  }

  // signals: first SIGINT/SIGTERM stops gracefully, a second SIGINT closes the bundle at once
  let stopping = false;
  let forced = false;
  let wakeForced: () => void = () => undefined;
  const forcedP = new Promise<void>((r) => { wakeForced = r; });
  const forceClose = () => {
    if (forced) return;
    forced = true;
    status.stop();
    process.stderr.write('rolltrace: second interrupt: closing the bundle now\n');
    for (const r of running) {
      const s = w.source(r.plan.name);
      if (s?.status === 'running') w.setSource(r.plan.name, { status: 'stopped-early', detail: `${r.plan.detail} (forced stop)` });
    }
    try { w.close(); } catch { /* already closed */ }
    process.stderr.write(`bundle: ${opts.out}\nnext: rolltrace analyze ${opts.out}\n`);
    wakeForced();
    (hooks.exit ?? process.exit)(130);
  };
  const onSigint = () => { if (stopping) forceClose(); else requestStop('SIGINT'); };
  const onSigterm = () => { if (!stopping) requestStop('SIGTERM'); };
  const onUncaught = (e: unknown) => {
    const msg = e instanceof Error ? e.message : String(e);
    status.log(`rolltrace: internal error, recording goes on: ${msg.split('\n')[0]}`);
    try { w.event(ev('marker', nowNs(), 'recorder', null, { text: `internal error: ${msg.split('\n')[0]}` })); } catch { /* closed */ }
  };
  const detach = () => {
    process.off('SIGINT', onSigint);
    process.off('SIGTERM', onSigterm);
    process.off('uncaughtException', onUncaught);
    process.off('unhandledRejection', onUncaught);
  };
  process.on('SIGINT', onSigint);
  process.on('SIGTERM', onSigterm);
  process.on('uncaughtException', onUncaught);
  process.on('unhandledRejection', onUncaught);

  let durationTimer: NodeJS.Timeout | null = null;
  try {
    w.setMeta(META_KEYS.startedNs, String(nowNs()));
    startedMs = Date.now();
    // every source starts at once (bpftrace's compile alongside the rest); the rollout source last, once
    // the others are live. Each one's live-since instant goes to meta.sources_live_ns: the analysis names
    // what happened before a source was live as a blind spot.
    const liveNs: Record<string, number> = {};
    const startOne = async (p: PlannedSource): Promise<void> => {
      if (stopReason) {
        w.setSource(p.name, { status: 'stopped-early', detail: `not started: stop requested (${stopReason}) before it started` });
        return;
      }
      const r: Running = { plan: p, source: p.source!, failed: null };
      try {
        await withTimeout(p.source!.start(w, ctx), 30000, 'start');
        running.push(r);
        liveNs[p.name] = nowNs();
        w.setMeta(META_KEYS.sourcesLiveNs, JSON.stringify(liveNs));
      } catch (e) {
        const reason = `failed to start: ${firstLine(e)}`;
        w.setSource(p.name, { status: 'failed', detail: reason });
        status.log(`rolltrace: source ${p.name} ${reason} (the other sources go on)`);
        try { await withTimeout(p.source!.stop(), 5000, 'stop'); } catch { /* best effort */ }
        sourceFailed(p.name, reason);
      }
    };
    await Promise.all(ready.filter((p) => p.name !== 'rollout').map(startOne));
    for (const p of ready.filter((x) => x.name === 'rollout')) await startOne(p);
    if (running.length === 0 && !stopReason) requestStop('every source failed to start');
    if (!stopReason) {
      const lines = [`recording${opts.duration ? ` for ${opts.duration} s` : ''}${opts.untilRolloutComplete ? ' until the rollout completes' : ''}; Ctrl-C stops`];
      process.stderr.write(`${lines.join('')}\n`);
    }
    status.start();
    if (opts.duration) durationTimer = setTimeout(() => requestStop(`--duration ${opts.duration} s`), opts.duration * 1000);
    await stopRequested;
  } finally {
    if (durationTimer) clearTimeout(durationTimer);
  }

  // graceful stop
  stopping = true;
  status.stop();
  process.stderr.write(`rolltrace: stopping (${stopReason})\n`);
  const stopOne = async (r: (typeof running)[number]): Promise<void> => {
    try {
      await withTimeout(r.source.stop(), 15000, 'stop');
    } catch (e) {
      if (forced || r.failed) return;
      const why = firstLine(e);
      if (/^stop timed out/.test(why)) w.setSource(r.plan.name, { status: 'stopped-early', detail: `${r.plan.detail} (did not stop within 15 s)` });
      else { r.failed = why; w.setSource(r.plan.name, { status: 'failed', detail: `stop failed: ${why}` }); }
      return;
    }
    if (forced) return;
    let st = { events: 0, dropped: 0 };
    try { st = { ...st, ...r.source.stats() }; } catch { /* ignore */ }
    const cur = w.source(r.plan.name);
    const dropped = Math.max(cur?.dropped ?? 0, st.dropped);
    if (!r.failed) w.setSource(r.plan.name, { status: cur?.status === 'running' ? 'ok' : cur?.status ?? 'ok', dropped });
    else w.setSource(r.plan.name, { status: 'failed', dropped });
  };
  // in three steps: what makes traffic (the probe, the rollout control), so that its last request is
  // captured; then the packet capture, which goes on capturing while it drains (up to 3 s, until tcpdump's
  // counters show every frame it received written); then the observers, which record meanwhile, so that
  // conntrack, rules and events cover the capture's last seconds too, rather than ending up to 3 s before it
  const step = (r: (typeof running)[number]) => (['probe', 'rollout'].includes(r.plan.name) ? 0 : r.plan.name === 'packets' ? 1 : 2);
  await Promise.race([forcedP, (async () => {
    for (const k of [0, 1, 2]) await Promise.all([...running].reverse().filter((r) => step(r) === k).map(stopOne));
  })()]);
  if (forced) {
    detach();
    return 130;
  }
  detach();

  const elapsed = (Date.now() - startedMs) / 1000;
  const { integrity } = w.close();
  let size = 0;
  try { size = statSync(opts.out).size; } catch { /* ignore */ }
  const summary = [
    `rolltrace: recorded ${elapsed.toFixed(1)} s (stopped by ${stopReason}); bundle ${opts.out} (${(size / 1024).toFixed(0)} KiB, integrity ${integrity})`,
    ...plan.map((p) => {
      const s = w.source(p.name);
      return `  ${p.name.padEnd(10)} ${String(s?.status ?? p.state).padEnd(12)} ${s?.events ?? 0} rows${s?.dropped ? `, ${s.dropped} dropped` : ''}${s?.status === 'failed' || s?.status === 'unavailable' ? `  ${s.detail}` : ''}`;
    }),
    ...(w.rejectedRows ? [`  ${w.rejectedRows} row(s) no table would take were counted as dropped (last: ${w.lastRejection})`] : []),
    `next: rolltrace analyze ${opts.out}`,
  ];
  process.stderr.write(`${summary.join('\n')}\n`);
  return 0;
}


