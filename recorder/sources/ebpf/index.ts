/**
 * ebpf source: bpftrace, node-wide, no PIDs. The program is generated at start from the running
 * kernel's tracepoint formats; its lines go through the pure EbpfParser. bpftrace stamps `nsecs`
 * (CLOCK_MONOTONIC); we convert with the realtime-monotonic offset measured at start.
 */
import { spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync, readdirSync, statSync, mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import type { Sink } from '../../bundle-writer.js';
import type { Preflight, RecordContext, RecordOptions, Source, SourceStats } from '../../source.js';
import { parseCgroupLine } from '../../procfs/parse.js';
import { cgroupOf } from '../../procfs/index.js';
import { spawnTied } from '../../tied-spawn.js';
import { Btf, kernelOffsets, type KernelOffsets } from './btf.js';
import { measureMonotonicToRealtime, OffsetWatch } from './clock.js';
import { parseTracepointFormat, type TpFormat } from './format.js';
import { EbpfParser } from './parse.js';
import { buildProgram, type Program } from './program.js';

const TRACEFS = ['/sys/kernel/tracing', '/sys/kernel/debug/tracing'];

export function tracefsRoot(): string | null {
  for (const r of TRACEFS) if (existsSync(join(r, 'events'))) return r;
  try {
    spawnSync('mount', ['-t', 'tracefs', 'nodev', '/sys/kernel/tracing']);
    if (existsSync('/sys/kernel/tracing/events')) return '/sys/kernel/tracing';
  } catch { /* fall through */ }
  return null;
}

function readFormat(root: string, ev: string): TpFormat | null {
  try { return parseTracepointFormat(readFileSync(join(root, 'events', ev, 'format'), 'utf8')); } catch { return null; }
}

const BTF_PATH = '/sys/kernel/btf/vmlinux';

type Generated = { program: Program; formats: Record<string, TpFormat | null> } | { error: string };

/**
 * `fieldOffsets`: tracepoint fields read at their format offsets from `(uint64)args` (bpftrace 0.17 reads
 * the event list ~20 times per `args->field`, ~0.3 s of its start-up). Newer bpftrace refuses that cast
 * ("Cannot cast from struct type"): start() then falls back to the program with `args->`.
 */
export function generateForThisKernel(fieldOffsets = true): Generated {
  const root = tracefsRoot();
  if (!root) return { error: 'tracefs not mounted and cannot be mounted' };
  const formats = {
    sockState: readFormat(root, 'sock/inet_sock_set_state'),
    sendReset: readFormat(root, 'tcp/tcp_send_reset'),
    signalGenerate: readFormat(root, 'signal/signal_generate'),
    processExit: readFormat(root, 'sched/sched_process_exit'),
  };
  const btf = existsSync(BTF_PATH);
  let offsets: KernelOffsets | null = null;
  if (btf) try { offsets = kernelOffsets(new Btf(readFileSync(BTF_PATH))); } catch { /* unreadable BTF: struct types, as bpftrace resolves them */ }
  return { program: buildProgram({ ...formats, btf, offsets, fieldOffsets }), formats };
}

/**
 * cgroup id -> pod uid over a whole recording: each scan adds, none forgets. An event is parsed after the
 * fact, and a pod's last events (its listener closing as the app exits) are read after runc removed the
 * container's cgroup: a rescan in between (any pod change) dropped it, and the real node's second pod's
 * listener close was recorded with no pod (the analysis then had no close, no exit, verdict unknown).
 * cgroup ids are not reused (kernfs allocates them cyclically over 2^31 with a generation above).
 */
export class PodCgroupIndex {
  private readonly map = new Map<number, string>();
  constructor(private readonly scan: () => Map<number, string> = scanPodCgroups) {}
  rescan(): void { for (const [id, uid] of this.scan()) this.map.set(id, uid); }
  get(id: number): string | null { return this.map.get(id) ?? null; }
}

/** cgroup v2 id (= directory inode) -> pod uid, for every kubepods directory. */
export function scanPodCgroups(): Map<number, string> {
  const out = new Map<number, string>();
  const roots = ['/sys/fs/cgroup/unified', '/sys/fs/cgroup'].filter((r) => existsSync(join(r, 'cgroup.controllers')) || existsSync(join(r, 'cgroup.procs')));
  const root = roots[0];
  if (!root) return out;
  const walk = (dir: string, rel: string, depth: number) => {
    if (depth > 8) return;
    let entries: string[];
    try { entries = readdirSync(dir); } catch { return; }
    for (const e of entries) {
      if (e.startsWith('cgroup.') || e.includes('.') && !/\.(slice|scope)$/.test(e)) continue; // control files
      const p = join(dir, e);
      let st;
      try { st = statSync(p); } catch { continue; }
      if (!st.isDirectory()) continue;
      const m = parseCgroupLine(`0::${rel}/${e}`);
      if (m) out.set(st.ino, m.podUid);
      walk(p, `${rel}/${e}`, depth + 1);
    }
  };
  walk(root, '', 0);
  return out;
}

interface Launched {
  c: ChildProcess;
  /** the program file's directory */
  dir: string;
  on: { out(l: string): void; err(l: string): void; attached(): void; exit(code: number | null): void; error(e: Error): void } | null;
  /** lines dropped before start() took them */
  early: number;
  replay(): void;
  /** the recorder takes over: this process exiting no longer kills it */
  release(): void;
  /** kill it (if running) and remove its directory */
  discard(): void;
}

const running = (c: ChildProcess) => c.exitCode === null && c.signalCode === null;

/**
 * Start bpftrace on the program; what it says is kept until start() takes it (Launched.replay). Until
 * released, a process that exits (a recording that ends before start(): a bundle that cannot be created,
 * a stop during preflight) leaves no bpftrace behind.
 */
function launchBpftrace(bin: string, prog: Program): Launched {
  const dir = mkdtempSync(join(tmpdir(), 'rolltrace-ebpf-'));
  const file = join(dir, 'rolltrace.bt');
  writeFileSync(file, prog.text);
  // __BPFTRACE_NOTIFY_PROBES_ATTACHED (bpftrace's own test hook): it prints that line on stderr once
  // every probe is attached
  const c = spawnTied(bin, ['-B', 'line', file], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, BPFTRACE_STRLEN: '64', __BPFTRACE_NOTIFY_PROBES_ATTACHED: '1' } });
  const kept: Array<() => void> = [];
  const kill = () => {
    if (running(c)) c.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  };
  process.on('exit', kill);
  const r: Launched = {
    c, dir, on: null, early: 0,
    replay() { for (const f of kept.splice(0)) f(); },
    release() { process.off('exit', kill); },
    discard() { process.off('exit', kill); kill(); },
  };
  // until start() sets r.on: kept in order (bounded: bpftrace says little before its probes run)
  const deliver = (f: (on: NonNullable<Launched['on']>) => void) => {
    if (r.on) f(r.on);
    else if (kept.length < 10000) kept.push(() => f(r.on!));
    else r.early++;
  };
  createInterface({ input: c.stdout! }).on('line', (l) => deliver((on) => on.out(l)));
  createInterface({ input: c.stderr! }).on('line', (l) => {
    if (l === '__BPFTRACE_NOTIFY_PROBES_ATTACHED') return deliver((on) => on.attached());
    if (!/RLIMIT_MEMLOCK|Attaching/.test(l)) deliver((on) => on.err(l));
  });
  c.on('exit', (code) => deliver((on) => on.exit(code)));
  c.on('error', (e) => deliver((on) => on.error(e)));
  return r;
}

