/**
 * End to end, as root, in throwaway network namespaces: the nftables source through the Source
 * interface records a real kube-proxy-shaped endpoint removal (nft whole-table transaction,
 * iptables-restore through iptables-nft, and legacy iptables polled).
 */
import { execFile, execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { afterAll, describe, expect, it } from 'vitest';
import type { Sink } from '../recorder/bundle-writer.js';
import type { RecordContext, RecordOptions } from '../recorder/source.js';
import { create, POLL_MS } from '../recorder/sources/nftables/index.js';
import type { EndpointRuleAttrs, RtEvent } from '../schemas/events.js';
import type { NftSnapshotRow } from '../schemas/rows.js';

const fx = (p: string) => new URL(`../fixtures/${p}`, import.meta.url).pathname;
const namespaces: string[] = [];

function newNetns(tag: string): string {
  const name = `recnft-${tag}-${randomBytes(3).toString('hex')}`;
  execFileSync('ip', ['netns', 'add', name]);
  namespaces.push(name);
  return name;
}
function inNs(ns: string, argv: string[], input?: string): void {
  execFileSync('ip', ['netns', 'exec', ns, ...argv], { input, stdio: ['pipe', 'ignore', 'pipe'] });
}

/**
 * Run a rule change asynchronously (the source reads nft monitor on this event loop, so a blocking
 * call would delay every receipt past the end of the change). The shell lingers 50 ms after the tool
 * exits so the monitor line, written during the commit, reaches us before "after" is taken.
 */
function inNsAsync(ns: string, cmd: string, inputFile?: string): Promise<void> {
  const script = `${cmd}${inputFile ? ` < '${inputFile}'` : ''} && sleep 0.05`;
  return new Promise((resolve, reject) => {
    execFile('ip', ['netns', 'exec', ns, 'sh', '-c', script], (err) => (err ? reject(err) : resolve()));
  });
}

afterAll(() => {
  for (const ns of namespaces) {
    try { execFileSync('ip', ['netns', 'del', ns]); } catch { /* already gone */ }
  }
});

class MemSink implements Sink {
  events: RtEvent[] = [];
  snapshots: NftSnapshotRow[] = [];
  drops = 0;
  event(e: RtEvent) { this.events.push(e); }
  packet() {}
  conntrack() {}
  k8sObject() {}
  nftSnapshot(s: NftSnapshotRow) { this.snapshots.push(s); }
  probeRequest() {}
  dropped(_s: string, n: number) { this.drops += n; }
}

const opts = { out: '/dev/null', namespace: 'default', iface: [], snaplen: 128, rate: 1, concurrency: 1, settle: 0 } as unknown as RecordOptions;
const logs: string[] = [];
const ctx: RecordContext = {
  opts, pods: new Map(), onPodsChanged() {}, podsChanged() {}, requestStop() {}, log: (l) => logs.push(l),
};
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const removed = (s: MemSink) => s.events.filter((e) => e.kind === 'endpoint-rule-removed');

async function record(ns: string, change: () => Promise<void>, pre?: () => void) {
  const src = create(opts, { exec: ['ip', 'netns', 'exec', ns] });
  const pf = await src.preflight(ctx);
  const sink = new MemSink();
  await src.start(sink, ctx);
  await sleep(150);
  if (pre) { pre(); await sleep(250); }
  const before = Date.now() * 1e6;
  await change();
  const after = (Date.now() + 1) * 1e6;
  await sleep(400);
  await src.stop();
  return { pf, sink, before, after, stats: src.stats() };
}

describe('nftables source, real rules in a netns', () => {
  it('nftables mode: a whole-table nft -f removing one endpoint gives one endpoint-rule-removed stamped during the nft -f', async () => {
    const ns = newNetns('n');
    inNs(ns, ['nft', '-f', fx('nft/whole-before.nft')]);
    const { pf, sink, before, after } = await record(
      ns,
      () => inNsAsync(ns, `nft -f '${fx('nft/whole-after.nft')}'`),
      () => inNs(ns, ['nft', '-f', fx('nft/whole-before.nft')]), // full re-sync, no change
    );
    expect(pf.ok).toBe(true);
    expect(pf.clock).toBe('receipt');
    expect(pf.detail).toMatch(/nftables/);
    const rm = removed(sink);
    expect(rm).toHaveLength(1);
    expect(rm[0]!.attrs as EndpointRuleAttrs).toMatchObject({ service: 'default/web:http', endpoint: '10.244.0.6:8080', mode: 'nftables', clock: 'receipt' });
    expect(rm[0]!.ts_ns).toBeGreaterThanOrEqual(before);
    expect(rm[0]!.ts_ns).toBeLessThanOrEqual(after);
    expect(sink.events.filter((e) => e.kind === 'endpoint-rule-added')).toHaveLength(0);
    // one burst for the re-sync, one for the removal; each stamped with its first line
    const bursts = sink.events.filter((e) => e.kind === 'rules-changed');
    expect(bursts).toHaveLength(2);
    expect(bursts[1]!.ts_ns).toBe(rm[0]!.ts_ns);
    expect(sink.snapshots.map((s) => s.reason)).toEqual(['start', 'burst', 'burst', 'stop']);
    expect(sink.snapshots.every((s) => s.format === 'nft-json')).toBe(true);
    expect(sink.drops).toBe(0);
  }, 20_000);

  it('iptables mode (iptables-nft): iptables-restore removing one endpoint gives one endpoint-rule-removed with iptables-save snapshots', async () => {
    const ns = newNetns('i');
    inNs(ns, ['iptables-restore'], readFileSync(fx('iptables/restore-before.rules'), 'utf8'));
    const { sink, before, after } = await record(
      ns,
      () => inNsAsync(ns, 'iptables-restore', fx('iptables/restore-after.rules')),
      // a full re-sync with no change over a second later: iptables-save's date comments differ, the rules do not
      () => { execFileSync('sleep', ['1.1']); inNs(ns, ['iptables-restore'], readFileSync(fx('iptables/restore-before.rules'), 'utf8')); },
    );
    const rm = removed(sink);
    expect(rm).toHaveLength(1);
    expect(rm[0]!.attrs as EndpointRuleAttrs).toMatchObject({ service: 'default/web:http', endpoint: '10.244.0.6:8080', mode: 'iptables', chain: 'KUBE-SEP-UKSFD7AGPMPPLUHC' });
    expect(rm[0]!.ts_ns).toBeGreaterThanOrEqual(before);
    expect(rm[0]!.ts_ns).toBeLessThanOrEqual(after);
    const ipt = sink.snapshots.filter((s) => s.format === 'iptables-save');
    expect(ipt.map((s) => s.reason)).toEqual(['start', 'burst', 'stop']);
    expect(ipt[1]!.ruleset).not.toMatch(/UKSFD7AGPMPPLUHC/);
  }, 20_000);

  it('legacy iptables: polled, clock marked polled, stamped within one poll of the change', async () => {
    const ns = newNetns('l');
    inNs(ns, ['iptables-legacy-restore'], readFileSync(fx('iptables/restore-before.rules'), 'utf8'));
    const { pf, sink, before, after } = await record(ns, () => inNsAsync(ns, 'iptables-legacy-restore', fx('iptables/restore-after.rules')));
    expect(pf.clock).toBe('polled');
    expect(pf.detail).toMatch(/poll/);
    const rm = removed(sink);
    expect(rm).toHaveLength(1);
    expect(rm[0]!.attrs as EndpointRuleAttrs).toMatchObject({ endpoint: '10.244.0.6:8080', mode: 'iptables-legacy', clock: 'polled' });
    // the poll that saw it started after the change began, at most one interval (+ one poll's run time) later
    expect(rm[0]!.ts_ns).toBeGreaterThanOrEqual(before);
    expect(rm[0]!.ts_ns).toBeLessThanOrEqual(after + (POLL_MS + 200) * 1e6);
    expect(sink.snapshots.every((s) => s.format === 'iptables-legacy-save')).toBe(true);
    expect(sink.snapshots[0]!.reason).toBe('start');
    expect(sink.snapshots.at(-1)!.reason).toBe('stop');
    expect(after).toBeGreaterThan(before);
  }, 20_000);
});
