/**
 * The one small interface every recorder source implements (one folder per source under
 * recorder/sources/<name>/, Telegraf-style). A source is a thin wrapper: it runs or attaches to an
 * external stream, hands the bytes/lines to pure parsers (tested on golden fixtures), and writes the
 * typed rows to the Sink. It never touches another source's tables.
 */
import type { Sink } from './bundle-writer.js';
import type { Clock } from '../schemas/events.js';
import type { NetnsTarget } from './netns.js';

/** When strace attaches: `lazy` (default) once a pod's termination begins, `all` from the start (issue 14). */
export type StraceMode = 'lazy' | 'all';

/** A SIGTERM/SIGKILL generated to a process, published by the ebpf source as it reads it. */
export interface SignalSeen { ts: number; pid: number; signame: string; podUid: string | null }

/** Options every source may read (parsed from the `record` command line). */
export interface RecordOptions {
  out: string;
  kubeconfig?: string;
  namespace: string;
  selector?: string;
  deployment?: string;
  restart?: boolean;
  iface: string[];
  filter?: string;
  snaplen: number;
  probe?: string;
  rate: number;
  concurrency: number;
  keepalive?: boolean;
  duration?: number;
  untilRolloutComplete?: boolean;
  settle: number;
  /** --restart: seconds to record before restarting (connections opened before the capture show no SYN, no request) */
  preRoll?: number;
  packets: boolean;
  strace: boolean;
  /** with strace on: lazy (default) or all; `--strace off` is strace: false */
  straceMode?: StraceMode;
  ebpf: boolean;
  nft: boolean;
  conntrack: boolean;
  kube: boolean;
  pid: string[];
  maxSize?: number;
  quiet?: boolean;
  /** --netns: the network namespace nftables and conntrack read (validated); absent: the recorder's own */
  netns?: NetnsTarget;
}

export interface Preflight {
  /** true: start() will be called */
  ok: boolean;
  /** one line: what it will record (ok) or why it cannot (not ok), e.g. "bpftrace not found" */
  detail: string;
  /** how its timestamps are taken */
  clock: Clock;
  /** tool name -> version line, stored in meta.tool_versions */
  versions?: Record<string, string>;
  /** meta entries to store (e.g. clock offsets measured at start) */
  meta?: Record<string, string>;
}

/** Shared facts sources may publish for each other while recording (e.g. the kube source's pod UIDs). */
export interface RecordContext {
  opts: RecordOptions;
  /** current pods of interest: uid -> {namespace, name, ip}; updated by the kube source when it runs */
  pods: Map<string, { namespace: string; name: string; ip: string | null; uid: string; terminating?: boolean }>;
  /** subscribe to pod changes (strace attaches to new pods' processes) */
  onPodsChanged(cb: () => void): void;
  podsChanged(): void;
  /** strace mode as resolved after every preflight (lazy falls back to all without ebpf); absent: opts.straceMode */
  straceMode?: { requested: StraceMode; mode: StraceMode; reason: string | null };
  /** subscribe to SIGTERM/SIGKILL generated (strace attaches lazily to the signalled pod) */
  onSignal?(cb: (s: SignalSeen) => void): void;
  signalSeen?(s: SignalSeen): void;
  /** a source asks the recorder to stop (e.g. rollout complete) */
  requestStop(reason: string): void;
  /** log a line on stderr above the status line */
  log(line: string): void;
  /** subscribe to sources failing (to start or while running): strace leaves lazy mode when ebpf fails */
  onSourceFailed?(cb: (name: string, reason: string) => void): void;
  /** a running source reports that it failed (its tool died, its stream broke): marked failed, the others go on */
  sourceFailed?(name: string, reason: string): void;
}

export interface SourceStats {
  events: number;
  dropped: number;
  /** e.g. kernel drops for packets, "ok 120 / failed 1" for probe */
  extra?: string;
}

export interface Source {
  readonly name: string;
  /** decide whether this source can run here; must not start anything long-lived */
  preflight(ctx: RecordContext): Promise<Preflight>;
  /** start recording into the sink; resolve once running */
  start(sink: Sink, ctx: RecordContext): Promise<void>;
  /** stop, flush what is buffered into the sink, resolve when every child process is gone */
  stop(): Promise<void>;
  /** live counters for the status line (cheap) */
  stats(): SourceStats;
}
