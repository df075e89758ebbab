import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { verifyBundle } from '../analyzer/commands/verify.js';
import { startApiServer, Store, type ApiServer } from '../lab/apiserver/index.js';
import { writeKubeconfig } from '../lab/kubeconfig.js';

const BIN = new URL('../bin/rolltrace.mjs', import.meta.url).pathname;
const NS = `rec-record-${Math.random().toString(36).slice(2, 8)}`;
let dir: string;
let api: ApiServer;
let store: Store;
let web: http.Server;
let webPort = 0;
let kubeconfig: string;
let ticker: NodeJS.Timeout;
const children: ChildProcess[] = [];

function run(args: string[]): { child: ChildProcess; done: Promise<{ code: number | null; signal: string | null; stderr: string }>; stderr: () => string } {
  const child = spawn(process.execPath, [BIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(child);
  let err = '';
  child.stderr!.on('data', (d) => { err += d; });
  child.stdout!.resume();
  const done = new Promise<{ code: number | null; signal: string | null; stderr: string }>((resolve) => {
    child.on('exit', (code, signal) => resolve({ code, signal, stderr: err }));
  });
  return { child, done, stderr: () => err };
}

const baseArgs = (out: string) => [
  'record', '--out', out, '--no-packets', '--no-strace', '--no-ebpf', '--no-nft', '--no-conntrack',
  '--kubeconfig', kubeconfig, '--namespace', NS, '--deployment', 'web', '--probe', `http://127.0.0.1:${webPort}/`, '--rate', '20',
];

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'rec-record-'));
  store = new Store({ nodeName: 'rec-record-node' });
  api = await startApiServer(store, { host: '127.0.0.1', port: 0 });
  kubeconfig = writeKubeconfig(join(dir, 'kubeconfig'), api.url);
  store.create('namespaces', { metadata: { name: NS } });
  store.create('deployments', {
    metadata: { name: 'web', namespace: NS },
    spec: { replicas: 1, selector: { matchLabels: { app: 'web' } }, template: { metadata: { labels: { app: 'web' } }, spec: { containers: [{ name: 'c', image: 'x' }] } } },
  }, NS);
  store.create('pods', { metadata: { name: 'web-a', namespace: NS, labels: { app: 'web' } }, spec: { containers: [{ name: 'c', image: 'x' }] }, status: { podIP: '10.1.0.5', conditions: [{ type: 'Ready', status: 'True' }] } }, NS);
  let n = 0;
  ticker = setInterval(() => store.mutate('pods', NS, 'web-a', (p) => { p.metadata.labels.tick = String(n++); }), 300);
  web = http.createServer((_q, r) => r.end('ok'));
  await new Promise<void>((r) => web.listen(0, '127.0.0.1', () => r()));
  webPort = (web.address() as AddressInfo).port;
});

