/**
 * packets source: captures on one or more interfaces (default: the node's CNI bridge, else `any`).
 *
 * Backend: rolltrace's libpcap addon (native.ts) when the setup step built it: frames go from libpcap's
 * ring into chunks in a thread of the recorder, the cheapest path (kernel timestamps in ns, kernel drop
 * counters). Else `tcpdump -w SPOOL/cap.pcap -C 16 --time-stamp-precision nano -B 32768`, its files followed by
 * spool.ts and cut into chunks, is preferred because it keeps the kernel's capture timestamp (ns) and
 * reports the kernel's drop counters; the `cap` binding only hands over the bytes (no pcap_pkthdr timestamp, no pcap_stats), so
 * it is the fallback when tcpdump is missing, stamped on receipt (µs, CLOCK_MONOTONIC + offset).
 * ROLLTRACE_PACKETS_BACKEND=native|tcpdump|cap forces one.
 */
import { spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, dirname, join, resolve } from 'node:path';
import { createRequire } from 'node:module';
import { ev } from '../../../schemas/events.js';
import type { Sink } from '../../bundle-writer.js';
import type { Preflight, RecordContext, RecordOptions, Source, SourceStats } from '../../source.js';
import { decodeFrame } from '../../decode/packet.js';
import { CaptureStreamParser } from '../../decode/pcapfile.js';
import { FrameStore, PcapStreamCutter } from '../../../schemas/decode/chunks.js';
import { measureMonotonicToRealtime } from '../ebpf/clock.js';
import { CNI_BRIDGES, linktypeFromName, parseTcpdumpStats } from './stats.js';
import { SPOOL_FILE_MB, SPOOL_MAX_WAITING, SpoolReader } from './spool.js';
import { spawnTied } from '../../tied-spawn.js';
import { loadAddon, NativeCapture } from './native.js';

const KERNEL_BUFFER_KIB = 32768;

/**
 * Interfaces of the recorder's network namespace, from /proc/net/dev (per netns of the reader). Not
 * /sys/class/net: sysfs shows the namespace of whoever mounted it, and `nsenter --net=` (how one records
 * inside a node's namespace without hiding the cgroup mounts, unlike `ip netns exec`) keeps the host's.
 */
export function netnsInterfaces(procNetDev = readFileSync('/proc/net/dev', 'utf8')): Set<string> {
  return new Set(procNetDev.split('\n').slice(2).map((l) => l.split(':')[0]!.trim()).filter(Boolean));
}

export function defaultIfaces(opts: RecordOptions): string[] {
  if (opts.iface.length) return opts.iface;
  const have = netnsInterfaces();
  for (const b of CNI_BRIDGES) if (have.has(b)) return [b];
  return ['any'];
}

/**
 * tcpdump writes as `tcpdump -w FILE` does, to files rotated every SPOOL_FILE_MB MB (spool.ts): libpcap's
 * TPACKET_V3 ring hands over blocks of frames (a block when full or after 1 s) and the pcap goes out in
 * stdio-buffered 4 KiB writes; not a write() per frame to a pipe (-U) nor a wake-up per frame
 * (--immediate-mode), which cost 10× tcpdump -w's CPU and, with the pipe's 64 KiB between tcpdump and a
 * busy recorder, dropped 40-60 % of the frames at 500-800 kpps (bench/capture-cpu.ts). -Z root: tcpdump
 * otherwise drops to its own user before opening the rotated files. At stop SIGINT flushes the last
 * file (after drain() let the ring empty).
 */
export function tcpdumpArgs(iface: string, snaplen: number, filter: string | undefined, file: string): string[] {
  const a = ['-w', file, '-C', String(SPOOL_FILE_MB), '-Z', 'root', '-n', '-s', String(snaplen), '-B', String(KERNEL_BUFFER_KIB), '-i', iface, '--time-stamp-precision', 'nano'];
  if (filter) a.push(filter);
  return a;
}

/**
 * Where tcpdump's files go: next to the bundle (same disk, and what a killed recorder leaves behind is
 * found there), else the temporary directory.
 */
