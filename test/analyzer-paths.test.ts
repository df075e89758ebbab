/**
 * Per-path routing in the analysis (issue 11 part 1): the path events come from the real rule fixtures
 * (fixtures/paths, the fast lab's kube-proxy rules for a Local NodePort service, both modes) reduced and
 * diffed by the recorder's own code, then written into a synthetic rollout: the analysis says when each
 * path stopped routing to the pod, names the terminating fallback, which path each failure took, and the
 * Local blackhole. Also `rolltrace import --iptables-save` on the same snapshots.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { analyzeBundle } from '../analyzer/analyze.js';
import { BundleReader } from '../analyzer/bundle-reader.js';
import { renderHtml } from '../analyzer/render/html.js';
import { renderMarkdown } from '../analyzer/render/markdown.js';
import { renderText } from '../analyzer/render/text.js';
import { reduceIptablesSave } from '../recorder/sources/nftables/iptables.js';
import { reduceNftRuleset } from '../recorder/sources/nftables/nft-json.js';
import { diffPaths, diffReductions, emptyReduction, type Reduction } from '../recorder/sources/nftables/reduce.js';
import type { RtEvent } from '../schemas/events.js';
import { at, flow, OLD, scenario, tmpBundle } from './analyzer-synth.js';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
const fx = (f: string) => readFileSync(join(ROOT, 'fixtures/paths', f), 'utf8');
const dirs: string[] = [];
afterAll(() => { for (const d of dirs) rmSync(d, { recursive: true, force: true }); });

/** The recorder's events for the three rule states, at +0.02, +2.5 and +3.0 s, moved onto the synthetic pod's IP. */
function ruleEvents(reds: Reduction[]): RtEvent[] {
  const times = [0.02, 2.5, 3.0];
  const out: RtEvent[] = [];
  let prev = emptyReduction();
  reds.forEach((r, i) => {
    const o = { ts_ns: at(times[i]!), clock: 'receipt' as const };
    for (const e of [...diffReductions(prev, r, o), ...diffPaths(prev, r, o)]) {
      if (e.kind === 'endpoint-rule-added' || e.kind === 'endpoint-rule-removed') continue; // the synthetic rollout has its own
      out.push(JSON.parse(JSON.stringify(e).replaceAll('10.244.0.2', OLD.ip).replaceAll('10.244.1.3', '10.42.0.98')) as RtEvent);
    }
    prev = r;
  });
  return out;
}

describe.each([
  ['nftables', [1, 2, 3].map((i) => reduceNftRuleset(fx(`nft-${i}.json`)))],
  ['iptables', [1, 2, 3].map((i) => reduceIptablesSave(fx(`ipt-${i}.txt`)))],
] as Array<[string, Reduction[]]>)('%s rules: a Local service whose only local endpoint terminates', (_mode, reds) => {
  it('per pod: when each path stopped; the terminating fallback; each failure\'s path; the Local blackhole', async () => {
    const f = scenario(tmpBundle('paths'), {
      failAt: [2.1],
      extra: (w) => {
        for (const e of ruleEvents(reds)) w.event(e);
        // a client of the NodePort after the node lost its last local endpoint: dropped
        flow(w, 3.2, 46000, null, 'icmp', { remote: '10.0.0.1:30080' });
      },
    });
    dirs.push(dirname(f));
    const r = await BundleReader.open(f);
    let a;
    try { a = await analyzeBundle(r); } finally { r.close(); }
    const p = a.pods[0]!;
    expect(p.routes).toEqual([
      { path: 'cluster-ip', addr: '10.96.0.10:80', policy: 'Cluster', service: 'default/web:http', node: null, stoppedAt: '2026-04-12T13:20:02.500000Z', fallback: false },
      { path: 'node-port', addr: '*:30080', policy: 'Local', service: 'default/web:http', node: null, stoppedAt: '2026-04-12T13:20:03.000000Z', fallback: true },
    ]);
    expect(p.evidence.join('\n')).toMatch(/terminating fallback: the node-port path \*:30080 \(externalTrafficPolicy: Local\) kept routing to this pod 500 ms after the cluster IP path dropped it/);
    const refused = a.failures.find((x) => x.cause === 'listener-closed')!;
    expect(refused.path).toEqual({ path: 'cluster-ip', addr: '10.96.0.10:80', policy: 'Cluster' });
    const dropped = a.failures.find((x) => x.service === '10.0.0.1:30080')!;
    expect(dropped.cause).toBe('no-endpoint');
    expect(dropped.path).toEqual({ path: 'node-port', addr: '*:30080', policy: 'Local' });
    expect(dropped.evidence.join('\n')).toMatch(/the Local blackhole: this node drops traffic to \*:30080/);
    const text = renderText(a, f);
    expect(text).toMatch(/paths: cluster-ip 10\.96\.0\.10:80 \(Cluster\) stopped \+2\.500s; node-port \*:30080 \(Local\) stopped \+3\.000s \[terminating fallback\]/);
    expect(text).toMatch(/cause=no-endpoint  path=node-port:\*:30080/);
    const md = renderMarkdown(a);
    expect(md).toContain('| node-port path \\*:30080 (Local) stopped routing — terminating fallback |');
    const html = await renderHtml(a);
    expect(html).toContain('<tr class="route"><td>cluster-ip path 10.96.0.10:80 (Cluster) stopped routing</td>');
    expect(html).toContain('<td>10.0.0.1:30080 (node-port)</td>');
  });
});