const bpftraceBin = () => process.env.ROLLTRACE_BPFTRACE ?? 'bpftrace';

/** bpftrace launched by launchEarly(), until the ebpf source's preflight takes it */
let early: { bin: string; g: Generated; run: Launched } | null = null;

/**
 * `rolltrace record` (bin/rolltrace.mjs, before it loads the CLI and the recorder): launch bpftrace now, so
 * that its compile, most of this source's time to live, runs while they load (~60 ms here) and the other
 * sources' preflights run. The ebpf source's preflight takes it over (and checks it as it checks its own);
 * one never taken (a usage error, --no-ebpf after all) goes with discardEarly() or with the process.
 */
export function launchEarly(argv: string[]): void {
  const args = argv.slice(2);
  if (args[0] !== 'record' || args.some((a) => a === '--no-ebpf' || a === '--help' || a === '-h')) return;
  if (process.getuid && process.getuid() !== 0) return;
  try {
    const g = generateForThisKernel();
    if ('error' in g || g.program.features.length === 0) return;
    const bin = bpftraceBin();
    early = { bin, g, run: launchBpftrace(bin, g.program) };
  } catch { /* the preflight tries again and says why */ }
}

export function discardEarly(): void {
  early?.run.discard();
  early = null;
}

export function create(_opts: RecordOptions): Source {
  const name = 'ebpf';
  /** bpftrace, started by preflight (its compile runs alongside the other sources' preflights) */
  let run: Launched | null = null;
  let stopping = false;
  let parser: EbpfParser | null = null;
  let events = 0;
  let program: Program | null = null;
  let resetReasons: Map<number, string> | undefined;
  let offset = { offsetNs: 0, uncertaintyNs: 0, samples: 0 };
  let podCgroups = new PodCgroupIndex();
  const bin = bpftraceBin();
  /** steps of the realtime clock followed while recording (see OffsetWatch) */
  let watch: OffsetWatch | null = null;
  const steps: number[] = [];

  /** a preflight that fails after bpftrace was launched: it goes, and start() (if ever called) launches anew */
  const abandon = () => {
    run?.discard();
    run = null;
  };

  return {
    name,
    async preflight(): Promise<Preflight> {
      // bpftrace's compile (most of the time to live) starts first, alongside the version check, the clock
      // offset and the other sources' preflights; abandoned when a check below fails
      const root = !process.getuid || process.getuid() === 0;
      let g: Generated | null;
      if (early && early.bin === bin) {
        ({ g, run } = early);
        early = null;
      } else {
        g = root ? generateForThisKernel() : null;
        if (g && !('error' in g) && g.program.features.length > 0) run = launchBpftrace(bin, g.program);
      }
      const fail = (detail: string, versions?: Record<string, string>): Preflight => {
        abandon();
        return { ok: false, detail, clock: 'converted-monotonic', ...(versions ? { versions } : {}) };
      };
      const v = spawnSync(bin, ['--version'], { encoding: 'utf8' });
      if (v.error || v.status !== 0) return fail(`${bin} not found (${v.error?.message ?? v.stderr.trim()})`);
      const versions = { bpftrace: v.stdout.trim() };
      if (!root || !g) return fail('needs root', versions);
      if ('error' in g) return fail(g.error, versions);
      program = g.program;
      resetReasons = g.formats.sendReset?.symbols.get('reason');
      if (program.features.length === 0) return fail(`no usable tracepoint: ${program.missing.join('; ')}`, versions);
      offset = measureMonotonicToRealtime();
      return {
        ok: true, clock: 'converted-monotonic', versions,
        detail: `${versions.bpftrace}; cost: none measurable to the pods (kernel tracepoints, no ptrace); ${program.features.join(', ')}${program.missing.length ? `; missing: ${program.missing.join(', ')}` : ''}; `
          + `nsecs (monotonic) + offset ${offset.offsetNs} ns (±${Math.round(offset.uncertaintyNs / 1000)} µs)`,
        meta: { clock_offsets: JSON.stringify({ ebpf_monotonic_to_realtime_ns: offset.offsetNs, ebpf_offset_uncertainty_ns: offset.uncertaintyNs }) },
      };
    },
    async start(sink: Sink, ctx: RecordContext): Promise<void> {
      if (!program) {
        const g = generateForThisKernel();
        if ('error' in g) throw new Error(g.error);
        program = g.program;
        resetReasons = g.formats.sendReset?.symbols.get('reason');
        offset = measureMonotonicToRealtime();
      }
      podCgroups = new PodCgroupIndex();
      podCgroups.rescan();
      ctx.onPodsChanged(() => podCgroups.rescan());
      parser = new EbpfParser({
        offsetNs: offset.offsetNs,
        resetReasons,
        podOfCgroup: (id) => podCgroups.get(id),
        podOfPid: (pid) => cgroupOf(pid)?.podUid ?? null,
      });
      const p = parser;
      let attached: () => void = () => {};
      const allAttached = new Promise<void>((res) => { attached = res; });
      /** resolves at bpftrace's BEGIN line; rejects when it exits (or fails) before, with what it said */
      const begin = (r: Launched) => new Promise<void>((resolve, reject) => {
        if (r.early > 0) ctx.log(`ebpf: ${r.early} lines from bpftrace before the recording started were not kept`);
        const t = setTimeout(() => reject(new Error('bpftrace did not start within 20 s')), 20000);
        const errLines: string[] = [];
        r.on = {
          out: (line) => {
            const out = p.line(line);
            if (p.beginNs !== null) { clearTimeout(t); resolve(); }
            for (const e of out) {
              sink.event(e);
              events++;
              // strace in lazy mode attaches to the pod a SIGTERM is generated to
              if (e.kind === 'signal') ctx.signalSeen?.({ ts: e.ts_ns, pid: e.attrs.pid, signame: e.attrs.signame, podUid: e.attrs.pod_uid ?? null });
            }
          },
          err: (l) => { errLines.push(l); ctx.log(`bpftrace: ${l}`); },
          attached,
          exit: (code) => {
            clearTimeout(t);
            const why = `bpftrace exited (${code}): ${errLines.slice(-3).join(' / ')}`;
            // before BEGIN this fails start(); afterwards the kernel events after this instant are missing
            if (p.beginNs === null) reject(Object.assign(new Error(why), { compile: errLines.some((l) => /ERROR/.test(l)) }));
            else if (!stopping && run === r) ctx.sourceFailed?.(name, `${why} at ${new Date().toISOString()}`);
          },
          error: (e) => { clearTimeout(t); reject(e); },
        };
        // what bpftrace said while the other sources' preflights ran, in order
        r.replay();
      });
      try {
        await begin(run ??= launchBpftrace(bin, program));
      } catch (e) {
        // a bpftrace that refuses the fields-by-offset program (newer versions refuse the cast of args): the
        // program with args-> (slower to compile, same events)
        if (!(e as { compile?: boolean }).compile) throw e;
        const g = generateForThisKernel(false);
        if ('error' in g) throw e;
        ctx.log(`ebpf: ${(e as Error).message.split(' / ')[0]}: this bpftrace refuses reading tracepoint fields by offset; starting the program with args-> instead`);
        run?.discard();
        program = g.program;
        await begin(run = launchBpftrace(bin, program));
      }
      // live once every probe is attached: bpftrace says so (above); one that does not (older, or a
      // changed hook) gets the 300 ms the attachment took at most here
      let slow: NodeJS.Timeout | undefined;
      await Promise.race([allAttached, new Promise<void>((res) => { slow = setTimeout(res, 300); })]);
      clearTimeout(slow);
      const beginReal = p.beginNs! + offset.offsetNs;
      ctx.log(`ebpf: BEGIN probe cross-check: converted BEGIN is ${((Date.now() * 1e6 - beginReal) / 1e6).toFixed(1)} ms before now`);
      watch = new OffsetWatch(offset, (next, delta) => {
        offset = next;
        p.setOffset(next.offsetNs);
        steps.push(delta);
        ctx.log(`ebpf: the realtime clock stepped ${delta > 0 ? '+' : ''}${(delta / 1e6).toFixed(3)} ms against the monotonic one (bpftrace's): kernel events from now on converted with the new offset ${next.offsetNs} ns`);
      });
      watch.start();
    },
    async stop(): Promise<void> {
      stopping = true;
      watch?.stop();
      const r = run;
      if (!r) return;
      r.release();
      const c = r.c;
      if (running(c)) {
        await new Promise<void>((res) => {
          const t = setTimeout(() => c.kill('SIGKILL'), 5000);
          c.on('exit', () => { clearTimeout(t); res(); });
          c.kill('SIGINT');
        });
      }
      rmSync(r.dir, { recursive: true, force: true });
    },
    stats(): SourceStats {
      return { events, dropped: parser?.malformed ?? 0, ...(steps.length ? { extra: `realtime clock stepped ${steps.length} time(s) while recording (${steps.map((d) => `${d > 0 ? '+' : ''}${(d / 1e6).toFixed(1)} ms`).join(', ')}), followed` } : {}) };
    },
  };
}
