/**
 * The kernel struct fields the ebpf program reads by offset (btf.ts: offsets from this kernel's BTF, so
 * that bpftrace need not clang-parse struct definitions) against bpftrace's own struct access, on the
 * same events: a process exiting 7, one SIGKILLed, a listener opened in a namespace this test creates.
 */
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { copyFileSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { Btf, kernelOffsets } from '../recorder/sources/ebpf/btf.js';
import { buildProgram } from '../recorder/sources/ebpf/program.js';

const R = randomBytes(2).toString('hex');
const NS = `rt-btf-${R}`;
const dir = mkdtempSync(join(tmpdir(), 'rt-btf-'));
afterAll(() => {
  try { execFileSync('ip', ['netns', 'del', NS], { stdio: 'ignore' }); } catch { /* gone */ }
  rmSync(dir, { recursive: true, force: true });
});

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
    execFileSync('ip', ['netns', 'add', NS]);
    execFileSync('ip', ['-n', NS, 'link', 'set', 'lo', 'up']);
    const bin = join(dir, comm);
    copyFileSync('/bin/bash', bin);
    const bt = spawn('bpftrace', ['-B', 'line', prog], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, __BPFTRACE_NOTIFY_PROBES_ATTACHED: '1' } });
    let out = '';
    bt.stdout!.on('data', (d) => { out += d; });
    bt.stderr!.on('data', (d) => { out += d; }); // the attached notice
    try {
      await new Promise<void>((res, rej) => {
        const t = setTimeout(() => rej(new Error(`bpftrace did not attach: ${out}`)), 30000);
        const i = setInterval(() => { if (out.includes('__BPFTRACE_NOTIFY_PROBES_ATTACHED')) { clearInterval(i); clearTimeout(t); res(); } }, 20);
      });
      spawnSync(bin, ['-c', 'exit 7']);
      spawnSync(bin, ['-c', 'kill -9 $$']);
      spawnSync('ip', ['netns', 'exec', NS, process.execPath, '-e', `require('net').createServer().listen(${port}, '127.0.0.1', () => process.exit(0))`]);
      for (let i = 0; i < 100 && (out.match(/^[EN] /gm) ?? []).length < 3; i++) await new Promise((r) => setTimeout(r, 50));
    } finally {
      bt.kill('SIGINT');
      await new Promise((r) => bt.on('close', r));
    }
    const rows = out.split('\n').filter((l) => /^[EN] /.test(l)).map((l) => l.split(' '));
    for (const [, viaStruct, viaOffset] of rows) expect(viaOffset).toBe(viaStruct);
    expect(rows.filter((r) => r[0] === 'E').map((r) => Number(r[2])).sort((a, b) => a - b)).toEqual([9, 7 << 8]);
    // the namespace's inode: the nsfs file `ip netns add` bind-mounted
    expect(rows.find((r) => r[0] === 'N')?.[2]).toBe(String(statSync(`/run/netns/${NS}`).ino));
  });
});
