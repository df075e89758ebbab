import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { NftReplayModel, splitStamp, stampLines } from '../recorder/import/nft-replay.js';
import { normalizeEpoch, objectInstantNs, plainObjectsToEvents, splitConcatenatedJson } from '../recorder/import/watch.js';
import { reduceNftRuleset } from '../recorder/sources/nftables/nft-json.js';
import { diffReductions } from '../recorder/sources/nftables/reduce.js';

const FIX = join(__dirname, '..', 'fixtures');
const read = (p: string) => readFileSync(join(FIX, p), 'utf8');
const keys = (doc: unknown) => [...reduceNftRuleset(doc).endpoints.keys()].sort();

describe('nft monitor line stamps', () => {
  it('reads epoch, [epoch], ISO-8601 with Z or an offset, and leaves other lines unstamped', () => {
    expect(splitStamp('1795292068.851527 {"a":1}')).toEqual({ ts: 1795292068851527000, body: '{"a":1}' });
    expect(splitStamp('[1795292068.5] {"a":1}')).toEqual({ ts: 1795292068500000000, body: '{"a":1}' });
    expect(splitStamp('1795292068 {}').ts).toBe(1795292068e9);
    expect(splitStamp('2026-11-21T20:13:43.25Z {"x":2}')).toEqual({ ts: Date.parse('2026-11-21T20:13:43Z') * 1e6 + 250000000, body: '{"x":2}' });
    expect(splitStamp('2026-11-21T21:13:43+01:00 {}').ts).toBe(Date.parse('2026-11-21T20:13:43Z') * 1e6);
    expect(splitStamp('{"add": {}}')).toEqual({ ts: null, body: '{"add": {}}' });
    expect(splitStamp('Nov 21 20:13:43 {}').ts).toBeNull(); // ts(1) default format: not an instant
  });

  it('unstamped lines inherit the previous stamp, leading ones the first; no stamp at all is null', () => {
    const s = stampLines(['{"a":0}', '5.000000001 x', '', '[7] y', 'z'].map((l, i) => (i === 1 ? `179529206${l}` : i === 3 ? l.replace('[7]', '[1795292070]') : l)));
    expect(s!.map((l) => l.ts)).toEqual([1795292065000000001, 1795292065000000001, 1795292065000000001, 1795292070e9, 1795292070e9]);
    expect(stampLines(read('nft/monitor-remove-endpoint.jsonl').split('\n'))).toBeNull();
  });

  it('parses every line of the hand-stamped fixture', () => {
    const s = stampLines(read('import/nft-remove-endpoint.ts.log').split('\n'))!;
    const json = s.filter((l) => l.body.startsWith('{'));
    expect(json).toHaveLength(8);
    expect(s[0]!.ts).toBe(1795292023200010000);
    for (let i = 1; i < s.length; i++) expect(s[i]!.ts).toBeGreaterThanOrEqual(s[i - 1]!.ts - 1000); // float rounding only
  });
});