export function spoolDir(out: string): string {
  if (out && !out.startsWith('/dev/')) {
    try { return mkdtempSync(join(dirname(resolve(out)), `.${basename(out)}.packets-`)); } catch { /* not writable */ }
  }
  return mkdtempSync(join(tmpdir(), 'rolltrace-packets-'));
}

type CapModule = { Cap: new () => CapHandle };
interface CapHandle { open(dev: string, filter: string, bufSize: number, buf: Buffer): string; close(): void; on(ev: 'packet', cb: (n: number, trunc: boolean) => void): void; removeAllListeners(ev?: string): void }

/**
 * cap 0.2.1's close() stops its uv_poll_t but never uv_close()s it, so the handle stays linked in
 * libuv's handle queue; when V8 later collects the Cap object its destructor frees that memory and the
 * process aborts ("double free or corruption") at the next walk of the queue, typically at exit. A
 * closed handle is therefore kept reachable for the life of the process (a few hundred bytes each;
 * the 64 KiB receive buffer is released with the listener).
 */
const closedCaps: CapHandle[] = [];
export function retireCap(c: CapHandle): void {
  try { c.close(); } catch { /* closed */ }
  c.removeAllListeners('packet');
  closedCaps.push(c);
}

function loadCap(): CapModule | null {
  try { return createRequire(import.meta.url)('cap') as CapModule; } catch { return null; }
}

