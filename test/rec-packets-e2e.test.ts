// The packets source on a bridge (like a CNI bridge) joining two namespaces this test creates:
// a refused SYN must be recorded with its RST; stats parsing and --max-size capping.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { Sink } from '../recorder/bundle-writer.js';
import type { RecordContext, RecordOptions } from '../recorder/source.js';
import type { PacketRow } from '../schemas/rows.js';
import { TCP } from '../schemas/rows.js';
import type { RtEvent } from '../schemas/events.js';
import { create, defaultIfaces, retireCap, tcpdumpArgs } from '../recorder/sources/packets/index.js';
import { createRequire } from 'node:module';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { linktypeFromName, parseTcpdumpStats } from '../recorder/sources/packets/stats.js';
import { loadAddon } from '../recorder/sources/packets/native.js';
import { chunkFrames, type ChunkSink, type IndexRow, type PacketChunkRow } from '../schemas/decode/chunks.js';
import { decodeFrame } from '../recorder/decode/packet.js';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawn } from 'node:child_process';

const R = randomBytes(2).toString('hex');
const BR = `rtpk${R}br`, A = `rt-pk-${R}-a`, B = `rt-pk-${R}-b`;
const sh = (...a: string[]) => execFileSync(a[0]!, a.slice(1), { stdio: 'pipe' }).toString();

function memSink(): Sink & { events: RtEvent[]; packets: PacketRow[]; drops: number } {
  const s = {
    events: [] as RtEvent[], packets: [] as PacketRow[], drops: 0,
    event: (e: RtEvent) => { s.events.push(e); }, packet: (p: PacketRow) => { s.packets.push(p); }, conntrack: () => {},
    k8sObject: () => {}, nftSnapshot: () => {}, probeRequest: () => {}, dropped: (_: string, n: number) => { s.drops += n; },
  };
  return s;
}
const ctx = (opts: RecordOptions): RecordContext => ({
  opts, pods: new Map(), onPodsChanged: () => {}, podsChanged: () => {}, requestStop: () => {}, log: () => {},
});
const opts = (over: Partial<RecordOptions>): RecordOptions => ({
  out: '/dev/null', namespace: 'default', iface: [BR], snaplen: 128, rate: 10, concurrency: 1, settle: 0, packets: true,
  strace: false, ebpf: false, nft: false, conntrack: false, kube: false, pid: [], ...over,
});

beforeAll(() => {
  sh('ip', 'link', 'add', BR, 'type', 'bridge');
  sh('ip', 'link', 'set', BR, 'up');
  for (const [ns, ip, v] of [[A, '10.79.0.1', 'a'], [B, '10.79.0.2', 'b']] as const) {
    sh('ip', 'netns', 'add', ns);
    sh('ip', 'link', 'add', `rtpk${R}${v}`, 'type', 'veth', 'peer', 'name', `rtpk${R}${v}p`);
    sh('ip', 'link', 'set', `rtpk${R}${v}p`, 'master', BR, 'up');
    sh('ip', 'link', 'set', `rtpk${R}${v}`, 'netns', ns);
    sh('ip', '-n', ns, 'addr', 'add', `${ip}/24`, 'dev', `rtpk${R}${v}`);
    sh('ip', '-n', ns, 'link', 'set', `rtpk${R}${v}`, 'up');
    sh('ip', '-n', ns, 'link', 'set', 'lo', 'up');
  }
});
afterAll(() => {
  for (const ns of [A, B]) try { sh('ip', 'netns', 'del', ns); } catch { /* gone */ }
  for (const l of [`rtpk${R}ap`, `rtpk${R}bp`, BR]) try { sh('ip', 'link', 'del', l); } catch { /* gone */ }
});

