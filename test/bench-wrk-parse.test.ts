// The wrk output parser of bench/tracing-overhead.ts, on output captured from wrk 4.1 (Debian bookworm) here.
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { parseWrk } from '../bench/wrk.js';

const F = readFileSync(new URL('../fixtures/wrk/connection-close-4.1.0.txt', import.meta.url), 'utf8');

describe('parseWrk', () => {
  it('requests/s, p50/p99 in ms whatever the unit, totals', () => {
    const r = parseWrk(F);
    expect(r).toMatchObject({ requests: 14636, seconds: 2.05, rps: 7139.63, p99: 60.82, errors: 0 });
    expect(r.p50).toBeCloseTo(0.471, 9); // 471.00us
  });
  it('socket errors and non-2xx responses count as errors', () => {
    const t = F.replace('Requests/sec:', '  Socket errors: connect 0, read 3, write 1, timeout 2\n  Non-2xx or 3xx responses: 4\nRequests/sec:');
    expect(parseWrk(t).errors).toBe(10);
  });
  it('names what is missing', () => {
    expect(() => parseWrk(F.replace(/^\s*99%.*$/m, ''))).toThrow(/no 99% latency line/);
    expect(() => parseWrk('')).toThrow(/Requests\/sec/);
  });
});
