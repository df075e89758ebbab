/** Pure parser of `wrk --latency` output (wrk 4.1, Debian bookworm): requests/s, percentiles, errors. */

export interface WrkResult {
  requests: number;
  seconds: number;
  rps: number;
  /** latency percentiles in ms (50, 75, 90, 99) */
  p50: number;
  p99: number;
  /** socket errors (connect + read + write + timeout) plus non-2xx/3xx responses */
  errors: number;
}

const UNIT_MS: Record<string, number> = { us: 1e-3, ms: 1, s: 1000, m: 60000 };

function duration(v: string, unit: string): number {
  const f = UNIT_MS[unit];
  if (f === undefined) throw new Error(`wrk: unknown time unit ${unit}`);
  return Number(v) * f;
}

export function parseWrk(text: string): WrkResult {
  const pct = (p: number) => {
    const m = new RegExp(`^\\s*${p}%\\s+([\\d.]+)(us|ms|s|m)\\s*$`, 'm').exec(text);
    if (!m) throw new Error(`wrk: no ${p}% latency line (run with --latency)`);
    return duration(m[1]!, m[2]!);
  };
  const total = /^\s*(\d+) requests in ([\d.]+)(us|ms|s|m),/m.exec(text);
  const rps = /^Requests\/sec:\s+([\d.]+)/m.exec(text);
  if (!total || !rps) throw new Error('wrk: no "N requests in" / "Requests/sec:" line');
  const sock = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(text);
  const non2xx = /Non-2xx or 3xx responses: (\d+)/.exec(text);
  const errors = (sock ? sock.slice(1, 5).reduce((a, b) => a + Number(b), 0) : 0) + (non2xx ? Number(non2xx[1]) : 0);
  return {
    requests: Number(total[1]), seconds: duration(total[2]!, total[3]!) / 1000, rps: Number(rps[1]),
    p50: pct(50), p99: pct(99), errors,
  };
}