/** a sink that takes chunks, as the bundle writer does (the addon hands over whole chunks) */
function chunkMemSink(): ReturnType<typeof memSink> & { chunks: PacketChunkRow[]; released: number } {
  const s = Object.assign(memSink(), { chunks: [] as PacketChunkRow[], released: 0 });
  let id = 0;
  return Object.assign(s, {
    chunkSink: (): ChunkSink => ({
      deferIndex: true,
      nextChunkId: () => ++id,
      // a copy, as SQLite takes one; then the buffer goes back to the capture
      chunk: (c: PacketChunkRow) => { s.chunks.push({ ...c, data: Buffer.from(c.data) }); c.release?.(); s.released++; },
      index: (_: IndexRow) => {},
    }),
  });
}
/** every frame of the chunks, decoded */
function framesOf(chunks: PacketChunkRow[]): Array<PacketRow & { raw: Buffer }> {
  const out: Array<PacketRow & { raw: Buffer }> = [];
  for (const c of chunks) for (const f of chunkFrames(c.data)) {
    out.push({ ts_ns: f.ts_ns, iface: c.iface, ...decodeFrame(c.linktype, f.data, f.caplen, f.len), data: f.data, raw: Buffer.from(f.data) } as PacketRow & { raw: Buffer });
  }
  return out;
}

const refuse = (port: number) => spawnSync('ip', ['netns', 'exec', A, 'bash', '-c', `exec 3<>/dev/tcp/10.79.0.2/${port}`], { stdio: 'ignore' });

describe('packets source (tcpdump backend)', () => {
  beforeAll(() => { process.env.ROLLTRACE_PACKETS_BACKEND = 'tcpdump'; });
  afterAll(() => { delete process.env.ROLLTRACE_PACKETS_BACKEND; });
  it('records a refused SYN and its RST with the right ports, kernel-stamped', async () => {
    const o = opts({ filter: 'tcp' });
    const src = create(o);
    const pf = await src.preflight(ctx(o));
    expect(pf.ok, pf.detail).toBe(true);
    expect(pf.clock).toBe('kernel');
    const sink = memSink();
    const t0 = Date.now() * 1e6;
    await src.start(sink, ctx(o));
    refuse(9);
    await new Promise((r) => setTimeout(r, 300));
    await src.stop();
    const t1 = Date.now() * 1e6;
    const syn = sink.packets.find((p) => p.tcp_flags === TCP.SYN && p.dport === 9)!;
    expect(syn).toBeDefined();
    const rst = sink.packets.find((p) => p.tcp_flags !== null && (p.tcp_flags & TCP.RST) !== 0)!;
    expect(rst).toMatchObject({ iface: BR, linktype: 1, l3: 'ip4', proto: 'tcp', src: '10.79.0.2', sport: 9, dst: '10.79.0.1', dport: syn.sport, ack: syn.seq! + 1 });
    expect(rst.ts_ns).toBeGreaterThanOrEqual(syn.ts_ns);
    expect(syn.ts_ns).toBeGreaterThan(t0);
    expect(rst.ts_ns).toBeLessThan(t1);
    expect(rst.data!.length).toBe(rst.caplen);
    expect(sink.packets.every((p) => p.proto === 'tcp')).toBe(true); // the BPF filter applied
    expect(src.stats().events).toBe(sink.packets.length);
    expect(sink.drops).toBe(0);
  });

  it('--max-size stops the capture and records capture-capped', async () => {
    const o = opts({ maxSize: 0.0003 }); // ~315 bytes: a few frames
    const src = create(o);
    expect((await src.preflight(ctx(o))).ok).toBe(true);
    const sink = memSink();
    await src.start(sink, ctx(o));
    for (let i = 0; i < 6; i++) refuse(9);
    await new Promise((r) => setTimeout(r, 300));
    await src.stop();
    const capped = sink.events.filter((e) => e.kind === 'capture-capped');
    expect(capped).toHaveLength(1);
    expect(capped[0]!.attrs).toMatchObject({ packets: sink.packets.length });
    const bytes = sink.packets.reduce((a, p) => a + p.data!.length, 0);
    expect(bytes).toBeGreaterThanOrEqual(0.0003 * 1024 * 1024);
    expect(sink.packets.length).toBeLessThan(24); // 6 refusals = 12+ frames with ARP; stopped early
    expect(src.stats().extra).toMatch(/capped/);
  });

  it('preflight rejects an unknown interface', async () => {
    const o = opts({ iface: [`nope${R}`] });
    const pf = await create(o).preflight(ctx(o));
    expect(pf.ok).toBe(false);
    expect(pf.detail).toMatch(/no such interface/);
  });
});

