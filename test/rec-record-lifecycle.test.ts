import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { verifyBundle } from '../analyzer/commands/verify.js';
import { effectiveCaps, formatPlan, planSources, privilegeProblem, type RecordSourceName, type SourceLoader } from '../recorder/preflight.js';
import { normalizeRecordOptions, runRecord } from '../recorder/record.js';
import { formatStatus } from '../recorder/status.js';
import type { Sink } from '../recorder/bundle-writer.js';
import type { RecordContext, RecordOptions, Source } from '../recorder/source.js';
import { ev } from '../schemas/events.js';

let dir: string;
beforeAll(() => { dir = mkdtempSync(join(tmpdir(), 'rec-record-lc-')); });
afterAll(() => { rmSync(dir, { recursive: true, force: true }); });

type Behaviour = 'ok' | 'preflight-no' | 'preflight-throws' | 'start-throws' | 'fails-running' | 'stop-hangs' | 'requests-stop';

function fake(name: string, b: Behaviour): Source {
  let timer: NodeJS.Timeout | null = null;
  let n = 0;
  return {
    name,
    async preflight() {
      if (b === 'preflight-throws') throw new Error('boom in preflight');
      return b === 'preflight-no'
        ? { ok: false, clock: 'kernel', detail: 'tool not found' }
        : { ok: true, clock: 'kernel', detail: `fake ${name}`, versions: { [`${name}-tool`]: '1.0' }, meta: { [`clock_offset_${name}_ns`]: '42' } };
    },
    async start(sink: Sink, ctx: RecordContext) {
      if (b === 'start-throws') throw new Error('cannot open device');
      timer = setInterval(() => { sink.event(ev('marker', Date.now() * 1e6, name as never, null, { text: `tick ${n++}` })); }, 20);
      if (b === 'fails-running') setTimeout(() => (ctx as RecordContext & { sourceFailed(n: string, r: string): void }).sourceFailed(name, 'child exited with 1'), 50);
      if (b === 'requests-stop') setTimeout(() => ctx.requestStop('rollout complete'), 150);
    },
    async stop() {
      if (timer) clearInterval(timer);
      if (b === 'stop-hangs') await new Promise(() => undefined);
    },
    stats() { return { events: n, dropped: 0 }; },
  };
}

function loader(spec: Partial<Record<RecordSourceName, Behaviour | 'missing' | 'import-throws'>>): SourceLoader {
  return async (name) => {
    const b = spec[name];
    if (!b || b === 'missing') throw Object.assign(new Error(`Cannot find module '/x/recorder/sources/${name}/index.js'`), { code: 'ERR_MODULE_NOT_FOUND' });
    if (b === 'import-throws') throw new SyntaxError('Unexpected token');
    return { create: () => fake(name, b) };
  };
}

const base = (out: string, extra: Record<string, unknown> = {}) => ({
  out, namespace: 'default', iface: [], snaplen: 128, rate: 10, concurrency: 1, settle: 0, pid: [], packets: true, strace: true,
  ebpf: true, nft: true, conntrack: true, kube: true, ...extra,
});

function sourcesOf(out: string) {
  const db = new Database(out, { readonly: true });
  try {
    return Object.fromEntries((db.prepare('select * from sources').all() as Array<{ name: string; status: string; detail: string; events: number }>).map((r) => [r.name, r]));
  } finally { db.close(); }
}