afterAll(async () => {
  clearInterval(ticker);
  for (const c of children) if (c.exitCode === null && c.signalCode === null && c.pid) { try { process.kill(c.pid, 'SIGKILL'); } catch { /* gone */ } }
  await new Promise<void>((r) => web.close(() => r()));
  await api.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('rolltrace record end-to-end (kube + probe against the lab API server)', () => {
  it('records for --duration into a bundle verify accepts, with a sources row for every source', async () => {
    const out = join(dir, 'ok.rtb');
    const r = await run([...baseArgs(out), '--duration', '3']).done;
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toContain(`next: rolltrace analyze ${out}`);
    expect(r.stderr).toMatch(/kube\s+record/);
    const v = await verifyBundle(out);
    expect(v.valid).toBe(true);
    expect(v.closedCleanly).toBe(true);
    const byName = Object.fromEntries(v.sources.map((s) => [s.name, s]));
    expect(Object.keys(byName).sort()).toEqual(['conntrack', 'ebpf', 'kube', 'nftables', 'packets', 'probe', 'rollout', 'strace']);
    for (const n of ['packets', 'strace', 'ebpf', 'nftables', 'conntrack', 'rollout']) expect(byName[n]!.status).toBe('disabled');
    expect(byName.kube).toMatchObject({ status: 'ok', clock: 'receipt' });
    expect(byName.probe).toMatchObject({ status: 'ok', clock: 'receipt' });
    expect(v.tables.k8s_objects).toBeGreaterThanOrEqual(4);
    expect(v.tables.probe_requests).toBeGreaterThan(10);
    const db = new Database(out, { readonly: true });
    try {
      const meta = Object.fromEntries((db.prepare('select key, value from meta').all() as Array<{ key: string; value: string }>).map((m) => [m.key, m.value]));
      expect(JSON.parse(meta.argv!)).toContain('--deployment');
      expect(JSON.parse(meta.receipt_stamped_sources!).sort()).toEqual(['kube', 'probe']);
      expect(JSON.parse(meta.tool_versions!)).toMatchObject({ 'kube-apiserver': expect.any(String) });
      expect(Number(meta.ended_ns) - Number(meta.started_ns)).toBeGreaterThan(2.5e9);
      expect(meta.kernel).toBeTruthy();
      const probe = db.prepare("select count(*) n, sum(outcome = 'ok') ok, min(local_port) lo from probe_requests").get() as { n: number; ok: number; lo: number };
      expect(probe.ok).toBe(probe.n);
      expect(probe.lo).toBeGreaterThanOrEqual(20000);
      const kinds = (db.prepare("select distinct kind from k8s_objects where event_type = 'LIST' order by kind").all() as Array<{ kind: string }>).map((x) => x.kind);
      // the API server's /version is recorded as a one-off LIST row of kind Version (the recommendation reads it)
      expect(kinds).toEqual(['Deployment', 'Pod', 'Version']);
      const mods = db.prepare("select count(*) n from k8s_objects where event_type = 'MODIFIED' and kind = 'Pod'").get() as { n: number };
      expect(mods.n).toBeGreaterThan(3);
    } finally {
      db.close();
    }
  }, 50_000);

  it('SIGKILL at a random instant still leaves a bundle verify accepts (crashed close)', async () => {
    const out = join(dir, 'killed.rtb');
    const p = run([...baseArgs(out), '--duration', '60']);
    const t0 = Date.now();
    while (!/recording/.test(p.stderr())) {
      if (Date.now() - t0 > 30_000 || p.child.exitCode !== null) throw new Error(`recorder did not start: ${p.stderr()}`);
      await new Promise((r) => setTimeout(r, 50));
    }
    await new Promise((r) => setTimeout(r, 300 + Math.floor(Math.random() * 1500)));
    process.kill(p.child.pid!, 'SIGKILL');
    const r = await p.done;
    expect(r.signal).toBe('SIGKILL');
    expect(existsSync(out)).toBe(true);
    const v = await verifyBundle(out);
    expect(v.valid).toBe(true);
    expect(v.closedCleanly).toBe(false);
    expect(v.sources.find((s) => s.name === 'kube')!.status).toBe('running');
    expect(v.tables.k8s_objects).toBeGreaterThanOrEqual(2);
  }, 50_000);

  it('--restart without --deployment is a one-line usage error (exit 2), nothing written', async () => {
    const out = join(dir, 'usage.rtb');
    const r = await run(['record', '--out', out, '--restart', '--no-packets']).done;
    expect(r.code).toBe(2);
    expect(r.stderr.trim()).toBe('rolltrace: --restart needs --deployment NAME');
    expect(existsSync(out)).toBe(false);
    const bad = await run(['record', '--out', out, '--probe', 'not a url', '--no-packets']).done;
    expect(bad.code).toBe(2);
    expect(bad.stderr.trim()).toBe('rolltrace: --probe "not a url" is not a URL (want http://HOST[:PORT]/PATH)');
    expect(existsSync(out)).toBe(false);
  }, 30_000);
});
