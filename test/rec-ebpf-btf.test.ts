/**
 * The kernel struct fields the ebpf program reads by offset (btf.ts: offsets from this kernel's BTF, so
 * that bpftrace need not clang-parse struct definitions) against bpftrace's own struct access, on the
 * same events: a process exiting 7, one SIGKILLed, a listener opened in a namespace this test creates.
 * And the program the recorder runs here (offsets, tracepoint fields read at their format offsets) against
 * the reference program of the golden fixture (struct types, args->): the same lines for the same events.
 */
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { copyFileSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Btf, kernelOffsets } from '../recorder/sources/ebpf/btf.js';
import { generateForThisKernel } from '../recorder/sources/ebpf/index.js';
import { buildProgram } from '../recorder/sources/ebpf/program.js';

const R = randomBytes(2).toString('hex');
const NS = `rt-btf-${R}`;
const dir = mkdtempSync(join(tmpdir(), 'rt-btf-'));
beforeAll(() => {
  execFileSync('ip', ['netns', 'add', NS]);
  execFileSync('ip', ['-n', NS, 'link', 'set', 'lo', 'up']);
});
afterAll(() => {
  try { execFileSync('ip', ['netns', 'del', NS], { stdio: 'ignore' }); } catch { /* gone */ }
  rmSync(dir, { recursive: true, force: true });
});

/** bpftrace on a program file, once every probe is attached; stop() detaches it and gives all it printed */
async function attached(prog: string): Promise<{ out(): string; stop(): Promise<string> }> {
  const bt = spawn('bpftrace', ['-B', 'line', prog], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, BPFTRACE_STRLEN: '64', __BPFTRACE_NOTIFY_PROBES_ATTACHED: '1' } });
  let out = '';
  bt.stdout!.on('data', (d) => { out += d; });
  bt.stderr!.on('data', (d) => { out += d; }); // the attached notice
  const closed = new Promise((r) => bt.on('close', r));
  // SIGINT detaches and exits; one that has not exited 5 s later is killed (a stop never hangs the test)
  const stop = async () => {
    bt.kill('SIGINT');
    const k = setTimeout(() => bt.kill('SIGKILL'), 5000);
    await closed;
    clearTimeout(k);
    return out;
  };
  try {
    await new Promise<void>((res, rej) => {
      const t = setTimeout(() => rej(new Error(`bpftrace did not attach: ${out}`)), 30000);
      const i = setInterval(() => { if (out.includes('__BPFTRACE_NOTIFY_PROBES_ATTACHED')) { clearInterval(i); clearTimeout(t); res(); } }, 20);
      // a bpftrace that exits (did not compile) fails now, not at the timeout
      void closed.then(() => { clearInterval(i); clearTimeout(t); rej(new Error(`bpftrace exited before attaching: ${out}`)); });
    });
  } catch (e) { await stop(); throw e; }
  return { out: () => out, stop };
}

