import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import {
  hasIptablesKubeChains, hasNftKubeProxyTable, parseNftRuleset, reduceNftRuleset,
} from '../recorder/sources/nftables/nft-json.js';
import { changeStamp, noEndpointStamp, parseMonitorLine, parseMonitorText, ruleFacts, summarizeBurst, type StampedRecord } from '../recorder/sources/nftables/monitor.js';
import { hasKubeChains, parseIptablesSave, reduceIptablesSave, splitWords } from '../recorder/sources/nftables/iptables.js';
import {
  diffReductions, mergeReductions, serviceFromComment, serviceFromNftChain, type Reduction,
} from '../recorder/sources/nftables/reduce.js';
import type { EndpointRuleAttrs, NoEndpointRuleAttrs } from '../schemas/events.js';
import { isInputError } from '../schemas/errors.js';
import { iptablesFamilies } from '../recorder/sources/nftables/index.js';

const nft = (f: string) => readFileSync(new URL(`../fixtures/nft/${f}`, import.meta.url), 'utf8');
const ipt = (f: string) => readFileSync(new URL(`../fixtures/iptables/${f}`, import.meta.url), 'utf8');
const red = (f: string) => reduceNftRuleset(nft(f));
const diff = (a: Reduction, b: Reduction) => diffReductions(a, b, { ts_ns: 1_795_292_000_000_000_000, clock: 'receipt' });