describe('import --iptables-save', () => {
  it('turns timestamped iptables-save snapshots into per-path events; refuses an unstamped one in one line', () => {
    const d = mkdtempSync(join(tmpdir(), 'imp-ipt-'));
    dirs.push(d);
    const files = [1, 2, 3].map((i) => { const p = join(d, `snap-${i}.txt`); writeFileSync(p, `1796130280.${i}00000000\n${fx(`ipt-${i}.txt`)}`); return p; });
    const out = join(d, 'ipt.rtb');
    const run = (args: string[]) => spawnSync(process.execPath, [join(ROOT, 'bin/rolltrace.mjs'), ...args], { encoding: 'utf8', timeout: 60_000 });
    const r = run(['import', '--out', out, ...files.flatMap((f) => ['--iptables-save', f])]);
    expect(r.status, r.stderr).toBe(0);
    const tl = run(['timeline', out, '--source', 'import:iptables']);
    expect(tl.stdout).toMatch(/\+0\.100s\s+\[import:iptables\]\s+path-rule-removed\s+service=default\/web:http path=cluster-ip addr=10\.96\.0\.10:80 policy=Cluster endpoint=10\.244\.0\.2:8080/);
    expect(tl.stdout).toMatch(/\+0\.200s\s+\[import:iptables\]\s+path-rule-removed\s+service=default\/web:http path=node-port addr=\*:30080 policy=Local endpoint=10\.244\.0\.2:8080/);
    expect(tl.stdout).toMatch(/\+0\.200s\s+\[import:iptables\]\s+endpoint-rule-removed .*endpoint=10\.244\.0\.2:8080/);
    writeFileSync(join(d, 'bare.txt'), fx('ipt-1.txt'));
    const bad = run(['import', '--out', join(d, 'bad.rtb'), '--iptables-save', join(d, 'bare.txt')]);
    expect(bad.status).toBe(2);
    expect(bad.stderr.trim().split('\n')).toHaveLength(1);
    expect(bad.stderr).toMatch(/--iptables-save .*bare\.txt: the first line must be a timestamp/);
  });

  it('import --nft-monitor of the captured monitor stream gives the same per-path events', () => {
    const d = mkdtempSync(join(tmpdir(), 'imp-nft-'));
    dirs.push(d);
    const out = join(d, 'nft.rtb');
    const run = (args: string[]) => spawnSync(process.execPath, [join(ROOT, 'bin/rolltrace.mjs'), ...args], { encoding: 'utf8', timeout: 60_000 });
    const r = run(['import', '--out', out, '--nft-monitor', join(ROOT, 'fixtures/paths/nft-monitor.ts.log')]);
    expect(r.status, r.stderr).toBe(0);
    const tl = run(['timeline', out, '--source', 'import:nft']).stdout.split('\n');
    const removed = tl.filter((l) => /path-rule-removed/.test(l));
    expect(removed.map((l) => /path=(\S+) addr=(\S+) policy=(\S+) endpoint=(\S+)/.exec(l)!.slice(1).join(' '))).toEqual([
      'cluster-ip 10.96.0.10:80 Cluster 10.244.0.2:8080', 'node-port *:30080 Local 10.244.0.2:8080',
    ]);
    // the cluster IP path lost it one sync before the endpoint left every path
    const firstAny = tl.findIndex((l) => /endpoint-rule-removed .*10\.244\.0\.2:8080/.test(l));
    expect(tl.findIndex((l) => /path-rule-removed .*path=cluster-ip/.test(l))).toBeLessThan(firstAny);
  });
});