const inNs = (args: string[]) => ['netns', 'exec', NS, ...args];
/** a step of the test's own traffic: bounded, and named when it fails */
function run(what: string, args: string[], opts: { stdio?: 'ignore' } = {}): ReturnType<typeof spawnSync> {
  const r = spawnSync('ip', inNs(args), { timeout: 15_000, encoding: 'utf8', ...opts });
  if (r.error || r.signal === 'SIGTERM') throw new Error(`${what}: ${r.error?.message ?? 'timed out'} ${r.stderr ?? ''}`);
  return r;
}
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('kernel offsets from BTF', () => {
  const offsets = kernelOffsets(new Btf(readFileSync('/sys/kernel/btf/vmlinux')));

  it('the program names no struct type when it has the offsets', () => {
    expect(offsets).not.toBeNull();
    const p = buildProgram({ btf: true, offsets, processExit: { fields: new Map(), symbols: new Map() } as never });
    expect(p.text).not.toMatch(/struct |curtask->/);
    expect(p.text).toContain(`((uint64)curtask + ${offsets!.exitCode})`);
  });

  it('reads what bpftrace reads through the struct types', async () => {
    const o = offsets!;
    const comm = `rtbtf${R}`;
    const port = 40000 + (parseInt(R, 16) % 20000);
    const prog = join(dir, 'check.bt');
    writeFileSync(prog, `tracepoint:sched:sched_process_exit /comm == "${comm}"/ { printf("E %d %d\\n", curtask->exit_code, *(int32 *)((uint64)curtask + ${o.exitCode})); }
tracepoint:sock:inet_sock_set_state /args->newstate == 10 && args->sport == ${port}/ { printf("N %u %u\\n", ((struct sock *)args->skaddr)->__sk_common.skc_net.net->ns.inum, *(uint32 *)(*(uint64 *)((uint64)args->skaddr + ${o.skNet}) + ${o.netInum})); }
`);
    const bin = join(dir, comm);
    copyFileSync('/bin/bash', bin);
    const bt = await attached(prog);
    let out = '';
    try {
      spawnSync(bin, ['-c', 'exit 7']);
      spawnSync(bin, ['-c', 'kill -9 $$']);
      spawnSync('ip', inNs([process.execPath, '-e', `require('net').createServer().listen(${port}, '127.0.0.1', () => process.exit(0))`]));
      for (let i = 0; i < 100 && (bt.out().match(/^[EN] /gm) ?? []).length < 3; i++) await sleep(50);
    } finally {
      out = await bt.stop();
    }
    const rows = out.split('\n').filter((l) => /^[EN] /.test(l)).map((l) => l.split(' '));
    for (const [, viaStruct, viaOffset] of rows) expect(viaOffset).toBe(viaStruct);
    expect(rows.filter((r) => r[0] === 'E').map((r) => Number(r[2])).sort((a, b) => a - b)).toEqual([9, 7 << 8]);
    // the namespace's inode: the nsfs file `ip netns add` bind-mounted
    expect(rows.find((r) => r[0] === 'N')?.[2]).toBe(String(statSync(`/run/netns/${NS}`).ino));
  });

  it('the program run here prints the reference program\'s lines for the same events', async () => {
    const g = generateForThisKernel();
    if ('error' in g) throw new Error(g.error);
    expect(g.program.text).not.toMatch(/struct |curtask->/);
    // one args-> is left (an inline u8[16] cannot be handed to ntop by address)
    expect(g.program.text.match(/args->/g)).toEqual(['args->']);
    const fast = join(dir, 'fast.bt');
    writeFileSync(fast, g.program.text);
    const ref = new URL('../fixtures/bpftrace/program-6.18.bt', import.meta.url).pathname;
    const port = 30000 + (parseInt(R, 16) % 20000);
    // both attached to the same tracepoints, then: listeners (v4, v6) in the namespace, a connection reset by its
    // server, SYNs to a closed port (RSTs without a socket), a listener exiting 7, SIGKILL, SIGTERM
    const [a, b] = await Promise.all([attached(ref), attached(fast)]);
    const pids = new Set<number>();
    let refOut = '', fastOut = '';
    try {
      const server = spawn('ip', inNs([process.execPath, '-e', `const net = require('net');
        net.createServer((c) => c.resetAndDestroy()).listen(${port}, '127.0.0.1', () =>
          net.createServer().listen(${port + 1}, '::1', () => console.log('up')));`]), { stdio: ['ignore', 'pipe', 'inherit'] });
      pids.add(server.pid!);
      await new Promise<void>((res, rej) => {
        const t = setTimeout(() => rej(new Error('the test server did not listen within 15 s')), 15_000);
        server.stdout!.once('data', () => { clearTimeout(t); res(); });
        server.once('exit', (c) => { clearTimeout(t); rej(new Error(`the test server exited (${c}) before listening`)); });
      });
      run('the reset connection', [process.execPath, '-e', `require('net').connect(${port}, '127.0.0.1').on('error', () => {}).on('close', () => process.exit(0))`]);
      run('SYNs to a closed port', ['bash', '-c', 'exec 3<>/dev/tcp/127.0.0.1/9; exec 4<>/dev/tcp/::1/9'], { stdio: 'ignore' });
      const seven = run('the listener exiting 7', [process.execPath, '-e', `require('net').createServer().listen(${port + 2}, '127.0.0.1', () => process.exit(7))`]);
      pids.add(seven.pid!);
      const sleeper = spawn('ip', inNs(['sleep', '30']), { stdio: 'ignore' });
      pids.add(sleeper.pid!);
      await sleep(200);
      sleeper.kill('SIGKILL');
      server.kill('SIGTERM');
      await Promise.all([server, sleeper].map((c) => new Promise((r) => (c.exitCode !== null || c.signalCode !== null ? r(0) : c.on('exit', r)))));
      await sleep(300);
    } finally {
      [refOut, fastOut] = await Promise.all([a.stop(), b.stop()]);
    }
    const ino = String(statSync(`/run/netns/${NS}`).ino);
    // this test's events (the tracepoints see the whole machine), without the instant
    const ours = (out: string) => out.split('\n').map((l) => l.split('\t')).filter((f) => f[0] === 'RT' && (
      (f[1] === 'SK' && f[11] === ino) || (f[1] === 'RST' && f[8] === ino)
      || (f[1] === 'SIG' && pids.has(Number(f[4]))) || (f[1] === 'EXIT' && pids.has(Number(f[3])))))
      .map((f) => [f[1], ...f.slice(3)].join(' ')).sort();
    const want = ours(refOut);
    const kinds = want.map((l) => l.split(' ').slice(0, 3).join(' '));
    // listen and close, v4 and v6; resets with and without a socket; SIGKILL and SIGTERM; exits by code and signal
    expect(kinds.filter((k) => k.startsWith('SK ')).length).toBeGreaterThanOrEqual(6);
    expect(want.filter((l) => l.startsWith('SK ') && l.split(' ')[4] === '10').length).toBeGreaterThanOrEqual(2);
    expect(kinds.filter((k) => k.startsWith('RST ')).length).toBeGreaterThanOrEqual(3);
    expect(kinds).toEqual(expect.arrayContaining(['SIG 15 ' + [...pids][0], 'SIG 9 ' + [...pids][2]]));
    expect(want.filter((l) => l.startsWith('EXIT ')).map((l) => l.split(' ')[2]).sort()).toEqual(['15', '1792', '9'].sort());
    expect(ours(fastOut)).toEqual(want);
  });
});
