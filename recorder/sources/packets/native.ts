/**
 * The in-process capture backend: rolltrace's own libpcap addon (native/capture/capture.c), built by the
 * setup step when libpcap-dev and a compiler are there. A thread of the addon reads libpcap's TPACKET_V3
 * ring into blocks that are whole nanosecond pcap files of at most CHUNK_BYTES; this side takes each full
 * block with one memcpy and stores it as a `packet_chunks` row as it is: no per-frame work in JavaScript,
 * no spool file written and read back (tcpdump's path), kernel timestamps (ns) and kernel drop counters
 * as with tcpdump. Frames the addon could not queue because the recorder fell more than MAX_QUEUED bytes
 * behind are counted as drops (`queueDrops`).
 */
import { createRequire } from 'node:module';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { packageRoot } from '../../../schemas/version.js';
import { CHUNK_BYTES, recycler, type ChunkSink, type PacketChunkRow } from '../../../schemas/decode/chunks.js';

export interface CaptureAddon {
  open(iface: string, snaplen: number, bufferBytes: number, filter: string | null, blockBytes: number, maxQueuedBytes: number): unknown;
  linktype(h: unknown): number;
  take(h: unknown, dst: Buffer, out: Float64Array): number;
  flush(h: unknown): void;
  stats(h: unknown, out: Float64Array): string | null;
  stop(h: unknown): void;
  close(h: unknown): void;
  version(): string;
}

/** where the setup step builds the addon */
export function addonPath(): string | null {
  const root = packageRoot();
  return root ? join(root, 'native', 'capture', 'build', 'Release', 'rolltrace_capture.node') : null;
}

let loaded: CaptureAddon | null | undefined;
/** the addon, or null when it is not built (the packets source then uses tcpdump) */
export function loadAddon(): CaptureAddon | null {
  if (loaded !== undefined) return loaded;
  const p = addonPath();
  try { loaded = p && existsSync(p) ? (createRequire(import.meta.url)(p) as CaptureAddon) : null; } catch { loaded = null; }
  return loaded;
}

/** the most bytes of full blocks waiting for the recorder before frames are dropped (counted) */
export const MAX_QUEUED = 128 << 20;
/**
 * how often full blocks are taken: a block (1 MiB) fills in ~15 ms at 600 kpps, and they wait in the
 * addon's queue meanwhile (MAX_QUEUED: ~2 s at that rate)
 */
const POLL_MS = 50;

export interface NativeStats { received: number; droppedKernel: number; droppedIface: number; captured: number; queueDrops: number; running: boolean; error: string | null }

/** One interface captured by the addon, its blocks going to `sink` as chunks. */
export class NativeCapture {
  readonly linktype: number;
  frames = 0;
  bytes = 0;
  private h: unknown;
  private timer: NodeJS.Timeout;
  private out = new Float64Array(6);
  private spare: Buffer[] = [];
  private closed = false;
  private failed = false;
  private polls = 0;
  private counters = new Float64Array(6);

  /**
   * `onChunk` is told of each stored chunk (frames, bytes) and may stop the capture; `onError` is told once
   * when the capture thread ends on an error of libpcap's (the interface went away, ...).
   */
  constructor(private addon: CaptureAddon, private sink: ChunkSink, readonly iface: string, snaplen: number, bufferBytes: number, filter: string | undefined,
    private onChunk: (frames: number, bytes: number) => void, private onError: (msg: string) => void) {
    this.h = addon.open(iface, snaplen, bufferBytes, filter ?? null, CHUNK_BYTES, MAX_QUEUED);
    this.linktype = addon.linktype(this.h);
    // not unref'd: like tcpdump's child process for the tcpdump backend, the capture keeps the recorder running
    this.timer = setInterval(() => this.poll(), POLL_MS);
  }

  /** take every full block waiting */
  poll(): void {
    if (this.closed) return;
    for (;;) {
      const buf = this.spare.pop() ?? Buffer.allocUnsafeSlow(CHUNK_BYTES);
      const n = this.addon.take(this.h, buf, this.out);
      if (n === 0) { this.spare.push(buf); break; }
      const o = this.out;
      const row: PacketChunkRow = {
        id: this.sink.nextChunkId(), iface: this.iface, linktype: this.linktype,
        first_ts_ns: o[2]! * 1e9 + o[3]!, last_ts_ns: o[4]! * 1e9 + o[5]!, packets: o[1]!, data: buf.subarray(0, n),
        // the sink wrote the bytes: the buffer serves a later block
        release: recycler(this.spare, buf, CHUNK_BYTES),
      };
      this.frames += o[1]!;
      this.bytes += n;
      this.sink.chunk(row);
      this.onChunk(o[1]!, n);
      if (this.closed) return;
    }
    // the capture thread's error, once a second
    if (!this.failed && ++this.polls % Math.round(1000 / POLL_MS) === 0) {
      const error = this.stats().error;
      if (error) { this.failed = true; this.onError(error); }
    }
  }

  /** libpcap's counters as of the capture thread's last reading (every 500 ms, and on flush) */
  stats(): NativeStats {
    const o = this.counters.fill(0);
    const error = this.closed ? null : this.addon.stats(this.h, o);
    return { received: o[0]!, droppedKernel: o[1]!, droppedIface: o[2]!, captured: o[3]!, queueDrops: o[4]!, running: o[5] === 1, error };
  }

  /** ask for the block being filled and fresh counters */
  flush(): void { if (!this.closed) this.addon.flush(this.h); }

  /**
   * Let the capture hand over what the kernel already queued for it (every frame the filter received is
   * captured or counted dropped, at most `ms`), then stop the thread and take the last blocks.
   */
  async drain(ms = 3000): Promise<void> {
    const deadline = Date.now() + ms;
    while (!this.closed && Date.now() < deadline) {
      this.flush();
      await new Promise((r) => setTimeout(r, 150));
      this.poll();
      const s = this.stats();
      if (!s.running || s.captured + s.droppedKernel + s.queueDrops >= s.received) break;
    }
  }

  /** stop the thread, take the last blocks (unless `take` is false: --max-size reached); the final counters stay readable through `last` */
  last: NativeStats | null = null;
  stop(take = true): void {
    if (this.closed) return;
    clearInterval(this.timer);
    this.addon.stop(this.h);
    if (take) this.poll();
    this.last = this.stats();
    this.closed = true;
    this.addon.close(this.h);
  }
}