describe('record: the strace mode (issue 14)', () => {
  const metaOf = (out: string) => {
    const db = new Database(out, { readonly: true });
    try { return Object.fromEntries((db.prepare('select key, value from meta').all() as Array<{ key: string; value: string }>).map((m) => [m.key, m.value])); } finally { db.close(); }
  };
  for (const how of ['fails-running', 'start-throws'] as const) it(`lazy by default; when ebpf ${how === 'fails-running' ? 'dies while recording' : 'fails to start (bpftrace cannot compile)'}, strace is told and the bundle says strace went to all`, async () => {
    const out = join(dir, `ebpf-${how}.rtb`);
    const told: string[] = [];
    let modeAtStart: string | undefined;
    const spy: SourceLoader = async (name) => {
      if (name === 'strace') {
        return { create: () => ({ ...fake('strace', 'ok'), async start(_s: Sink, ctx: RecordContext) { modeAtStart = ctx.straceMode?.mode; ctx.onSourceFailed?.((n) => told.push(`${n} -> ${ctx.straceMode?.mode}`)); } }) };
      }
      return loader({ ebpf: how })(name);
    };
    const code = await runRecord(base(out, { duration: 0.5, packets: false, nft: false, conntrack: false, kube: false }), { statusMode: 'quiet', loader: spy });
    expect(code).toBe(0);
    expect(modeAtStart).toBe('lazy');
    expect(told).toEqual(['ebpf -> all']);
    const sm = JSON.parse(metaOf(out).strace_mode!);
    expect(sm).toMatchObject({ requested: 'lazy', mode: 'all' });
    const why = how === 'fails-running' ? 'child exited with 1' : 'failed to start: cannot open device';
    expect(sm.reason).toMatch(new RegExp(`^ebpf ${why} at \\S+: strace attached to every process from then on$`));
    const s = sourcesOf(out);
    expect(s.strace!.detail).toMatch(new RegExp(`^mode lazy: .*; ebpf ${why} at`));
  });
  it('--strace all and --no-strace are recorded as such', async () => {
    for (const [strace, want] of [['all', { requested: 'all', mode: 'all', reason: null }], [false, { requested: 'off', mode: 'off', reason: '--no-strace' }]] as const) {
      const out = join(dir, `mode-${String(strace)}.rtb`);
      await runRecord(base(out, { strace, duration: 0.2, packets: false, nft: false, conntrack: false, kube: false }), { statusMode: 'quiet', loader: loader({ strace: 'ok', ebpf: 'ok' }) });
      expect(JSON.parse(metaOf(out).strace_mode!)).toEqual(want);
    }
  });
});

describe('record: sources that cannot run, fail, or hang never stop the others', () => {
  it('marks missing/broken modules unavailable, failures failed, and keeps recording the rest', async () => {
    const out = join(dir, 'mixed.rtb');
    const code = await runRecord(base(out, { duration: 0.6, kube: false, probe: 'http://127.0.0.1:9/' }), {
      statusMode: 'quiet',
      loader: loader({ packets: 'ok', strace: 'start-throws', ebpf: 'import-throws', nftables: 'preflight-no', conntrack: 'fails-running', probe: 'preflight-throws' }),
    });
    expect(code).toBe(0);
    const s = sourcesOf(out);
    expect(s.packets).toMatchObject({ status: 'ok' });
    expect(s.packets!.events).toBeGreaterThan(3);
    expect(s.strace).toMatchObject({ status: 'failed', detail: 'failed to start: cannot open device' });
    expect(s.ebpf!.status).toBe('unavailable');
    expect(s.ebpf!.detail).toMatch(/cannot load: Unexpected token/);
    expect(s.nftables).toMatchObject({ status: 'unavailable', detail: 'tool not found' });
    expect(s.conntrack).toMatchObject({ status: 'failed', detail: 'child exited with 1' });
    expect(s.kube).toMatchObject({ status: 'disabled', detail: '--no-kube' });
    expect(s.probe!.status).toBe('unavailable');
    expect(s.probe!.detail).toMatch(/preflight failed: boom in preflight/);
    expect(s.rollout).toMatchObject({ status: 'disabled' });
    const v = await verifyBundle(out);
    expect(v.valid && v.closedCleanly).toBe(true);
    const db = new Database(out, { readonly: true });
    const meta = Object.fromEntries((db.prepare('select key, value from meta').all() as Array<{ key: string; value: string }>).map((m) => [m.key, m.value]));
    db.close();
    expect(JSON.parse(meta.tool_versions!)).toMatchObject({ 'packets-tool': '1.0' });
    expect(JSON.parse(meta.clock_offsets!)).toMatchObject({ clock_offset_packets_ns: 42 });
    expect(meta.clock_offset_packets_ns).toBe('42');
  });

  it('stops when a source requests it (rollout completion)', async () => {
    const out = join(dir, 'requested.rtb');
    const code = await runRecord(base(out, { packets: false, strace: false, ebpf: false, nft: false, conntrack: false, deployment: 'web', untilRolloutComplete: true }), {
      statusMode: 'quiet', loader: loader({ kube: 'ok', rollout: 'requests-stop' }),
    });
    expect(code).toBe(0);
    expect(sourcesOf(out).rollout!.status).toBe('ok');
    expect((await verifyBundle(out)).closedCleanly).toBe(true);
  });

  it('SIGINT stops gracefully; a second SIGINT while a source hangs in stop closes the bundle at once', async () => {
    const out = join(dir, 'sigint.rtb');
    let exitCode: number | null = null;
    const p = runRecord(base(out, { packets: false, strace: false, ebpf: false, nft: false, conntrack: false }), {
      statusMode: 'quiet', loader: loader({ kube: 'stop-hangs' }), exit: (c) => { exitCode = c; },
    });
    await new Promise((r) => setTimeout(r, 300));
    process.emit('SIGINT');
    await new Promise((r) => setTimeout(r, 200));
    process.emit('SIGINT');
    expect(await p).toBe(130);
    expect(exitCode).toBe(130);
    const v = await verifyBundle(out);
    expect(v.valid && v.closedCleanly).toBe(true);
    expect(sourcesOf(out).kube).toMatchObject({ status: 'stopped-early' });
    expect(process.listenerCount('SIGINT')).toBe(0);
  });
});

