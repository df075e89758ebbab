/**
 * realtime - monotonic offset. Date.now() only has ms resolution, so we watch for the instant it
 * ticks: right after a tick the realtime clock is at most a few µs past a whole millisecond, and the
 * monotonic clock (process.hrtime = CLOCK_MONOTONIC, the clock of bpftrace's nsecs) read around it
 * bounds the pair. Of many ticks we keep the tightest (smallest read window, largest estimate).
 */
export interface ClockOffset { offsetNs: number; uncertaintyNs: number; samples: number }

export function measureMonotonicToRealtime(ticks = 20): ClockOffset {
  let best = -Infinity;
  let bestWindow = Infinity;
  for (let i = 0; i < ticks; i++) {
    const start = Date.now();
    let before = process.hrtime.bigint();
    let now = Date.now();
    while (now === start) { before = process.hrtime.bigint(); now = Date.now(); }
    const after = process.hrtime.bigint();
    // realtime crossed now*1e6 somewhere in (prev read, this read]; we only know it is >= now*1e6 at `after`
    const est = now * 1e6 - Number(after);
    const window = Number(after - before);
    if (est > best) { best = est; bestWindow = window; }
  }
  return { offsetNs: Math.round(best), uncertaintyNs: Math.max(bestWindow, 1000), samples: ticks };
}

/**
 * realtime - monotonic from one read of each: at most ~1 ms (Date.now's resolution) plus the read's delay
 * below the true offset, never above it. Cheap: for watching, not for converting.
 */
export function coarseOffsetNs(): number {
  return Date.now() * 1e6 - Number(process.hrtime.bigint());
}

/**
 * Follows steps of the realtime clock (NTP or a VM's guest agent setting the time) while recording: bpftrace
 * stamps on the monotonic clock, every other source and the pods on the realtime one, so after a step the
 * offset measured at start would put the kernel's events off by the step. A coarse read every `everyMs`
 * (nothing measurable) flags a change beyond `thresholdNs`; a precise measurement then confirms it and
 * `onStep` gets the new offset.
 */
export class OffsetWatch {
  private timer: NodeJS.Timeout | null = null;
  constructor(public offset: ClockOffset, private onStep: (next: ClockOffset, deltaNs: number) => void,
    private measure: () => ClockOffset = measureMonotonicToRealtime, private coarse: () => number = coarseOffsetNs, private thresholdNs = 2e6) {}

  start(everyMs = 500): void {
    this.timer = setInterval(() => this.check(), everyMs);
    this.timer.unref();
  }
  stop(): void { if (this.timer) clearInterval(this.timer); this.timer = null; }

  /** one look: true when the offset changed (and onStep was told) */
  check(): boolean {
    // the coarse read is at most ~1 ms under the offset (plus a delayed read): only a step moves it past
    // the threshold upward; downward, a delayed read can too, and the precise measurement tells
    const c = this.coarse();
    if (c <= this.offset.offsetNs + this.thresholdNs && c >= this.offset.offsetNs - 1e6 - this.thresholdNs) return false;
    // a step is a change of 1 ms or more that a second measurement confirms (a measurement on a loaded node
    // can come out low: each estimate is at most the offset, and a delayed read lowers it)
    const next = this.measure();
    const delta = next.offsetNs - this.offset.offsetNs;
    if (Math.abs(delta) < Math.max(this.offset.uncertaintyNs, next.uncertaintyNs, 1e6)) return false;
    const again = this.measure();
    if (Math.abs(again.offsetNs - next.offsetNs) > Math.max(again.uncertaintyNs, next.uncertaintyNs, 200e3)) return false;
    this.offset = next;
    this.onStep(next, delta);
    return true;
  }
}