export function create(opts: RecordOptions): Source {
  const name = 'packets';
  const ifaces = defaultIfaces(opts);
  const snaplen = opts.snaplen || 128;
  const maxBytes = opts.maxSize ? opts.maxSize * 1024 * 1024 : Infinity;
  const bin = process.env.ROLLTRACE_TCPDUMP ?? 'tcpdump';
  let backend: 'native' | 'tcpdump' | 'cap' = 'tcpdump';
  /** tcpdump is there (and not ruled out): the addon's fallback for a sink that takes no chunks */
  let tcpdumpUsable = false;
  let sink: Sink | null = null;
  let ctx: RecordContext | null = null;
  const children: ChildProcess[] = [];
  /** each tcpdump's reader, done once its files are read (after tcpdump exited) */
  const finishers: Promise<void>[] = [];
  const caps: CapHandle[] = [];
  const natives: NativeCapture[] = [];
  let packets = 0, bytes = 0, malformed = 0, capped = false, stopping = false;
  const drops = new Map<string, number>();
  let statsTimer: NodeJS.Timeout | null = null;
  const stderrBuf = new Map<string, string>();
  /**
   * The chunked path (schema 3): one cutter per tcpdump stream, one store for the cap backend; closed
   * every 250 ms. Live capture stores the frames only, with no per-frame work beyond the record headers:
   * the index of the frames the analysis reads is built by the bundle's readers (meta packets_index =
   * deferred), off the node, not by the recorder while the rollout runs.
   */
  const cutters: PcapStreamCutter[] = [];
  let store: FrameStore | null = null;
  let chunkTimer: NodeJS.Timeout | null = null;
  const flushChunks = () => { for (const c of cutters) c.flush(); store?.flush(); };

  const kernelDrops = () => [...drops.values()].reduce((a, b) => a + b, 0);
  /** frames the addon counted dropped because the recorder fell MAX_QUEUED bytes behind */
  let queueDrops = 0;
  /** frames in spool files deleted unread (a recorder behind the traffic by more than 512 MB), estimated from the mean frame size */
  const spooled: Array<{ reader: SpoolReader; cutter: PcapStreamCutter | null }> = [];
  const spoolDrops = () => queueDrops + spooled.reduce((a, { reader, cutter }) => {
    if (!reader.skippedBytes) return a;
    const mean = cutter && cutter.frames ? cutter.bytes / cutter.frames : 16 + snaplen;
    return a + Math.round(reader.skippedBytes / mean);
  }, 0);

  function emit(ts_ns: number, iface: string, linktype: number, data: Uint8Array, caplen: number, len: number): void {
    if (capped || !sink) return;
    if (store) store.frame(iface, linktype, ts_ns, caplen, len, data);
    else sink.packet({ ts_ns, iface, ...decodeFrame(linktype, data, caplen, len), data });
    packets++;
    bytes += data.length;
    if (bytes >= maxBytes) cap();
  }

  function cap(): void {
    if (capped) return;
    capped = true;
    sink?.event(ev('capture-capped', Date.now() * 1e6, 'packets', null, { max_mb: opts.maxSize ?? 0, packets }));
    ctx?.log(`packets: --max-size ${opts.maxSize} MB reached after ${packets} packets; capture stopped, other sources continue`);
    void stopCapture();
  }

  /** resolves once tcpdump says it is listening (the capture is active), or on failure/timeout */
  function startTcpdump(iface: string): Promise<void> {
    const dir = spoolDir(opts.out);
    const args = tcpdumpArgs(iface, snaplen, opts.filter, join(dir, 'cap.pcap'));
    // tcpdump gets SIGINT (flushes its file, exits) when the recorder dies without stopping it
    const child = spawnTied(bin, args, { stdio: ['ignore', 'ignore', 'pipe'] });
    children.push(child);
    let exited = false;
    child.on('exit', () => { exited = true; });
    const parser = new CaptureStreamParser({ iface });
    // tcpdump writes classic pcap: cut into chunks with a header scan, no per-frame decode
    const cutter = sink?.chunkSink ? new PcapStreamCutter(sink.chunkSink(name, { indexed: false }), iface) : null;
    if (cutter) cutters.push(cutter);
    const reader = new SpoolReader(join(dir, 'cap.pcap'), () => exited, (chunk) => {
      if (capped) return;
      if (cutter) {
        const before = cutter.frames;
        cutter.push(chunk);
        packets += cutter.frames - before;
        bytes += chunk.length;
        if (bytes >= maxBytes) { cutter.flush(); cap(); }
        return;
      }
      // the parser keeps a view of a cut-off record: a copy, the reader reuses its buffer
      for (const r of parser.push(Buffer.from(chunk))) emit(r.ts_ns, iface, r.linktype, r.data, r.caplen, r.len);
    }, (e) => {
      // the parser counted the bad record; the stream cannot be resynchronised, so this capture ends here
      ctx?.sourceFailed?.(name, `tcpdump on ${iface}: unreadable capture stream (${e.message})`);
      child.kill('SIGKILL');
    });
    spooled.push({ reader, cutter });
    finishers.push(reader.done.then(() => {
      if (reader.skippedFiles) ctx?.log(`packets: ${iface}: the recorder fell ${SPOOL_MAX_WAITING * SPOOL_FILE_MB} MB behind tcpdump; ${reader.skippedFiles} spool file(s) (${(reader.skippedBytes / 1e6).toFixed(0)} MB) deleted unread, counted as drops`);
      if (cutter) { cutter.end(); malformed += cutter.malformed; }
      else { parser.end(); malformed += parser.malformed; }
      rmSync(dir, { recursive: true, force: true });
    }));
    let ready: () => void = () => {};
    const listening = new Promise<void>((res) => { ready = res; });
    const timer = setTimeout(() => { ctx?.log(`packets: tcpdump on ${iface} not listening after 10 s`); ready(); }, 10000);
    child.on('exit', () => { clearTimeout(timer); ready(); });
    child.stderr!.on('data', (d: Buffer) => {
      const t = (stderrBuf.get(iface) ?? '') + d.toString();
      if (/listening on/.test(t)) { clearTimeout(timer); ready(); }
      stderrBuf.set(iface, t.slice(-4000));
      const s = parseTcpdumpStats(t);
      if (s.droppedKernel !== null) drops.set(iface, s.droppedKernel + (s.droppedIface ?? 0));
    });
    child.on('error', (e) => ctx?.log(`packets: ${bin}: ${e.message}`));
    child.on('exit', (code, sig) => {
      if (stopping) return;
      const why = code ? `exited ${code}: ${(stderrBuf.get(iface) ?? '').trim().split('\n').slice(-2).join(' / ')}` : `ended (${sig ?? 'exit 0'})`;
      // packets after this instant on this interface are missing: the analysis must not read silence as fact
      ctx?.sourceFailed?.(name, `tcpdump on ${iface} ${why} at ${new Date().toISOString()}`);
    });
    return listening;
  }

  function startNative(iface: string): void {
    const addon = loadAddon();
    if (!addon || !sink?.chunkSink) throw new Error('the capture addon is not loadable');
    const n = new NativeCapture(addon, sink.chunkSink(name, { indexed: false }), iface, snaplen, KERNEL_BUFFER_KIB * 1024, opts.filter, (frames, b) => {
      packets += frames;
      bytes += b;
      if (bytes >= maxBytes) cap();
    }, (msg) => {
      // packets after this instant on this interface are missing: the analysis must not read silence as fact
      ctx?.sourceFailed?.(name, `capture on ${iface} failed: ${msg} at ${new Date().toISOString()}`);
    });
    natives.push(n);
    nativeCounters(n);
  }

  /** the addon's counters into the source's drop counts */
  function nativeCounters(n: NativeCapture): void {
    const s = n.last ?? n.stats();
    drops.set(n.iface, s.droppedKernel + s.droppedIface);
    queueDrops = natives.reduce((a, x) => a + (x.last ?? x.stats()).queueDrops, 0);
  }

  function startCap(mod: CapModule, iface: string): void {
    const c = new mod.Cap();
    const buf = Buffer.alloc(65535);
    const lt = linktypeFromName(c.open(iface === 'any' ? 'any' : iface, opts.filter ?? '', KERNEL_BUFFER_KIB * 1024, buf));
    const off = measureMonotonicToRealtime(5).offsetNs;
    c.on('packet', (n: number) => {
      const ts = Number(process.hrtime.bigint()) + off;
      const cl = Math.min(n, snaplen);
      emit(ts, iface, lt, new Uint8Array(buf.subarray(0, cl)), cl, n);
    });
    caps.push(c);
  }

  /**
   * Before SIGINT, let tcpdump hand over what the kernel already queued for it: poll its statistics
   * (SIGUSR1) until every packet received by the filter is captured or dropped, at most 3 s.
   */
  async function drain(): Promise<void> {
    const deadline = Date.now() + 3000;
    while (Date.now() < deadline) {
      const live = children.filter((ch) => ch.exitCode === null && ch.signalCode === null);
      if (live.length === 0) return;
      for (const ch of live) ch.kill('SIGUSR1');
      await new Promise((r) => setTimeout(r, 100));
      const behind = ifaces.some((i) => {
        const s = parseTcpdumpStats(stderrBuf.get(i) ?? '');
        return s.received !== null && s.captured !== null && s.captured + (s.droppedKernel ?? 0) < s.received;
      });
      if (!behind) return;
    }
  }

  async function stopCapture(): Promise<void> {
    stopping = true;
    if (statsTimer) { clearInterval(statsTimer); statsTimer = null; }
    if (!capped) await Promise.all([drain(), ...natives.map((n) => n.drain())]);
    for (const n of natives) { n.stop(!capped); nativeCounters(n); }
    for (const c of caps.splice(0)) retireCap(c);
    await Promise.all(children.splice(0).map((ch) => new Promise<void>((res) => {
      if (ch.exitCode !== null || ch.signalCode !== null) return res();
      const t = setTimeout(() => ch.kill('SIGKILL'), 3000);
      ch.on('close', () => { clearTimeout(t); res(); });
      ch.kill('SIGINT'); // tcpdump flushes and prints its final statistics
    })));
  }

  return {
    name,
    async preflight(): Promise<Preflight> {
      const forced = process.env.ROLLTRACE_PACKETS_BACKEND;
      const v = spawnSync(bin, ['--version'], { encoding: 'utf8' });
      const haveTcpdump = !v.error && v.status === 0;
      const capMod = forced === 'tcpdump' || forced === 'native' ? null : loadCap();
      const addon = forced === 'tcpdump' || forced === 'cap' ? null : loadAddon();
      if (process.getuid && process.getuid() !== 0) return { ok: false, detail: 'needs root (raw capture)', clock: 'kernel' };
      const have = netnsInterfaces();
      for (const i of ifaces) if (i !== 'any' && !have.has(i)) return { ok: false, detail: `--iface ${i}: no such interface`, clock: 'kernel' };
      const where = `${ifaces.join(',')}${opts.filter ? ` filter "${opts.filter}"` : ''}, snaplen ${snaplen}, kernel buffer ${KERNEL_BUFFER_KIB / 1024} MiB${opts.maxSize ? `, max ${opts.maxSize} MB` : ''}`;
      tcpdumpUsable = haveTcpdump && forced !== 'cap';
      if (addon) {
        backend = 'native';
        return { ok: true, clock: 'kernel', versions: { libpcap: addon.version() }, detail: `libpcap in the recorder (capture addon) into chunks (kernel timestamps, ns; kernel drop counters) on ${where}` };
      }
      if (forced === 'native') return { ok: false, detail: `ROLLTRACE_PACKETS_BACKEND=native: the capture addon is not built (npm run setup builds it when libpcap-dev and a C compiler are there)`, clock: 'kernel' };
      if (haveTcpdump && forced !== 'cap') {
        backend = 'tcpdump';
        const version = (v.stdout + v.stderr).split('\n').filter(Boolean).slice(0, 2).join('; ');
        return { ok: true, clock: 'kernel', versions: { tcpdump: version }, detail: `tcpdump -w to spool files (kernel timestamps, ns; kernel drop counters) on ${where}${capMod ? '' : '; cap not loadable'}` };
      }
      if (capMod) {
        backend = 'cap';
        return { ok: true, clock: 'receipt', detail: `cap/libpcap on ${where}; tcpdump ${haveTcpdump ? 'not used (forced)' : 'not found'}: timestamps on receipt (µs), no kernel drop counters` };
      }
      return { ok: false, detail: 'neither tcpdump nor the cap module is available', clock: 'kernel' };
    },
    async start(s: Sink, c: RecordContext): Promise<void> {
      sink = s; ctx = c;
      // the addon hands over whole chunks: a sink without chunks (tests' in-memory sinks) gets tcpdump's frames
      if (backend === 'native' && !s.chunkSink && tcpdumpUsable) backend = 'tcpdump';
      if (s.chunkSink) {
        if (backend === 'cap') store = new FrameStore(s.chunkSink(name, { indexed: false }));
        // the bundle writer commits every ≤ 250 ms: close chunks as often, so a kill loses at most ~0.5 s of frames
        chunkTimer = setInterval(flushChunks, 250);
        chunkTimer.unref();
      }
      if (backend === 'native') {
        for (const i of ifaces) startNative(i);
        // live kernel drop counters (the capture thread reads them every 500 ms)
        statsTimer = setInterval(() => { for (const n of natives) nativeCounters(n); }, 2000);
        statsTimer.unref();
        return;
      }
      if (backend === 'cap') {
        const mod = loadCap();
        if (!mod) throw new Error('cap module not loadable');
        for (const i of ifaces) startCap(mod, i);
        return;
      }
      await Promise.all(ifaces.map((i) => startTcpdump(i)));
      // live kernel drop counters: tcpdump prints its statistics on SIGUSR1
      statsTimer = setInterval(() => { for (const ch of children) if (ch.exitCode === null) ch.kill('SIGUSR1'); }, 2000);
      statsTimer.unref();
    },
    async stop(): Promise<void> {
      await stopCapture();
      await Promise.all(finishers.splice(0));
      if (chunkTimer) { clearInterval(chunkTimer); chunkTimer = null; }
      flushChunks();
      if (sink) {
        if (kernelDrops()) sink.dropped(name, kernelDrops());
        if (spoolDrops()) sink.dropped(name, spoolDrops());
        if (malformed) sink.dropped(name, malformed);
      }
    },
    stats(): SourceStats {
      return {
        events: packets, dropped: kernelDrops() + malformed + spoolDrops(),
        extra: `${backend}; kernel drops ${backend === 'cap' ? 'unknown' : kernelDrops()}${spoolDrops() ? `; ~${spoolDrops()} skipped (recorder behind)` : ''}${capped ? '; capped' : ''}`,
      };
    },
  };
}