describe('record: usage errors and planning', () => {
  it('rejects bad combinations with one-line InputErrors', () => {
    const o = join(dir, 'never.rtb');
    expect(() => normalizeRecordOptions(base(o, { restart: true }))).toThrow('--restart needs --deployment NAME');
    expect(() => normalizeRecordOptions(base(o, { untilRolloutComplete: true }))).toThrow('--until-rollout-complete needs --deployment NAME');
    expect(() => normalizeRecordOptions(base(o, { selector: 'a=b', deployment: 'web' }))).toThrow(/exclusive/);
    expect(() => normalizeRecordOptions(base(o, { selector: 'a=(' }))).toThrow(/label selector/);
    expect(() => normalizeRecordOptions(base(o, { pid: ['12x'] }))).toThrow(/not a process id/);
    expect(() => normalizeRecordOptions(base(dir))).toThrow(/already exists/);
    expect(normalizeRecordOptions(base(o, { nft: false })).nft).toBe(false);
  });

  it('names what it needs when not root, unless only kube/probe remain', () => {
    const msg = privilegeProblem(['packets', 'kube', 'probe'], 1000, new Set());
    expect(msg).toMatch(/^record needs root \(or CAP_NET_ADMIN/);
    expect(msg).toContain('--no-packets');
    expect(msg).not.toContain('\n');
    expect(privilegeProblem(['kube', 'probe'], 1000, new Set())).toBeNull();
    expect(privilegeProblem(['packets'], 0, new Set())).toBeNull();
    expect(privilegeProblem(['nftables'], 1000, new Set(['CAP_NET_ADMIN', 'CAP_NET_RAW', 'CAP_SYS_PTRACE']))).toBeNull();
    expect([...effectiveCaps('CapEff:\t000001ffffffffff\n')].sort()).toEqual(['CAP_BPF', 'CAP_NET_ADMIN', 'CAP_NET_RAW', 'CAP_SYS_ADMIN', 'CAP_SYS_PTRACE']);
  });

  it('prints one preflight line per source', async () => {
    const opts = normalizeRecordOptions(base(join(dir, 'plan.rtb'), { strace: false, probe: 'http://x/' })) as RecordOptions;
    const ctx: RecordContext = { opts, pods: new Map(), onPodsChanged() {}, podsChanged() {}, requestStop() {}, log() {} };
    const plan = await planSources(opts, ctx, loader({ packets: 'ok', kube: 'ok', probe: 'preflight-no' }));
    const lines = formatPlan(plan);
    expect(lines).toHaveLength(8);
    expect(lines[0]).toMatch(/^ {2}packets +record +fake packets$/);
    expect(lines[1]).toMatch(/^ {2}strace +off +--no-strace$/);
    expect(lines[2]).toMatch(/^ {2}ebpf +CANNOT +not built into this rolltrace/);
    expect(lines[6]).toMatch(/^ {2}probe +CANNOT +tool not found$/);
  });

  it('formats the status line', () => {
    expect(formatStatus({ elapsedS: 12.4, sources: [
      { name: 'packets', events: 1200, dropped: 3 }, { name: 'kube', events: 40, dropped: 0 },
      { name: 'probe', events: 121, dropped: 0, extra: 'ok 120 / failed 1' }, { name: 'strace', events: 1, dropped: 0, status: 'failed' },
    ] })).toBe('rolltrace 12s | packets 1200 (kernel drops 3) | kube 40 | probe ok 120 / failed 1 | strace FAILED');
  });
});
