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