describe('nft JSON reduction (kube-proxy nftables mode)', () => {
  const before = red('ruleset-before.json');

  it('reaches every endpoint through service-ips / service-nodeports and the numgen vmaps', () => {
    const eps = [...before.endpoints.values()].sort((a, b) => a.endpoint.localeCompare(b.endpoint));
    expect(eps.map((e) => [e.service, e.endpoint, e.vip, e.node_port])).toEqual([
      ['default/web:http', '10.244.0.5:8080', '10.96.0.10:80', 30080],
      ['default/web:http', '10.244.0.6:8080', '10.96.0.10:80', 30080],
      ['default/api:grpc', '10.244.1.7:9000', '10.96.0.11:9000', 30090],
    ]);
    expect(eps[1]!.chain).toBe('endpoint-7XQ2LMNP-default/web/tcp/http__10.244.0.6/8080');
    expect(eps.every((e) => e.mode === 'nftables')).toBe(true);
  });

  it('finds the no-endpoint reject (ClusterIP) and drop (Local NodePort) paths', () => {
    const ne = [...before.noEndpoints.values()].sort((a, b) => a.service.localeCompare(b.service));
    expect(ne).toEqual([
      { mode: 'nftables', service: 'default/api:grpc', vip: null, node_port: 30090, action: 'drop' },
      { mode: 'nftables', service: 'default/empty:http', vip: '10.96.0.12:80', node_port: null, action: 'reject' },
    ]);
  });

  it('removal of one endpoint by a kube-proxy partial sync yields exactly one endpoint-rule-removed', () => {
    const evs = diff(before, red('ruleset-after-remove.json'));
    expect(evs).toHaveLength(1);
    expect(evs[0]!.kind).toBe('endpoint-rule-removed');
    const a = evs[0]!.attrs as EndpointRuleAttrs;
    expect(a).toMatchObject({ service: 'default/web:http', endpoint: '10.244.0.6:8080', ip: '10.244.0.6', port: 8080, vip: '10.96.0.10:80', mode: 'nftables', clock: 'receipt' });
    expect(evs[0]!.ts_ns).toBe(1_795_292_000_000_000_000);
    expect(evs[0]!.source).toBe('nftables');
  });

  it('a full re-sync with no change (all handles new) yields no event', () => {
    const a = red('ruleset-whole-before.json');
    const b = red('ruleset-resync.json');
    expect(nft('ruleset-whole-before.json')).not.toBe(nft('ruleset-resync.json'));
    expect(diff(a, b)).toEqual([]);
  });

  it('a whole-table rewrite without the endpoint yields one removal', () => {
    const evs = diff(red('ruleset-whole-before.json'), red('ruleset-whole-after.json'));
    expect(evs.map((e) => [e.kind, (e.attrs as EndpointRuleAttrs).endpoint])).toEqual([['endpoint-rule-removed', '10.244.0.6:8080']]);
  });

  it('a flushed endpoint chain still referenced by the vmap counts as removed', () => {
    const evs = diff(before, red('ruleset-flushed-endpoint.json'));
    expect(evs.map((e) => [e.kind, (e.attrs as EndpointRuleAttrs).endpoint])).toEqual([['endpoint-rule-removed', '10.244.0.6:8080']]);
  });

  it('the reverse change is one endpoint-rule-added; the empty ruleset removes everything', () => {
    const evs = diff(red('ruleset-after-remove.json'), before);
    expect(evs.map((e) => e.kind)).toEqual(['endpoint-rule-added']);
    const gone = diff(before, reduceNftRuleset('{"nftables": [{"metainfo": {"version": "1.0.6"}}]}'));
    expect(gone.filter((e) => e.kind === 'endpoint-rule-removed')).toHaveLength(3);
    const ne = gone.filter((e) => e.kind === 'no-endpoint-rule-removed').map((e) => (e.attrs as NoEndpointRuleAttrs).service).sort();
    expect(ne).toEqual(['default/api:grpc', 'default/empty:http']);
  });

  it('chains not reachable from a base chain reach nothing', () => {
    const doc = JSON.parse(nft('ruleset-before.json')) as { nftables: Array<Record<string, any>> };
    // drop the rules of the `services` dispatch chain: the maps and service chains remain but are unreachable
    doc.nftables = doc.nftables.filter((o) => !(o.rule && o.rule.chain === 'services'));
    const r = reduceNftRuleset(JSON.stringify(doc));
    expect(r.endpoints.size).toBe(0);
    expect(r.noEndpoints.size).toBe(2); // the filter chains still reach the no-endpoint maps
  });

  it('ignores non-kube-proxy tables and detects the mode', () => {
    const m = parseNftRuleset(nft('ruleset-before.json'));
    expect(hasNftKubeProxyTable(m)).toBe(true);
    expect(hasIptablesKubeChains(m)).toBe(false);
    const x = parseNftRuleset(ipt('nft-ruleset-before.json'));
    expect(hasIptablesKubeChains(x)).toBe(true);
    expect(reduceNftRuleset(x).endpoints.size).toBe(0); // xt targets carry no address
    expect(iptablesFamilies(x)).toEqual(['ip']);
    expect(iptablesFamilies(m)).toEqual([]);
  });

  it('bad input is an InputError', () => {
    for (const bad of ['{"nftables": ', '{"foo": 1}', '[]']) {
      let err: unknown;
      try { reduceNftRuleset(bad); } catch (e) { err = e; }
      expect(isInputError(err)).toBe(true);
    }
  });

  it('labels services from kube-proxy chain names and comments', () => {
    expect(serviceFromNftChain('service-ULMVA6XW-default/web/tcp/http')).toBe('default/web:http');
    expect(serviceFromNftChain('endpoint-5OJB2KTY-default/web/tcp/http__10.244.0.5/8080')).toBe('default/web:http');
    expect(serviceFromNftChain('external-42NFTM6N-ns2/svc2/tcp/p80')).toBe('ns2/svc2:p80');
    expect(serviceFromNftChain('service-SC-default/sctp-svc/sctp/')).toBe('default/sctp-svc');
    expect(serviceFromNftChain('services')).toBeNull();
    expect(serviceFromNftChain('reject-chain')).toBeNull();
    expect(serviceFromComment('default/web:http cluster IP')).toBe('default/web:http');
    expect(serviceFromComment('default/web:http -> 10.244.0.5:8080')).toBe('default/web:http');
    expect(serviceFromComment('kubernetes service nodeports; NOTE: this must be the last rule in this chain')).toBeNull();
  });
});

