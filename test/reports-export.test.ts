import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { BundleReader } from '../analyzer/bundle-reader.js';
import { exportPcap, exportPerfetto } from '../analyzer/commands/export.js';
import { PacketAnnotator } from '../analyzer/export/pcapng.js';
import { nsFromIso, type Analysis } from '../schemas/analysis.js';
import { raceAnalysis, writeRaceBundle } from './reports-helpers.js';

let dir: string;
let bundle: string;
let t0: number;
let fails: number[];
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'reports-export-'));
  bundle = join(dir, 'race.rtb');
  ({ t0, failuresAtMs: fails } = writeRaceBundle(bundle));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function tsharkFields(file: string, fields: string[]): string[][] {
  const out = execFileSync('tshark', ['-r', file, '-T', 'fields', '-E', 'separator=\t', ...fields.flatMap((f) => ['-e', f])], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
  return out.trimEnd().split('\n').map((l) => l.split('\t'));
}

describe('export --pcap', () => {
  it('writes pcapng that tshark reads: every packet, right interfaces, comments on the failure packets', async () => {
    const out = join(dir, 'race.pcapng');
    const r = await BundleReader.open(bundle);
    let count: number;
    try {
      count = r.count('packets');
      const res = await exportPcap(r, out);
      expect(res.packets).toBe(count);
      expect(res.interfaces.map((i) => i.name).sort()).toEqual(['cni0', 'lo']);
    } finally { r.close(); }
    const rows = tsharkFields(out, ['frame.interface_name', 'frame.time_epoch', 'ip.src', 'tcp.srcport', 'tcp.dstport', 'tcp.flags.reset', 'frame.comment', 'frame.cap_len']);
    expect(rows).toHaveLength(count);
    expect(new Set(rows.map((x) => x[0]))).toEqual(new Set(['cni0', 'lo']));
    // the SYN and the RST of each failed connection carry the comment; nothing else does
    const commented = rows.filter((x) => x[6]);
    expect(commented).toHaveLength(fails.length * 2);
    for (const c of commented) {
      expect(c[6]).toMatch(/^backend pod web-abc \(10\.244\.0\.5\), failure listener-closed, listener closed \d+ ms earlier$/);
    }
    const rst = commented.find((x) => x[5] === '1' || x[5] === 'True')!;
    expect(rst).toBeDefined();
    // nanosecond timestamps survive (if_tsresol=9): the first RST is 1100.4 ms after T0
    expect(rows.some((x) => x[6] && x[1]!.startsWith(((t0 + 1_100_400_000) / 1e9).toFixed(6)))).toBe(true);
    // the per-interface linktype is Ethernet
    const info = execFileSync('capinfos', [out], { encoding: 'utf8' });
    expect(info).toMatch(/Number of interfaces in file: 2/);
    expect(info).toMatch(/Encapsulation = Ethernet \(1 - ether\)/);
    expect(info).toMatch(/Time precision = nanoseconds \(9\)/);
  });

  it('exports headers-only frames of a redacted bundle with caplen from the data length', async () => {
    const copy = join(dir, 'headers-only.rtb');
    writeRaceBundle(copy);
    const db = new Database(copy);
    db.prepare('UPDATE packets SET data = substr(data, 1, 54), caplen = 54 WHERE length(data) > 54').run();
    db.prepare('UPDATE packets SET data = NULL, caplen = 0 WHERE id = 1').run();
    db.close();
    const out = join(dir, 'headers-only.pcapng');
    const r = await BundleReader.open(copy);
    try { await exportPcap(r, out, raceAnalysis({ t0, failuresAtMs: fails })); } finally { r.close(); }
    const rows = tsharkFields(out, ['frame.cap_len', 'frame.len', 'tcp.srcport']);
    expect(rows[0]![0]).toBe('0');
    expect(Number(rows[0]![1])).toBeGreaterThan(0);
    const withPayload = rows.filter((x) => Number(x[1]) > 54);
    expect(withPayload.length).toBeGreaterThan(5);
    for (const x of withPayload) expect(x[0]).toBe('54');
  });

  it('the CLI exports and rejects a missing output option with exit 2', () => {
    const out = join(dir, 'cli.pcapng');
    const ok = spawnSync('node', ['bin/rolltrace.mjs', 'export', bundle, '--pcap', out], { encoding: 'utf8', cwd: join(import.meta.dirname, '..') });
    expect(ok.status).toBe(0);
    expect(ok.stdout).toMatch(/46 packets on 2 interface\(s\) \(cni0, lo\), 4 annotated/);
    const bad = spawnSync('node', ['bin/rolltrace.mjs', 'export', bundle], { encoding: 'utf8', cwd: join(import.meta.dirname, '..') });
    expect(bad.status).toBe(2);
    expect(bad.stderr.trim().split('\n')).toHaveLength(1);
  });
});

describe('pcapng annotations', () => {
  const at = '2026-04-12T13:20:02.100000Z';
  const t = nsFromIso(at)!;
  const analysis = (client: string) => ({
    pods: [{ namespace: 'default', name: 'web-1', ip: 'fd00::97', listenerClosedAt: '2026-04-12T13:20:02.000000Z' }],
    failures: [{ at, client, service: null, backend: { ip: 'fd00::97', port: 8080, pod: 'default/web-1' }, cause: 'listener-closed', evidence: [], via: [], error: null }],
  }) as unknown as Analysis;

  it('annotates IPv6 packets of a failed client (bracketed in the analysis, bare in packets), both directions', () => {
    const an = new PacketAnnotator(analysis('[fd00::5]:41000'));
    expect(an.failures).toBe(1);
    const out = an.comment({ ts_ns: t, src: 'fd00::5', sport: 41000, dst: 'fd00::97', dport: 8080 });
    expect(out).toBe('backend pod web-1 (fd00::97), failure listener-closed, listener closed 100 ms earlier');
    expect(an.comment({ ts_ns: t + 1e6, src: 'fd00::97', sport: 8080, dst: 'fd00::5', dport: 41000 })).toMatch(/^backend pod web-1/);
    // another port of the same client, or outside the window: no comment
    expect(an.comment({ ts_ns: t, src: 'fd00::5', sport: 4100, dst: 'fd00::97', dport: 8080 })).toBeNull();
    expect(an.comment({ ts_ns: t + 6e9, src: 'fd00::5', sport: 41000, dst: 'fd00::97', dport: 8080 })).toBeNull();
  });

  it('IPv4 clients still match, and no failures means no comment', () => {
    const an = new PacketAnnotator(analysis('10.0.0.5:40022'));
    expect(an.comment({ ts_ns: t, src: '10.0.0.5', sport: 40022, dst: '10.42.0.97', dport: 8080 })).toMatch(/failure listener-closed/);
    expect(an.comment({ ts_ns: t, src: '10.0.0.5', sport: 4002, dst: '10.42.0.97', dport: 8080 })).toBeNull();
    const none = new PacketAnnotator(null);
    expect(none.failures).toBe(0);
    expect(none.comment({ ts_ns: t, src: '10.0.0.5', sport: 40022, dst: '10.42.0.97', dport: 8080 })).toBeNull();
  });
});

describe('export --perfetto', () => {
  it('writes trace-event JSON with named tracks, instants, probe spans and the exposure window', async () => {
    const out = join(dir, 'race.json');
    const r = await BundleReader.open(bundle);
    try { await exportPerfetto(r, out); } finally { r.close(); }
    const trace = JSON.parse(readFileSync(out, 'utf8')) as { traceEvents: Array<Record<string, unknown>>; displayTimeUnit: string };
    expect(trace.displayTimeUnit).toBe('ms');
    const named = new Set<number>();
    const used = new Set<number>();
    for (const e of trace.traceEvents) {
      expect(['M', 'i', 'X']).toContain(e.ph);
      expect(Number.isInteger(e.pid)).toBe(true);
      expect(Number.isInteger(e.tid)).toBe(true);
      expect(typeof e.name).toBe('string');
      if (e.ph === 'M') {
        expect((e.args as { name?: unknown; sort_index?: unknown }).name ?? (e.args as { sort_index?: unknown }).sort_index).toBeDefined();
        if (e.name === 'process_name') named.add(e.pid as number);
        continue;
      }
      used.add(e.pid as number);
      expect(typeof e.ts).toBe('number');
      expect(e.ts as number).toBeGreaterThanOrEqual(0);
      if (e.ph === 'X') expect(e.dur as number).toBeGreaterThanOrEqual(0);
      if (e.ph === 'i') expect(e.s).toBe('t');
    }
    for (const pid of used) expect(named.has(pid)).toBe(true);
    const names = trace.traceEvents.filter((e) => e.name === 'process_name').map((e) => (e.args as { name: string }).name);
    expect(names).toContain('pod shop/web-abc (10.244.0.5)');
    for (const s of ['strace', 'kube', 'nftables', 'probe', 'packets']) expect(names).toContain(`source ${s}`);
    const exposure = trace.traceEvents.filter((e) => e.name === 'exposure window' && e.ph === 'X');
    expect(exposure).toHaveLength(1);
    expect(exposure[0]!.dur as number).toBeCloseTo(200_000, -1);
    // the bundle starts at T0 - 600 ms (the first event); listener closed at T0 + 1010 ms
    expect(exposure[0]!.ts as number).toBeCloseTo(1_610_000, -1);
    expect(trace.traceEvents.filter((e) => e.ph === 'X' && e.cat === 'probe')).toHaveLength(16);
    expect(trace.traceEvents.filter((e) => typeof e.name === 'string' && (e.name as string).startsWith('failure: listener-closed'))).toHaveLength(fails.length);
  });
});
