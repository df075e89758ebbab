/**
 * The real node's truth readers on records captured from a real `lab run --real --scenario race`
 * (fixtures/lab-real/race-nft: kube-proxy -v=4 with proxier.go at 9, kubelet -v=2, containerd's log and
 * the app's stamps). Values below were read off those files by hand.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { containerdRecords, iptablesRouted, isoToNs, klogValue, kubeletRecords, kubeProxySyncs, nftRouted, parseKlog, parseStamps, realKubeletEvents, unansweredFlows } from '../lab/real/truth.js';
import { jsonStream } from '../lab/real/run.js';
import type { ConntrackRow } from '../schemas/rows.js';

const F = 'fixtures/lab-real/race-nft';
const read = (f: string) => readFileSync(join(F, f), 'utf8');
const stamps = new Map(readdirSync(join(F, 'stamps')).map((f) => [f.replace(/\.jsonl$/, ''), parseStamps(readFileSync(join(F, 'stamps', f), 'utf8'))]));
const OLD = ['web-6f76646467-rq6lg', 'web-6f76646467-w5cws'];

describe('klog', () => {
  it('parses headers (µs, local time) and multi-line values', () => {
    const l = parseKlog('I1201 13:09:10.986398   1234 proxier.go:1202] "Syncing nftables rules" ipFamily="IPv4" fullSync=false\n'
      + 'I1201 13:09:10.990000   1234 proxier.go:1845] "Running nftables transaction" transaction=<\n\tadd chain ip kube-proxy x\n\tflush chain ip kube-proxy y\n >\n', 2026);
    expect(l).toHaveLength(2);
    expect(l[0]!.tsNs).toBe(new Date(2026, 11, 1, 13, 9, 10).getTime() * 1e6 + 986398e3);
    expect(l[0]!.msg).toBe('Syncing nftables rules');
    expect(klogValue(l[0]!.rest, 'ipFamily')).toBe('IPv4');
    expect(klogValue(l[0]!.rest, 'fullSync')).toBe('false');
    expect(l[1]!.body).toEqual(['add chain ip kube-proxy x', 'flush chain ip kube-proxy y']);
  });
});

describe('kube-proxy syncs from its own log', () => {
  const syncs = kubeProxySyncs(parseKlog(read('kube-proxy.log'), 2026));

  it('every IPv4 sync, in order, with start <= end', () => {
    expect(syncs.length).toBeGreaterThan(5);
    expect(syncs.every((s) => s.mode === 'nftables' && s.endNs >= s.startNs && !s.error)).toBe(true);
    expect(syncs.map((s) => s.seq)).toEqual(syncs.map((_, i) => i + 1));
  });

  it('the endpoints each sync added and removed, from its nftables transaction', () => {
    const all = (k: 'added' | 'removed') => syncs.flatMap((s) => s[k]);
    expect(all('added')).toEqual(expect.arrayContaining(['default/kubernetes:https|192.168.77.1:6443', 'default/web:http|10.244.0.2:8080', 'default/web:http|10.244.0.3:8080',
      'default/web:http|10.244.0.4:8080', 'default/web:http|10.244.0.5:8080']));
    expect(all('removed').sort()).toEqual(['default/web:http|10.244.0.2:8080', 'default/web:http|10.244.0.3:8080']);
    const rm3 = syncs.find((s) => s.removed.includes('default/web:http|10.244.0.3:8080'))!;
    expect(rm3.flushedChains.some((c) => c.endsWith('__10.244.0.3/8080'))).toBe(true);
  });

  it('nft transactions: a rewritten service chain routes to the endpoints in its vmap; a flushed-empty one to none', () => {
    const r = nftRouted([
      'flush chain ip kube-proxy service-SUSTUHLJ-default/web/tcp/http',
      'add rule ip kube-proxy service-SUSTUHLJ-default/web/tcp/http numgen random mod 2 vmap { 0 : goto endpoint-MKGAVGLF-default/web/tcp/http__10.244.0.4/8080 , 1 : goto endpoint-4VJT4MCW-default/web/tcp/http__10.244.0.5/8080 }',
      'flush chain ip kube-proxy service-AAAAAAAA-default/other/tcp/p',
    ]);
    expect([...r.get('default/web:http')!].sort()).toEqual(['10.244.0.4:8080', '10.244.0.5:8080']);
    expect([...r.get('default/other:p')!]).toEqual([]);
  });

  it('iptables-restore input: KUBE-SVC chains rewritten, endpoints from the rule comments', () => {
    const m = new Map<string, string>();
    const r = iptablesRouted([':KUBE-SVC-ABC - [0:0]', '-A KUBE-SVC-ABC -m comment --comment "default/web:http -> 10.244.0.4:8080" -m statistic --mode random --probability 0.5 -j KUBE-SEP-X',
      '-A KUBE-SVC-ABC -m comment --comment "default/web:http -> 10.244.0.5:8080" -j KUBE-SEP-Y'], m);
    expect([...r.get('default/web:http')!]).toEqual(['10.244.0.4:8080', '10.244.0.5:8080']);
    expect([...iptablesRouted([':KUBE-SVC-ABC - [0:0]'], m).get('default/web:http')!]).toEqual([]);
  });
});

describe('kubelet, containerd and the app', () => {
  const kubelet = kubeletRecords(parseKlog(read('kubelet.log'), 2026));
  const cd = containerdRecords(read('containerd.log'));

  it('kubelet: deletion seen and the container it killed with the grace period', () => {
    for (const name of OLD) {
      const recs = kubelet.filter((r) => r.pod === `default/${name}`);
      expect(recs.some((r) => r.what === 'deletion-seen')).toBe(true);
      const k = recs.find((r) => r.what === 'killing')!;
      expect(k.containerId).toMatch(/^[0-9a-f]{64}$/);
      expect(k.detail).toEqual({ gracePeriod: 30 });
    }
  });

  it('containerd: SIGTERM and the exit instant of each killed container', () => {
    for (const name of OLD) {
      const cid = kubelet.find((r) => r.pod === `default/${name}` && r.what === 'killing')!.containerId!;
      const term = cd.find((c) => c.containerId === cid && c.what === 'sigterm')!;
      const exit = cd.find((c) => c.containerId === cid && c.what === 'exit')!;
      expect(exit.exitStatus).toBe(0);
      expect(exit.exitNs!).toBeGreaterThan(term.tsNs);
      expect(exit.exitNs! - term.tsNs).toBeLessThan(2e9);
    }
    expect(isoToNs('2026-12-01T13:02:01.337947652Z')).toBe(Date.UTC(2026, 11, 1, 13, 2, 1) * 1e6 + 337947652);
  });

  it('one truth pod per stamp file, with the app\'s own IP and instants, SIGTERM from containerd', () => {
    const evs = realKubeletEvents({ namespace: 'default', stamps, kubelet, containerd: cd });
    for (const name of OLD) {
      const mine = evs.filter((e) => e.pod === `default/${name}`);
      const at = (w: string) => mine.find((e) => e.what === w)?.ts_ns ?? null;
      expect(mine[0]!.ip).toMatch(/^10\.244\.0\.\d+$/);
      expect(at('sigterm-sent')).not.toBeNull();
      // containerd asks the shim to signal, then the app's handler runs: the order holds on a real node
      expect(at('sigterm-sent')!).toBeLessThan(at('backend:sigterm')!);
      expect(at('backend:sigterm')!).toBeLessThanOrEqual(at('backend:listener-closed')!);
      expect(at('backend:listener-closed')!).toBeLessThan(at('container-exited')!);
      expect(at('sigkill-sent')).toBeNull();
    }
    expect(stamps.size).toBe(4);
  });
});

describe('lab-side readers', () => {
  it('unanswered SYNs to the service: NEW and nothing after, old enough', () => {
    const row = (o: Partial<ConntrackRow>): ConntrackRow => ({ ts_ns: 0, type: 'NEW', proto: 'tcp', state: 'SYN_SENT', orig_src: '192.168.77.1', orig_dst: '10.96.0.10', orig_sport: 1,
      orig_dport: 80, reply_src: '10.244.0.3', reply_dst: '10.244.0.1', reply_sport: 8080, reply_dport: 5, flags: null, zone: null, raw: null, ...o });
    const rows = [row({ ts_ns: 1, orig_sport: 1 }), row({ ts_ns: 2, orig_sport: 2 }), row({ ts_ns: 3, orig_sport: 2, type: 'UPDATE', state: 'SYN_RECV' }),
      row({ ts_ns: 9, orig_sport: 3 }), row({ ts_ns: 4, orig_sport: 4, orig_dst: '10.1.1.1' })];
    const f = unansweredFlows(rows, (ip, port) => ip === '10.96.0.10' && port === 80, 5);
    expect(f).toEqual([{ atNs: 1, client: '192.168.77.1:1', service: '10.96.0.10:80', backendIp: '10.244.0.3', backendPort: 8080 }]);
  });

  it('kubectl --watch -o json: documents as they complete, across chunks', () => {
    const docs: any[] = [];
    const feed = jsonStream((o) => docs.push(o));
    feed('{"type":"ADDED","object":{"a":"}{"}}\n{"type":"MOD');
    expect(docs).toHaveLength(1);
    feed('IFIED","object":{"b":[1,{"c":2}]}}');
    expect(docs.map((d) => d.type)).toEqual(['ADDED', 'MODIFIED']);
    expect(docs[0].object.a).toBe('}{');
  });
});