describe('nft -j monitor lines', () => {
  it('parses a kube-proxy partial sync (nft stderr diagnostic is noise, not data)', () => {
    const p = parseMonitorText(nft('monitor-remove-endpoint.jsonl'));
    expect(p.malformed).toBe(0);
    expect(p.noise).toBe(1);
    expect(p.records).toHaveLength(8);
    expect(p.records[0]).toEqual({ op: 'delete', object: 'rule', family: 'ip', table: 'kube-proxy', chain: 'service-ULMVA6XW-default/web/tcp/http', handle: 42 });
    const last = p.records[7]!;
    expect(last).toMatchObject({ op: 'delete', object: 'chain', chain: 'endpoint-7XQ2LMNP-default/web/tcp/http__10.244.0.6/8080', handle: 34 });
    expect(summarizeBurst(p.records)).toEqual({
      lines: 8, ops: { 'delete rule': 4, 'delete set': 1, 'add rule': 2, 'delete chain': 1 }, tables: ['ip kube-proxy'],
    });
  });

  it('parses whole-table transactions', () => {
    const p = parseMonitorText(nft('monitor-whole-table.jsonl'));
    expect(p.malformed).toBe(0);
    const s = summarizeBurst(p.records);
    expect(s.tables).toEqual(['ip kube-proxy']);
    expect(s.ops['delete table']).toBe(1);
    expect(s.ops['add table']).toBe(1);
    expect(s.lines).toBeGreaterThan(100);
  });

  it('skips and counts malformed lines, never throws', () => {
    const p = parseMonitorText(nft('monitor-malformed.jsonl'));
    expect(p.records).toHaveLength(4);
    expect(p.malformed).toBe(4);
    expect(parseMonitorLine('{"add": {"rule": {"family": "ip", "table": "kube-').t).toBe('malformed');
    expect(parseMonitorLine('').t).toBe('noise');
  });

  it('iptables-restore through iptables-nft shows up as nat/filter table changes', () => {
    const p = parseMonitorText(ipt('monitor-restore.jsonl'));
    expect(p.malformed).toBe(0);
    expect(summarizeBurst(p.records).tables).toEqual(['ip filter', 'ip nat']);
  });
});

describe('noEndpointStamp: the line that added a no-endpoint rule (iptables-nft, golden monitor lines)', () => {
  // the golden iptables-restore transaction, one line a millisecond, as the source stamps them
  const lines = ipt('monitor-restore.jsonl').split('\n').filter(Boolean);
  const recs: StampedRecord[] = lines.map((l, i) => {
    const p = parseMonitorLine(l);
    if (p.t !== 'record') throw new Error(`line ${i + 1}: ${p.t}`);
    const rule = p.r.object === 'rule' ? ruleFacts(p.doc) : undefined;
    return { ...p.r, ts: (i + 1) * 1e6, ...(rule ? { rule } : {}) };
  });
  const targets = [...reduceIptablesSave(parseIptablesSave(ipt('save-nat-after.txt') + ipt('save-filter-after.txt')), 'iptables').noEndpoints.values()]
    .sort((a, b) => a.action.localeCompare(b.action)).reverse();

  it('reads the REJECT (an opaque xt target) and DROP rules: address, port, verdict', () => {
    expect(recs[25]!.rule).toEqual({ daddr: '10.96.0.12', dport: 80, verdict: 'reject' });
    expect(recs[26]!.rule).toEqual({ dport: 30090, verdict: 'drop' });
    // DNAT, jumps and deletions carry none
    expect(recs.filter((r) => r.rule).length).toBe(2);
  });

  it('stamps each no-endpoint rule of the reduction with the line that added it', () => {
    expect(targets.map((t) => [t.action, t.vip, t.node_port])).toEqual([['reject', '10.96.0.12:80', null], ['drop', null, 30090]]);
    expect(noEndpointStamp(recs, targets[0]!)).toBe(26e6);
    expect(noEndpointStamp(recs, targets[1]!)).toBe(27e6);
  });

  it('null when no line added it: another verdict, address or port, or a removal only', () => {
    expect(noEndpointStamp(recs, { ...targets[0]!, action: 'drop' })).toBeNull();
    expect(noEndpointStamp(recs, { ...targets[0]!, vip: '10.96.0.13:80' })).toBeNull();
    expect(noEndpointStamp(recs, { ...targets[1]!, node_port: 30091 })).toBeNull();
    expect(noEndpointStamp(recs.filter((r) => r.op === 'delete'), targets[0]!)).toBeNull();
    // the NodePort rule has no address: a ClusterIP-shaped lookup on its port does not take it
    expect(noEndpointStamp(recs, { vip: '10.96.0.12:30090', node_port: null, action: 'drop' })).toBeNull();
  });
});