describe('nft replay model', () => {
  const replay = (rulesetFile: string, monitorFile: string) => {
    const m = NftReplayModel.fromRuleset(JSON.parse(read(rulesetFile)));
    let unknown = 0;
    for (const l of read(monitorFile).split('\n')) {
      if (!l.startsWith('{')) continue;
      if (m.apply(JSON.parse(l)).unknown) unknown++;
    }
    return { m, unknown };
  };

  it('round-trips a listed ruleset to the same reduction', () => {
    const doc = JSON.parse(read('nft/ruleset-before.json'));
    expect(keys(NftReplayModel.fromRuleset(doc).toRuleset())).toEqual(keys(doc));
    expect(keys(doc)).toHaveLength(3);
  });

  it('replaying the remove-endpoint monitor onto the before ruleset gives the after ruleset', () => {
    const { m, unknown } = replay('nft/ruleset-before.json', 'nft/monitor-remove-endpoint.jsonl');
    expect(unknown).toBe(0);
    const after = m.toRuleset();
    expect(keys(after)).toEqual(keys(JSON.parse(read('nft/ruleset-after-remove.json'))));
    const ev = diffReductions(reduceNftRuleset(JSON.parse(read('nft/ruleset-before.json'))), reduceNftRuleset(after), { ts_ns: 1, clock: 'file' });
    expect(ev.map((e) => `${e.kind} ${e.subject}`)).toEqual(['endpoint-rule-removed 10.244.0.6:8080']);
  });

  it('replaying a whole-table re-sync keeps every target and the no-endpoint entries', () => {
    const before = JSON.parse(read('nft/ruleset-whole-before.json'));
    const { m, unknown } = replay('nft/ruleset-whole-before.json', 'nft/monitor-resync.jsonl');
    expect(unknown).toBe(0);
    expect(keys(m.toRuleset())).toEqual(keys(before));
    expect([...reduceNftRuleset(m.toRuleset()).noEndpoints.keys()].sort()).toEqual([...reduceNftRuleset(before).noEndpoints.keys()].sort());
  });

  it('replaying the whole-table rewrite drops 10.244.0.6 only', () => {
    const { m } = replay('nft/ruleset-whole-before.json', 'nft/monitor-whole-table.jsonl');
    expect(keys(m.toRuleset())).toEqual(keys(JSON.parse(read('nft/ruleset-whole-after.json'))));
    expect(keys(m.toRuleset()).some((k) => k.includes('10.244.0.6'))).toBe(false);
  });

  it('adds and deletes map elements, counts unknown handles and flags iptables-nft xt rules', () => {
    const m = new NftReplayModel();
    m.apply({ add: { table: { family: 'ip', name: 't' } } });
    m.apply({ add: { map: { family: 'ip', table: 't', name: 'mp', map: 'verdict' } } });
    const el = [[{ concat: ['10.0.0.1', 'tcp', 80] }, { goto: { target: 'c' } }]];
    expect(m.apply({ add: { element: { family: 'ip', table: 't', name: 'mp', elem: { set: el } } } }).unknown).toBe(false);
    expect(JSON.stringify(m.toRuleset())).toContain('10.0.0.1');
    expect(m.apply({ delete: { element: { family: 'ip', table: 't', name: 'mp', elem: { set: [[{ concat: ['10.0.0.1', 'tcp', 80] }]] } } } }).unknown).toBe(false);
    expect(JSON.stringify(m.toRuleset())).not.toContain('10.0.0.1');
    expect(m.apply({ delete: { rule: { family: 'ip', table: 't', chain: 'c', handle: 9 } } }).unknown).toBe(true);
    expect(m.apply({ delete: { set: { family: 'ip', table: 't', name: '__map0' } } }).unknown).toBe(false);
    expect(m.apply({ add: { rule: { family: 'ip', table: 'nat', chain: 'KUBE-SERVICES', handle: 3, expr: [{ xt: { type: 'target', name: 'KUBE-MARK' } }] } } }).xt).toBe(true);
    expect(m.hasIptablesKube()).toBe(true);
    expect(m.apply('nonsense').unknown).toBe(true);
    expect(() => NftReplayModel.fromRuleset({ not: 'nft' })).toThrow();
  });
});

describe('watch input forms', () => {
  it('splits real kubectl get --watch -o json output into objects, ADDED then MODIFIED', () => {
    const s = splitConcatenatedJson(read('import/kubectl-watch-pods.json'));
    expect(s.bad).toBe(0);
    expect(s.values).toHaveLength(4);
    const p = plainObjectsToEvents(s.values);
    expect(p.events.map((e) => e.type)).toEqual(['ADDED', 'MODIFIED', 'MODIFIED', 'MODIFIED']);
    expect(p.events.every((e) => typeof e.ts === 'number' && e.ts > 1.7e18)).toBe(true);
    // the terminating object's instant is its deletion request (deletionTimestamp minus the grace period)
    const term = p.events[2]!.object.metadata!;
    expect(p.events[2]!.ts).toBe(Date.parse(String(term.deletionTimestamp)) * 1e6 - Number(term.deletionGracePeriodSeconds) * 1e9);
  });

  it('counts garbage and a truncated value, keeps the good ones, expands lists', () => {
    const s = splitConcatenatedJson('{"a":1}\nerror: oops\n{"b": "}{"}\n[1,\n');
    expect(s.values).toEqual([{ a: 1 }, { b: '}{' }]);
    expect(s.bad).toBe(2);
    const p = plainObjectsToEvents([{ kind: 'PodList', items: [{ metadata: { name: 'x', creationTimestamp: '2026-01-01T00:00:00Z' } }] }, 5]);
    expect(p.events).toHaveLength(1);
    expect(p.events[0]!.object.kind).toBe('Pod');
    expect(p.bad).toBe(1);
  });

  it('takes object instants from metadata only when present, and normalizes epoch units', () => {
    expect(objectInstantNs({ metadata: { name: 'x' } })).toBeNull();
    expect(objectInstantNs({ metadata: { creationTimestamp: '2026-01-01T00:00:00Z', managedFields: [{ time: '2026-01-01T00:00:05Z' }] } }))
      .toBe(Date.parse('2026-01-01T00:00:05Z') * 1e6);
    expect(normalizeEpoch(1795292068)).toBe(1795292068e9);
    expect(normalizeEpoch(1795292068123)).toBe(1795292068123e6);
    expect(normalizeEpoch(1795292068123456789)).toBe(1795292068123456789);
  });
});
