import { rmSync } from 'node:fs';
import { dirname } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { analyzeBundle } from '../analyzer/analyze.js';
import { BundleReader } from '../analyzer/bundle-reader.js';
import { renderText } from '../analyzer/render/text.js';
import { buildIdentity } from '../analyzer/model/identity.js';
import { SliceTracker, describeChange } from '../analyzer/model/slices.js';
import { formatTimelineLine, parseInstant, timelineItems } from '../analyzer/timeline.js';
import { TCP, type PacketRow } from '../schemas/rows.js';
import { at, flow, NEW, OLD, scenario, slice, T0, tmpBundle } from './analyzer-synth.js';

function v6(ts: number, src: string, sport: number, dst: string, dport: number, flags: number): PacketRow {
  return {
    ts_ns: ts, iface: 'cni0', linktype: 1, caplen: 74, len: 74, l3: 'ip6', src, dst, proto: 'tcp', sport, dport,
    tcp_flags: flags, seq: 1, ack: 0, payload_len: 0, icmp_type: null, icmp_code: null,
    inner_src: null, inner_dst: null, inner_proto: null, inner_sport: null, inner_dport: null, data: null,
  };
}

const dirs: string[] = [];
afterAll(() => { for (const d of dirs) rmSync(d, { recursive: true, force: true }); });

async function open(name: string) {
  const f = scenario(tmpBundle(name));
  dirs.push(dirname(f));
  return BundleReader.open(f);
}

describe('timeline', () => {
  it('merges every source in time order, interesting packets only by default', async () => {
    const r = await open('tl-order');
    try {
      const items = [...timelineItems(r, {})];
      for (let i = 1; i < items.length; i++) expect(items[i]!.ts_ns).toBeGreaterThanOrEqual(items[i - 1]!.ts_ns);
      const sources = new Set(items.map((i) => i.source));
      expect([...sources].sort()).toEqual(['conntrack', 'ebpf', 'kube', 'nftables', 'packets', 'probe', 'strace']);
      // ACK/PSH data segments are left out unless asked for
      expect(items.some((i) => i.source === 'packets' && i.kind === 'packet')).toBe(false);
      const all = [...timelineItems(r, { sources: ['packets'], allPackets: true })];
      expect(all.length).toBe(r.count('packets'));
      expect(items.find((i) => i.kind === 'slice-modified' && String(i.fields.changes).includes('~10.42.0.97(terminating)'))?.ts_ns).toBe(at(2.02));
    } finally { r.close(); }
  });

  it('filters by time range and by pod (name → its IP and PIDs)', async () => {
    const r = await open('tl-pod');
    try {
      const win = [...timelineItems(r, { since: at(2.0), until: at(2.05) })];
      expect(win.every((i) => i.ts_ns >= at(2.0) && i.ts_ns <= at(2.05))).toBe(true);
      expect(win.map((i) => i.kind)).toContain('listener-closed');
      const id = buildIdentity(r, at(10));
      const p = id.find(OLD.name)[0]!;
      const terms = [...p.ips, p.name, ...[...p.pids].map((x) => `"pid":${x}`)];
      const mine = [...timelineItems(r, { pod: OLD.name, podTerms: terms })];
      expect(mine.some((i) => i.kind === 'signal')).toBe(true);
      expect(mine.some((i) => i.kind === 'endpoint-rule-removed')).toBe(true);
      expect(mine.some((i) => JSON.stringify(i.fields).includes(NEW.ip))).toBe(false);
    } finally { r.close(); }
  });

  it('formats like the seed timeline and neutralizes control characters', () => {
    const line = formatTimelineLine({ ts_ns: T0 + 12_825_000_000, source: 'nftables', kind: 'endpoint-removed', subject: null, fields: { pod: '10.42.0.102', note: 'a\u001b[2Jb c' } }, T0);
    expect(line).toBe(' +12.825s  [nftables]     endpoint-removed  pod=10.42.0.102 note="a?[2Jb c"');
  });

  it('parses --since/--until as seconds from start or ISO', () => {
    expect(parseInstant('+12.5', T0)).toBe(T0 + 12.5e9);
    expect(parseInstant('3', T0)).toBe(T0 + 3e9);
    expect(parseInstant('2026-04-12T13:20:02.731000Z', T0)).toBe(at(2.731));
    expect(parseInstant('2026-04-12T13:20:02.000123456Z', T0)).toBe(at(2) + 123456);
    expect(Number.isNaN(parseInstant('soon', T0))).toBe(true);
  });

  it('slice tracker reports ready → terminating → removed as received', () => {
    const t = new SliceTracker();
    expect(t.push(1, 'ADDED', 'default', 'web', slice([{ p: OLD, ready: true }])).map(describeChange)).toEqual(['+10.42.0.97(ready)']);
    expect(t.push(2, 'MODIFIED', 'default', 'web', slice([{ p: OLD, ready: false, terminating: true }])).map(describeChange)).toEqual(['~10.42.0.97(terminating)']);
    expect(t.push(3, 'MODIFIED', 'default', 'web', slice([])).map(describeChange)).toEqual(['-10.42.0.97(terminating)']);
    expect(t.push(4, 'MODIFIED', 'default', 'web', 'garbage')).toEqual([]);
    expect(t.bad).toBe(1);
  });

  it('text report: the timeline around failures keeps exact failed-client endpoints, IPv6 bracketed', async () => {
    const f = scenario(tmpBundle('tl-clients'), {
      extra: (w) => {
        // a failed client on port 4002: a prefix of the ok clients 40020..40029 around it
        flow(w, 2.25, 4002, OLD.ip, 'refused');
        w.packet(v6(at(2.3), 'fd00::5', 41000, 'fd00::99', 8080, TCP.SYN));
        w.packet(v6(at(2.3001), 'fd00::99', 8080, 'fd00::5', 41000, TCP.RST | TCP.ACK));
      },
    });
    dirs.push(dirname(f));
    const r = await BundleReader.open(f);
    try {
      const items = [...timelineItems(r, { sources: ['packets'] })];
      expect(items.find((i) => i.kind === 'syn' && String(i.fields.flow).includes('fd00::5'))?.fields.flow).toBe('[fd00::5]:41000>[fd00::99]:8080');
      const a = await analyzeBundle(r);
      expect(a.failures.map((x) => x.client)).toEqual(expect.arrayContaining(['10.0.0.5:4002', '[fd00::5]:41000']));
      const text = renderText(a, f);
      const tl = text.slice(text.indexOf('TIMELINE AROUND FAILURES'));
      expect(tl).toMatch(/\[packets\]\s+syn\s+flow=10\.0\.0\.5:4002>10\.42\.0\.97:8080/);
      expect(tl).toMatch(/\[packets\]\s+syn\s+flow=\[fd00::5\]:41000>\[fd00::99\]:8080/);
      // the ok client 10.0.0.5:40023 (+2.2 s) contains "10.0.0.5:4002" but is not a failed client
      const rows = tl.split('\n').filter((l) => /\[(packets|conntrack)\]/.test(l) && !/\s(rst|icmp)\s/.test(l));
      expect(rows.some((l) => l.includes('10.0.0.5:40023'))).toBe(false);
      expect(rows.length).toBeGreaterThan(0);
    } finally { r.close(); }
  });
});
