// End-to-end: a real HTTP server in a private netns, traced by the strace and ebpf sources at once
// through their Source interface; SIGTERM it and compare what both saw.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import type { RtEvent } from '../schemas/events.js';
import { baseOpts, ctxFor, startTracers } from './helpers/sources.js';

const NS = `rt-st-e2e-${randomBytes(3).toString('hex')}`;
const SERVER = fileURLToPath(new URL('../fixtures/strace/server.cjs', import.meta.url));
let server: ChildProcess | null = null;

const sh = (...a: string[]) => execFileSync(a[0]!, a.slice(1), { stdio: 'pipe' }).toString();

beforeAll(() => {
  sh('ip', 'netns', 'add', NS);
  sh('ip', '-n', NS, 'link', 'set', 'lo', 'up');
});
afterAll(() => {
  if (server?.pid && server.exitCode === null) try { process.kill(server.pid, 'SIGKILL'); } catch { /* gone */ }
  try { sh('ip', 'netns', 'del', NS); } catch { /* gone */ }
});

describe('strace + ebpf sources against a real server', () => {
  it('--strace all: attached from the start; see SIGTERM, the listener closing (with port) and the exit, within a few ms of each other', async () => {
    server = spawn('ip', ['netns', 'exec', NS, 'node', SERVER, '18080'], { stdio: ['ignore', 'pipe', 'inherit'] });
    await new Promise<void>((res) => server!.stdout!.once('data', () => res()));
    const pid = server.pid!; // ip netns exec execs node in place: same pid
    const opts = baseOpts({ pid: [String(pid)], straceMode: 'all' });
    const t0 = Date.now() * 1e6;
    const log: string[] = [];
    const ctx = ctxFor(opts, log);
    const { st, eb, sst, seb, peb } = await startTracers(opts, ctx);
    expect(JSON.parse(peb.meta!.clock_offsets!).ebpf_monotonic_to_realtime_ns).toBeGreaterThan(1.6e18);
    sh('ip', 'netns', 'exec', NS, 'curl', '-s', 'http://127.0.0.1:18080/');
    const before = Date.now() * 1e6;
    process.kill(pid, 'SIGTERM');
    await new Promise<void>((res) => server!.once('exit', () => res()));
    await new Promise((r) => setTimeout(r, 500));
    await st.stop(); await eb.stop();
    const after = Date.now() * 1e6;

    const one = (evs: RtEvent[], kind: string, pred: (a: Record<string, unknown>) => boolean = () => true) => {
      const m = evs.filter((e) => e.kind === kind && pred(e.attrs as unknown as Record<string, unknown>));
      expect(m.length, `${kind} in ${JSON.stringify(evs.map((e) => e.kind))}`).toBeGreaterThanOrEqual(1);
      return m[0]!;
    };
    const attached = one(sst.events, 'process-attached');
    expect(attached.attrs).toMatchObject({ pid, mode: 'all', reason: 'all', confirmed: true, listeners: expect.arrayContaining([expect.objectContaining({ port: 18080 })]) });
    // attached from the start: requested at start(), confirmed by strace within a second, before the load
    const att = attached.attrs as { requested_ns: number; trigger_ns: number };
    expect(att.requested_ns).toBeGreaterThanOrEqual(t0);
    expect(attached.ts_ns).toBeGreaterThanOrEqual(att.requested_ns);
    expect(attached.ts_ns - att.requested_ns).toBeLessThan(1e9);
    expect(attached.ts_ns).toBeLessThan(before);
    one(sst.events, 'accept');
    const sSig = one(sst.events, 'signal', (a) => a.signame === 'SIGTERM');
    const sClose = one(sst.events, 'listener-closed', (a) => a.port === 18080);
        const sExit = one(sst.events, 'process-exit', (a) => a.pid === pid);
    const eSig = one(seb.events, 'signal', (a) => a.signame === 'SIGTERM' && a.pid === pid);
    const eClose = one(seb.events, 'listener-closed', (a) => a.port === 18080 && a.pid === pid);
    const eExit = one(seb.events, 'process-exit', (a) => a.pid === pid);
    expect(sClose.attrs).toMatchObject({ how: 'close', addr: '0.0.0.0' });
    expect(eClose.attrs).toMatchObject({ how: 'tcp-state' });
    expect((sExit.attrs as { code: number }).code).toBe(0);
    for (const e of [sSig, sClose, sExit, eSig, eClose, eExit]) {
      expect(e.ts_ns).toBeGreaterThan(before - 5e6);
      expect(e.ts_ns).toBeLessThan(after);
    }
    // order on each clock: signal, listener closed, exit
    expect(sSig.ts_ns).toBeLessThanOrEqual(sClose.ts_ns);
    expect(sClose.ts_ns).toBeLessThanOrEqual(sExit.ts_ns);
    expect(eSig.ts_ns).toBeLessThanOrEqual(eClose.ts_ns);
    // the two clocks agree within a few ms
    expect(Math.abs(eClose.ts_ns - sClose.ts_ns)).toBeLessThan(5e6);
    expect(Math.abs(eSig.ts_ns - sSig.ts_ns)).toBeLessThan(5e6);
    console.log(`strace vs ebpf: signal ${((sSig.ts_ns - eSig.ts_ns) / 1e3).toFixed(0)} µs, listener-closed ${((sClose.ts_ns - eClose.ts_ns) / 1e3).toFixed(0)} µs, exit ${((sExit.ts_ns - eExit.ts_ns) / 1e3).toFixed(0)} µs`);
  });

  it('lazy (default): nothing traced until ebpf sees the SIGTERM, then strace attaches and sees the drain end', async () => {
    // the server keeps serving 400 ms after SIGTERM (a drain), then closes its listeners and exits
    server = spawn('ip', ['netns', 'exec', NS, 'node', SERVER, '18084', '', '400'], { stdio: ['ignore', 'pipe', 'inherit'] });
    await new Promise<void>((res) => server!.stdout!.once('data', () => res()));
    const pid = server.pid!;
    const opts = baseOpts({ pid: [String(pid)] });
    expect(opts.straceMode).toBeUndefined(); // the default
    const { st, eb, sst, seb } = await startTracers(opts, ctxFor(opts));
    sh('ip', 'netns', 'exec', NS, 'curl', '-s', 'http://127.0.0.1:18084/');
    await new Promise((r) => setTimeout(r, 200));
    expect(sst.events, 'strace recorded something before the SIGTERM').toEqual([]);
    expect(st.stats().extra).toBe('lazy 0 pids');
    process.kill(pid, 'SIGTERM');
    await new Promise<void>((res) => server!.once('exit', () => res()));
    await new Promise((r) => setTimeout(r, 500));
    await st.stop(); await eb.stop();

    const find = (evs: RtEvent[], kind: string, pred: (a: Record<string, unknown>) => boolean = () => true) =>
      evs.find((e) => e.kind === kind && pred(e.attrs as unknown as Record<string, unknown>));
    const eSig = find(seb.events, 'signal', (a) => a.signame === 'SIGTERM' && a.pid === pid)!;
    expect(eSig).toBeDefined();
    const attached = find(sst.events, 'process-attached')!;
    expect(attached.attrs).toMatchObject({ pid, mode: 'lazy', reason: 'signal', trigger_ns: eSig.ts_ns, confirmed: true });
    expect(attached.ts_ns).toBeGreaterThan(eSig.ts_ns);
    // attached well within the drain: strace sees the listener close and the exit; ebpf too
    const sClose = find(sst.events, 'listener-closed', (a) => a.port === 18084 && a.how === 'close')!;
    const eClose = find(seb.events, 'listener-closed', (a) => a.port === 18084 && a.pid === pid)!;
    expect(sClose, JSON.stringify(sst.events.map((e) => e.kind))).toBeDefined();
    expect(eClose).toBeDefined();
    expect(sClose.ts_ns).toBeGreaterThan(attached.ts_ns);
    expect(Math.abs(sClose.ts_ns - eClose.ts_ns)).toBeLessThan(5e6);
    expect(find(sst.events, 'process-exit', (a) => a.pid === pid)).toBeDefined();
    expect(find(seb.events, 'process-exit', (a) => a.pid === pid)).toBeDefined();
    console.log(`lazy: strace attached ${((attached.ts_ns - eSig.ts_ns) / 1e6).toFixed(1)} ms after the SIGTERM was generated`);
  });
});