describe('iptables-save reduction (kube-proxy iptables mode)', () => {
  const before = reduceIptablesSave(ipt('save-nat-before.txt') + ipt('save-filter-before.txt'));

  it('walks KUBE-SERVICES -> KUBE-SVC -> KUBE-SEP DNAT and KUBE-NODEPORTS -> KUBE-EXT', () => {
    const eps = [...before.endpoints.values()].sort((a, b) => a.endpoint.localeCompare(b.endpoint));
    expect(eps.map((e) => [e.service, e.endpoint, e.vip, e.node_port, e.chain, e.mode])).toEqual([
      ['default/web:http', '10.244.0.5:8080', '10.96.0.10:80', 30080, 'KUBE-SEP-SXIVWICOYRO3J4NJ', 'iptables'],
      ['default/web:http', '10.244.0.6:8080', '10.96.0.10:80', 30080, 'KUBE-SEP-UKSFD7AGPMPPLUHC', 'iptables'],
      ['default/api:grpc', '10.244.1.7:9000', '10.96.0.11:9000', 30090, 'KUBE-SEP-RS4RBKLTHTF2IUXJ', 'iptables'],
    ]);
    const ne = [...before.noEndpoints.values()].sort((a, b) => a.service.localeCompare(b.service));
    expect(ne).toEqual([
      { mode: 'iptables', service: 'default/api:grpc', vip: null, node_port: 30090, action: 'drop' },
      { mode: 'iptables', service: 'default/empty:http', vip: '10.96.0.12:80', node_port: null, action: 'reject' },
    ]);
  });

  it('removal of one endpoint by iptables-restore yields exactly one endpoint-rule-removed', () => {
    const after = reduceIptablesSave(ipt('save-nat-after.txt') + ipt('save-filter-after.txt'));
    const evs = diff(before, after);
    expect(evs).toHaveLength(1);
    expect(evs[0]!.kind).toBe('endpoint-rule-removed');
    expect(evs[0]!.attrs).toMatchObject({ service: 'default/web:http', endpoint: '10.244.0.6:8080', chain: 'KUBE-SEP-UKSFD7AGPMPPLUHC', mode: 'iptables' });
  });

  it('a re-sync with no change yields none; a SEP chain emptied (flushed) counts as removed', () => {
    const same = reduceIptablesSave(ipt('save-nat-before.txt').replace(/^# .*$/gm, '# re-sync') + ipt('save-filter-before.txt'));
    expect(diff(before, same)).toEqual([]);
    const flushed = ipt('save-nat-before.txt').split('\n').filter((l) => !l.startsWith('-A KUBE-SEP-UKSFD7AGPMPPLUHC')).join('\n');
    const evs = diff(before, reduceIptablesSave(flushed + ipt('save-filter-before.txt')));
    expect(evs.filter((e) => e.kind === 'endpoint-rule-removed').map((e) => (e.attrs as EndpointRuleAttrs).endpoint)).toEqual(['10.244.0.6:8080']);
  });

  it('the legacy mode labels its targets', () => {
    const r = reduceIptablesSave(ipt('save-nat-before.txt'), 'iptables-legacy');
    expect([...r.endpoints.values()].every((e) => e.mode === 'iptables-legacy')).toBe(true);
    expect(mergeReductions(r, before).endpoints.size).toBe(6);
  });

  it('skips and counts malformed lines', () => {
    const text = ipt('save-nat-before.txt').replace('COMMIT', 'garbage here\n-A\n-A KUBE-SERVICES -m comment --comment "unterminated\nCOMMIT') + '-A ORPHAN -j ACCEPT\n';
    const p = parseIptablesSave(text);
    expect(p.malformed).toBe(4);
    expect(hasKubeChains(p)).toBe(true);
    expect(reduceIptablesSave(p).endpoints.size).toBe(3);
  });

  it('splits quoted words like iptables-save prints them', () => {
    expect(splitWords('-A X -m comment --comment "a \\"b\\" c" -j Y')).toEqual(['-A', 'X', '-m', 'comment', '--comment', 'a "b" c', '-j', 'Y']);
    expect(splitWords('-A X --comment "open')).toBeNull();
  });
});

describe('changeStamp: which monitor line removed an endpoint (several syncs in one burst)', () => {
  const ep2 = 'endpoint-CFQGW5QF-default/web/tcp/http__10.244.0.2/8080';
  const ep5 = 'endpoint-4VJT4MCW-default/web/tcp/http__10.244.0.5/8080';
  const ms = 1e6, us = 1e3;
  const kp = (op: string, chain: string, ts: number) => ({ op, object: 'rule', family: 'ip', table: 'kube-proxy', chain, ts });
  it('back-to-back syncs: sync 8 rewrites .2\'s chain (keeps it), sync 9 flushes it: stamped with sync 9\'s lines', () => {
    const recs = [kp('delete', 'service-X', 100 * ms), kp('delete', ep2, 100 * ms + 5 * us), kp('add', ep5, 100 * ms + 9 * us), kp('add', ep2, 100 * ms + 12 * us),
      kp('add', ep5, 100 * ms + 15 * us), kp('delete', 'service-X', 135 * ms), kp('delete', ep2, 135 * ms + 4 * us)];
    expect(changeStamp(recs, ep2)).toBe(135 * ms);
    // .5 was added and never flushed after: not a removal in this burst
    expect(changeStamp(recs, ep5)).toBeNull();
  });
  it('one sync read in two chunks 60 ms apart (a busy machine): the burst\'s first line stands', () => {
    const recs = [kp('delete', 'service-X', 100 * ms), kp('add', 'service-X', 100 * ms + 3 * us), kp('delete', ep2, 160 * ms), kp('delete', ep2, 160 * ms + 2 * us)];
    expect(changeStamp(recs, ep2)).toBeNull();
  });
  it('iptables-restore commits filter then nat, tens of ms apart: the nat commit that deletes the KUBE-SEP chain', () => {
    const sep = 'KUBE-SEP-QA4PSDNF5R2OJOPA';
    const ipt = [
      { op: 'delete', object: 'rule', family: 'ip', table: 'filter', chain: 'KUBE-SERVICES', ts: 100 * ms },
      { op: 'delete', object: 'rule', family: 'ip', table: 'nat', chain: 'KUBE-SVC-X', ts: 145 * ms },
      { op: 'delete', object: 'rule', family: 'ip', table: 'nat', chain: sep, ts: 145 * ms + 3 * us },
      { op: 'delete', object: 'chain', family: 'ip', table: 'nat', chain: sep, ts: 145 * ms + 5 * us },
    ];
    // routing changes only with the nat commit (KUBE-SVC → KUBE-SEP): never the filter commit before it
    expect(changeStamp(ipt, sep)).toBe(145 * ms);
    // a burst that starts with that nat commit keeps its first line
    expect(changeStamp(ipt.slice(1), sep)).toBeNull();
  });
  it('a real node under load: a no-change sync (filter, nat) and the next sync (filter, nat deleting the chain) in one burst', () => {
    // captured on the lab's real node (iptables mode): sync 4 committed at 59.744/59.749 s, sync 5 (which
    // dropped 10.244.0.2) ran 59.769-59.811 s; the removal had been stamped 25.8 ms before sync 5 began
    const sep = 'KUBE-SEP-QA4PSDNF5R2OJOPA';
    const r = (table: string, chain: string, op: string, t: number, object = 'rule') => ({ op, object, family: 'ip', table, chain, ts: t });
    const recs = [
      r('filter', 'KUBE-SERVICES', 'delete', 59_743 * ms), r('filter', 'KUBE-SERVICES', 'add', 59_743 * ms + 20 * us),
      r('nat', 'KUBE-SVC-X', 'delete', 59_749 * ms), r('nat', 'KUBE-SVC-X', 'add', 59_749 * ms + 30 * us),
      r('filter', 'KUBE-SERVICES', 'delete', 59_785 * ms), r('filter', 'KUBE-SERVICES', 'add', 59_785 * ms + 15 * us),
      r('nat', 'KUBE-SVC-X', 'delete', 59_801 * ms), r('nat', 'KUBE-SVC-X', 'add', 59_801 * ms + 10 * us),
      r('nat', sep, 'delete', 59_801 * ms + 40 * us), r('nat', sep, 'delete', 59_801 * ms + 50 * us, 'chain'),
    ];
    expect(changeStamp(recs, sep)).toBe(59_801 * ms);
  });
  it('null when the burst never touches the chain', () => {
    expect(changeStamp([kp('delete', ep2, 1)], 'KUBE-SEP-NOPE')).toBeNull();
  });
});