describe('packets source (capture addon)', () => {
  beforeAll(() => { process.env.ROLLTRACE_PACKETS_BACKEND = 'native'; });
  afterAll(() => { delete process.env.ROLLTRACE_PACKETS_BACKEND; });

  it('the setup step built the addon', () => {
    expect(loadAddon(), 'native/capture/build/Release/rolltrace_capture.node (scripts/setup.mjs builds it)').not.toBeNull();
    expect(loadAddon()!.version()).toMatch(/libpcap version \d/);
  });

  it('keeps the very frames tcpdump -w keeps, with the same kernel timestamps, in chunks', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'rt-pk-native-'));
    const o = opts({ filter: 'tcp' });
    const src = create(o);
    const pf = await src.preflight(ctx(o));
    expect(pf.ok, pf.detail).toBe(true);
    expect(pf.clock).toBe('kernel');
    expect(pf.detail).toMatch(/^libpcap in the recorder/);
    expect(pf.versions?.libpcap).toMatch(/libpcap/);
    // tcpdump on the same bridge with the same filter, started first: the reference
    const td = spawn('tcpdump', ['-w', join(dir, 'ref.pcap'), '-n', '-s', '128', '-i', BR, '--time-stamp-precision', 'nano', 'tcp'], { stdio: ['ignore', 'ignore', 'pipe'] });
    try {
      await new Promise<void>((res) => td.stderr!.on('data', (d) => { if (/listening on/.test(String(d))) res(); }));
      const sink = chunkMemSink();
      const t0 = Date.now() * 1e6;
      await src.start(sink, ctx(o));
      for (const port of [9, 10, 11]) refuse(port);
      await new Promise((r) => setTimeout(r, 300));
      await src.stop();
      const t1 = Date.now() * 1e6;
      // tcpdump's ring hands a block over when full or after its 1 s timeout: SIGINT before that loses it
      await new Promise((r) => setTimeout(r, 1300));
      td.kill('SIGINT');
      await new Promise((r) => td.on('close', r));
      expect(sink.packets).toEqual([]); // whole chunks only, no frame by frame
      expect(sink.chunks.length).toBeGreaterThan(0);
      expect(sink.released).toBe(sink.chunks.length);
      const got = framesOf(sink.chunks);
      for (const c of sink.chunks) {
        expect(c).toMatchObject({ iface: BR, linktype: 1 });
        const fr = framesOf([c]);
        expect(c.packets).toBe(fr.length);
        expect(c.first_ts_ns).toBe(fr[0]!.ts_ns);
        expect(c.last_ts_ns).toBe(fr[fr.length - 1]!.ts_ns);
      }
      // 3 refusals: SYN and RST each (the filter keeps ARP out)
      expect(got.filter((p) => p.tcp_flags === TCP.SYN).map((p) => p.dport).sort()).toEqual([10, 11, 9]);
      expect(got.every((p) => p.proto === 'tcp')).toBe(true);
      for (const p of got) { expect(p.ts_ns).toBeGreaterThan(t0); expect(p.ts_ns).toBeLessThan(t1); }
      // tcpdump's file, read by the same decoder: the same bytes, the same kernel timestamps
      const ref = framesOf([{ id: 0, iface: BR, linktype: 1, first_ts_ns: 0, last_ts_ns: 0, packets: 0, data: readFileSync(join(dir, 'ref.pcap')) }]);
      const key = (p: PacketRow & { raw: Buffer }) => p.raw.toString("hex");
      const refBy = new Map(ref.map((p) => [key(p), p]));
      expect(got.length).toBeGreaterThanOrEqual(6);
      for (const p of got) {
        const r = refBy.get(key(p));
        expect(r, `frame ${p.src}:${p.sport} > ${p.dst}:${p.dport} flags ${p.tcp_flags} not in tcpdump's capture`).toBeDefined();
        expect(Math.abs(r!.ts_ns - p.ts_ns)).toBeLessThan(1e6);
        expect(r!.caplen).toBe(p.caplen);
      }
      const st = src.stats();
      expect(st.events).toBe(got.length);
      expect(st.dropped).toBe(0);
      expect(st.extra).toMatch(/^native; kernel drops 0/);
    } finally {
      if (td.exitCode === null) td.kill('SIGKILL');
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('--max-size stops the capture and records capture-capped', async () => {
    const o = opts({ maxSize: 0.0003 });
    const src = create(o);
    expect((await src.preflight(ctx(o))).ok).toBe(true);
    const sink = chunkMemSink();
    await src.start(sink, ctx(o));
    for (let i = 0; i < 6; i++) { refuse(9); await new Promise((r) => setTimeout(r, 300)); }
    await src.stop();
    const capped = sink.events.filter((e) => e.kind === 'capture-capped');
    expect(capped).toHaveLength(1);
    const frames = framesOf(sink.chunks).length;
    expect(capped[0]!.attrs).toMatchObject({ packets: frames });
    // a chunk at a time (the addon hands over ≤ 250 ms of frames): stopped after the one that crossed the cap
    expect(frames).toBeLessThan(24);
    expect(src.stats().extra).toMatch(/capped/);
  });

  it('a capture whose interface disappears marks the source failed, with what it kept', async () => {
    const v = `rtpk${R}x`;
    sh('ip', 'link', 'add', v, 'type', 'veth', 'peer', 'name', `${v}p`);
    sh('ip', 'link', 'set', v, 'up'); sh('ip', 'link', 'set', `${v}p`, 'up');
    const failed: string[] = [];
    try {
      const o = opts({ iface: [v] });
      const src = create(o);
      expect((await src.preflight(ctx(o))).ok).toBe(true);
      const sink = chunkMemSink();
      const c = { ...ctx(o), sourceFailed: (_: string, why: string) => { failed.push(why); } };
      await src.start(sink, c);
      await new Promise((r) => setTimeout(r, 300));
      sh('ip', 'link', 'del', v);
      for (let i = 0; i < 30 && failed.length === 0; i++) await new Promise((r) => setTimeout(r, 100));
      await src.stop();
      expect(failed).toHaveLength(1);
      expect(failed[0]).toMatch(new RegExp(`^capture on ${v} failed: .+ at \\d{4}-`));
    } finally {
      try { sh('ip', 'link', 'del', v); } catch { /* gone */ }
    }
  });

  it('open errors are libpcap\'s own, one line', () => {
    const a = loadAddon()!;
    expect(() => a.open(`nope${R}`, 128, 1 << 20, null, 1 << 20, 4 << 20)).toThrow(/nope.*(No such device|doesn't exist)/);
    expect(() => a.open(BR, 128, 1 << 20, 'tcp port', 1 << 20, 4 << 20)).toThrow(/^filter "tcp port": /);
    expect(() => a.open(BR, 128, 1 << 20, null, 100, 4 << 20)).toThrow(/bad snaplen, block or queue size/);
  });
});

describe('packets source (cap backend, forced)', () => {
  it('records the refused SYN and RST, stamped on receipt', async () => {
    process.env.ROLLTRACE_PACKETS_BACKEND = 'cap';
    try {
      const o = opts({ filter: 'tcp port 9' });
      const src = create(o);
      const pf = await src.preflight(ctx(o));
      expect(pf.ok, pf.detail).toBe(true);
      expect(pf.clock).toBe('receipt');
      const sink = memSink();
      const t0 = Date.now() * 1e6;
      await src.start(sink, ctx(o));
      await new Promise((r) => setTimeout(r, 200));
      refuse(9);
      await new Promise((r) => setTimeout(r, 300));
      await src.stop();
      const t1 = Date.now() * 1e6;
      const syn = sink.packets.find((p) => p.tcp_flags === TCP.SYN && p.dport === 9)!;
      const rst = sink.packets.find((p) => p.tcp_flags !== null && (p.tcp_flags & TCP.RST) !== 0)!;
      expect(rst).toMatchObject({ src: '10.79.0.2', sport: 9, dport: syn.sport, caplen: 54 });
      expect(syn.ts_ns).toBeGreaterThan(t0);
      expect(rst.ts_ns).toBeLessThan(t1);
      expect(src.stats().extra).toMatch(/^cap; kernel drops unknown/);
    } finally {
      delete process.env.ROLLTRACE_PACKETS_BACKEND;
    }
  });
});

describe('cap handles outlive their close()', () => {
  // cap 0.2.1 frees a uv_poll_t still linked in libuv's handle queue when a closed Cap is collected,
  // which aborted the process later ("double free or corruption"); retired handles must stay reachable
  it('a retired Cap survives garbage collection; a merely closed one would not', async () => {
    setFlagsFromString('--expose-gc');
    const gc = runInNewContext('gc') as () => void;
    const { Cap } = createRequire(import.meta.url)('cap') as { Cap: new () => Parameters<typeof retireCap>[0] };
    const open = () => { const c = new Cap(); c.open(BR, 'tcp port 1', 65536, Buffer.alloc(65535)); c.on('packet', () => {}); return c; };
    let retired: WeakRef<object>, control: WeakRef<object>;
    (() => {
      const a = open(); retireCap(a); retired = new WeakRef(a);
      const b = { probe: true }; control = new WeakRef(b); // proves this collection really collects
    })();
    for (let i = 0; i < 5 && control!.deref(); i++) { await new Promise((r) => setTimeout(r, 10)); gc(); }
    expect(control!.deref()).toBeUndefined();
    expect(retired!.deref()).toBeDefined();
  });
});

describe('packets helpers', () => {
  it('parses tcpdump statistics from SIGUSR1 and exit output (captured here)', () => {
    const text = readFileSync(new URL('../fixtures/pcap/tcpdump-stats-stderr.txt', import.meta.url), 'utf8');
    expect(parseTcpdumpStats(text)).toEqual({ captured: 6, received: 16, droppedKernel: 0, droppedIface: null });
    expect(parseTcpdumpStats('tcpdump: 5 packets captured, 9 packets received by filter, 4 packets dropped by kernel\n').droppedKernel).toBe(4);
    expect(parseTcpdumpStats('garbage')).toEqual({ captured: null, received: null, droppedKernel: null, droppedIface: null });
  });
  it('arguments, interfaces, link types', () => {
    expect(tcpdumpArgs('cni0', 128, 'tcp port 80', '/d/cap.pcap')).toEqual(['-w', '/d/cap.pcap', '-C', '16', '-Z', 'root', '-n', '-s', '128', '-B', '32768', '-i', 'cni0', '--time-stamp-precision', 'nano', 'tcp port 80']);
    expect(defaultIfaces(opts({ iface: ['x', 'y'] }))).toEqual(['x', 'y']);
    expect(defaultIfaces(opts({ iface: [] })).length).toBe(1);
    expect(linktypeFromName('ETHERNET')).toBe(1);
    expect(linktypeFromName('LINKTYPE_LINUX_SLL')).toBe(113);
  });
});
