/**
 * The ebpf source's failure paths with stand-ins for bpftrace (ROLLTRACE_BPFTRACE): its preflight
 * launches bpftrace before checking it (the compile runs alongside the other checks), so a check that
 * fails must leave no bpftrace behind; a program that does not compile fails start(); a bpftrace that
 * dies while recording is reported through ctx.sourceFailed. Needs root (the program is generated from
 * this kernel's tracefs).
 */
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { create, discardEarly, launchEarly } from '../recorder/sources/ebpf/index.js';
import type { RecordContext, RecordOptions, Source } from '../recorder/source.js';
import type { Sink } from '../recorder/bundle-writer.js';

const dir = mkdtempSync(join(tmpdir(), 'rt-ebpf-fail-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** a stand-in bpftrace: `--version` as given, and the run's script (its pid goes to <name>.pid) */
function fake(name: string, version: string, run: string): string {
  const p = join(dir, name);
  writeFileSync(p, `#!/bin/bash\nif [ "$1" = "--version" ]; then ${version}; fi\necho $$ >> ${p}.pid\n${run}\n`);
  chmodSync(p, 0o755);
  return p;
}

function withBin<T>(bin: string, f: () => T = () => create({} as RecordOptions) as T): T {
  const before = process.env.ROLLTRACE_BPFTRACE;
  process.env.ROLLTRACE_BPFTRACE = bin;
  try { return f(); } finally {
    if (before === undefined) delete process.env.ROLLTRACE_BPFTRACE; else process.env.ROLLTRACE_BPFTRACE = before;
  }
}
const pids = (bin: string) => (existsSync(`${bin}.pid`) ? readFileSync(`${bin}.pid`, 'utf8').trim().split('\n').map(Number) : []);

function context(): { ctx: RecordContext; failed: string[]; logs: string[] } {
  const failed: string[] = [], logs: string[] = [];
  const ctx = {
    opts: {} as RecordOptions, pods: new Map(), onPodsChanged() {}, podsChanged() {}, requestStop() {},
    log: (l: string) => logs.push(l), sourceFailed: (_n: string, why: string) => failed.push(why),
  } satisfies RecordContext;
  return { ctx, failed, logs };
}

const DIES = `sleep 0.2
echo "__BPFTRACE_NOTIFY_PROBES_ATTACHED" >&2
printf 'RT\\tBEGIN\\t%s\\n' "$(awk '{printf "%d", $1 * 1e9}' /proc/uptime)"
sleep 0.5; echo "ERROR: something broke" >&2; exit 3`;
const sink = { event() {}, packet() {}, conntrack() {}, k8sObject() {}, nftSnapshot() {}, probeRequest() {}, dropped() {} } satisfies Sink;
const alive = (pid: number) => { try { process.kill(pid, 0); return true; } catch { return false; } };
const until = async (f: () => boolean, ms = 3000) => { for (let t = 0; t < ms && !f(); t += 20) await new Promise((r) => setTimeout(r, 20)); return f(); };

describe('ebpf source failure paths', () => {
  it('bpftrace missing: unavailable, named', async () => {
    const pf = await withBin<Source>(join(dir, 'nope', 'bpftrace')).preflight(context().ctx);
    expect(pf.ok).toBe(false);
    expect(pf.detail).toMatch(/nope\/bpftrace not found \(spawnSync .* ENOENT\)/);
  });

  it('a bpftrace whose --version fails: unavailable, and the bpftrace the preflight launched is gone', async () => {
    const bin = fake('broken', 'echo "cannot load libLLVM" >&2; exit 127', 'exec sleep 30');
    const pf = await withBin<Source>(bin).preflight(context().ctx);
    expect(pf.ok).toBe(false);
    expect(pf.detail).toBe(`${bin} not found (cannot load libLLVM)`);
    // it was launched (its pid file), and abandoned with the preflight
    expect(await until(() => pids(bin).length === 1)).toBe(true);
    expect(await until(() => !alive(pids(bin)[0]!))).toBe(true);
  });

  it('a program that does not compile: start() fails with bpftrace\'s error', async () => {
    const bin = fake('nocompile', 'echo "bpftrace v0.17.0"; exit 0', `sleep 0.2; echo "rolltrace.bt:3:5-10: ERROR: Unknown identifier: 'args->nope'" >&2; exit 1`);
    const src = withBin<Source>(bin);
    const { ctx } = context();
    expect(await src.preflight(ctx)).toMatchObject({ ok: true, versions: { bpftrace: 'bpftrace v0.17.0' } });
    await expect(src.start(sink, ctx)).rejects.toThrow(/^bpftrace exited \(1\): rolltrace\.bt:3:5-10: ERROR: Unknown identifier: 'args->nope'$/);
    await src.stop();
  });

  it('a bpftrace that refuses reading fields by offset (newer versions refuse `(uint64)args`): the args-> program, compiled by the real bpftrace', async () => {
    const bin = fake('newer', 'bpftrace --version; exit 0', `if grep -q '(uint64)args;' "$3"; then echo "$3:16:8-16: ERROR: Cannot cast from struct type \"struct _tracepoint_signal_signal_generate\"" >&2; exit 1; fi
exec bpftrace "$@"`);
    const src = withBin<Source>(bin);
    const { ctx, failed, logs } = context();
    expect((await src.preflight(ctx)).ok).toBe(true);
    await src.start(sink, ctx);
    expect(logs.some((l) => /refuses reading tracepoint fields by offset; starting the program with args-> instead/.test(l))).toBe(true);
    expect(pids(bin)).toHaveLength(2);
    const second = pids(bin)[1]!;
    expect(alive(second)).toBe(true);
    expect(readFileSync(`/proc/${second}/cmdline`, 'utf8')).toMatch(/^bpftrace\0-B\0line\0/);
    await new Promise((r) => setTimeout(r, 300));
    expect(failed).toEqual([]);
    await src.stop();
    expect(await until(() => !alive(second))).toBe(true);
  }, 30_000);

  it('bpftrace dying while recording: the source reports it failed, with bpftrace\'s last words', async () => {
    const bin = fake('dies', 'echo "bpftrace v0.17.0"; exit 0', DIES);
    const src = withBin<Source>(bin);
    const { ctx, failed } = context();
    expect((await src.preflight(ctx)).ok).toBe(true);
    await src.start(sink, ctx);
    expect(failed).toEqual([]);
    expect(await until(() => failed.length > 0)).toBe(true);
    expect(failed[0]).toMatch(/^bpftrace exited \(3\): ERROR: something broke at \d{4}-/);
    await src.stop();
  });

  it('`record` launches bpftrace before the recorder loads: the preflight takes that one over, none is launched twice', async () => {
    const bin = fake('early', 'echo "bpftrace v0.17.0"; exit 0', DIES);
    withBin(bin, () => launchEarly(['node', 'rolltrace.mjs', 'record', '--out', 'x.rtb']));
    expect(await until(() => pids(bin).length === 1)).toBe(true);
    const src = withBin<Source>(bin);
    const { ctx, failed } = context();
    expect((await src.preflight(ctx)).ok).toBe(true);
    await src.start(sink, ctx);
    expect(await until(() => failed.length > 0)).toBe(true);
    expect(failed[0]).toMatch(/^bpftrace exited \(3\): ERROR: something broke/);
    await src.stop();
    expect(pids(bin)).toHaveLength(1);
    discardEarly(); // taken: nothing left to discard
  });

  it('an early bpftrace never taken (a usage error) is discarded; other commands and --no-ebpf launch none', async () => {
    const bin = fake('untaken', 'echo "bpftrace v0.17.0"; exit 0', 'exec sleep 30');
    for (const args of [['analyze', 'x.rtb'], ['record', '--out', 'x.rtb', '--no-ebpf'], ['record', '--help']]) {
      withBin(bin, () => launchEarly(['node', 'rolltrace.mjs', ...args]));
    }
    withBin(bin, () => launchEarly(['node', 'rolltrace.mjs', 'record', '--bogus']));
    expect(await until(() => pids(bin).length > 0)).toBe(true);
    discardEarly();
    expect(await until(() => !alive(pids(bin)[0]!))).toBe(true);
    expect(pids(bin)).toHaveLength(1);
  });
});
