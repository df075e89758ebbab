/**
 * End to end, as root: `rolltrace record --netns /run/netns/X` (the real CLI) reads kube-proxy's rules
 * and conntrack of a network namespace it is not in. The test makes its own namespace (unique prefix,
 * removed in afterAll) holding a kube-proxy-shaped nftables table and local addresses for a client, a
 * service VIP and a backend; while recording it removes one endpoint (the whole-table transaction
 * kube-proxy writes) and a client connects to the VIP (DNATed to the backend, refused). Traffic stays
 * inside that namespace. The same steps recorded without --netns read the host: no trace of either.
 */
import { execFile, execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { EndpointRuleAttrs } from '../schemas/events.js';

const BIN = new URL('../bin/rolltrace.mjs', import.meta.url).pathname;
const hex = randomBytes(3).toString('hex');
const NS = `rtnse2e-${hex}`;
/** the Kubernetes namespace of the fixture's services, unique to this run */
const KNS = `rtns${hex}`;
/** the client's address, unique to this run (198.18.0.0/15: benchmarking range) */
const CLIENT = `198.18.${parseInt(hex.slice(0, 2), 16)}.${(parseInt(hex.slice(2, 4), 16) % 250) + 2}`;
const dir = mkdtempSync(join(tmpdir(), 'rtnse2e-'));
const children: ChildProcess[] = [];
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** the nft fixtures with the services moved to this run's namespace */
function fixture(name: string): string {
  const p = join(dir, name);
  const text = readFileSync(new URL(`../fixtures/nft/${name}`, import.meta.url), 'utf8').replaceAll('default/', `${KNS}/`);
  writeFileSync(p, text);
  return p;
}
const X = (...argv: string[]) => execFileSync('ip', ['netns', 'exec', NS, ...argv], { stdio: ['ignore', 'pipe', 'pipe'] });
const XAsync = (script: string) => new Promise<string>((resolve, reject) => {
  execFile('ip', ['netns', 'exec', NS, 'sh', '-c', script], (e, so) => (e ? reject(e) : resolve(so)));
});
const CONNECT = `
import socket
s = socket.socket(); s.bind(('${CLIENT}', 0)); p = s.getsockname()[1]
try:
    s.connect(('10.96.0.10', 80)); print(p, 'ok')
except ConnectionRefusedError:
    print(p, 'refused')
`;

let before = '';
let after = '';

beforeAll(() => {
  execFileSync('ip', ['netns', 'add', NS]);
  X('ip', 'link', 'set', 'lo', 'up');
  // client, VIP and backend are local addresses (of a veth, both ends inside: the node's own addresses, unlike lo's):
  // the VIP is DNATed by kube-proxy's nat-output chain to the backend, where nothing listens (refused:
  // NEW then DESTROY in conntrack)
  X('ip', 'link', 'add', 'rtd0', 'type', 'veth', 'peer', 'name', 'rtd1');
  X('ip', 'link', 'set', 'rtd0', 'up');
  X('ip', 'link', 'set', 'rtd1', 'up');
  for (const a of [CLIENT, '10.96.0.10', '10.244.0.5']) X('ip', 'addr', 'add', `${a}/32`, 'dev', 'rtd0');
  before = fixture('whole-before.nft');
  after = fixture('whole-after.nft');
});

afterAll(() => {
  for (const c of children) if (c.pid && c.exitCode === null && c.signalCode === null) { try { process.kill(c.pid, 'SIGKILL'); } catch { /* gone */ } }
  try { execFileSync('ip', ['netns', 'del', NS]); } catch { /* gone */ }
  rmSync(dir, { recursive: true, force: true });
});

interface Run {
  code: number | null; stderr: string; out: string;
  /** realtime ns just before the rule change started and just after it ended */
  changeFrom: number; changeTo: number;
  port: number;
}

/** Record 4 s; once recording, swap the ruleset (one endpoint of KNS/web removed) and connect to the VIP. */
async function recordChange(extra: string[]): Promise<Run> {
  X('nft', '-f', before);
  const out = join(dir, `r-${randomBytes(3).toString('hex')}.rtb`);
  const child = spawn(process.execPath, [BIN, 'record', '--out', out, '--no-kube', '--no-packets', '--no-strace', '--no-ebpf', '--duration', '4', '--quiet', ...extra], { stdio: ['ignore', 'ignore', 'pipe'] });
  children.push(child);
  let stderr = '';
  child.stderr!.on('data', (d) => { stderr += d; });
  const exited = new Promise<number | null>((r) => child.on('exit', (c) => r(c)));
  for (let i = 0; i < 200 && !/^recording/m.test(stderr) && child.exitCode === null; i++) await sleep(50);
  expect(stderr).toMatch(/^recording/m);
  await sleep(300);
  const changeFrom = Date.now() * 1e6;
  // the shell lingers 50 ms after nft so the monitor line has reached the recorder before changeTo
  await XAsync(`nft -f '${after}' && sleep 0.05`);
  const changeTo = (Date.now() + 1) * 1e6;
  const res = (await XAsync(`python3 -c "${CONNECT}"`)).trim().split(' ');
  expect(res[1]).toBe('refused');
  return { code: await exited, stderr, out, changeFrom, changeTo, port: Number(res[0]) };
}

function read(out: string) {
  const db = new Database(out, { readonly: true });
  try {
    const meta = Object.fromEntries((db.prepare('SELECT key, value FROM meta').all() as Array<{ key: string; value: string }>).map((r) => [r.key, r.value]));
    const sources = Object.fromEntries((db.prepare('SELECT name, status, detail FROM sources').all() as Array<{ name: string; status: string; detail: string }>).map((r) => [r.name, r]));
    const events = (db.prepare("SELECT ts_ns, kind, attrs FROM events WHERE source = 'nftables'").all() as Array<{ ts_ns: number; kind: string; attrs: string }>)
      .map((e) => ({ ...e, attrs: JSON.parse(e.attrs) as Record<string, unknown> }));
    const ct = db.prepare('SELECT ts_ns, type, orig_src, orig_dst, orig_sport, orig_dport, reply_src, reply_sport FROM conntrack WHERE orig_src = ?').all(CLIENT) as Array<Record<string, string | number>>;
    return { meta, sources, events, ct };
  } finally {
    db.close();
  }
}

const ours = (e: { kind: string; attrs: Record<string, unknown> }) => /^endpoint-rule-/.test(e.kind) && String((e.attrs as unknown as EndpointRuleAttrs).service).startsWith(`${KNS}/`);

describe('record --netns: nftables and conntrack of another network namespace', () => {
  it('records that namespace\'s endpoint removal (stamped on receipt) and its conntrack flow; packets etc. stay on the host', async () => {
    const r = await recordChange(['--netns', `/run/netns/${NS}`]);
    expect(r.code).toBe(0);
    const inode = statSync(`/run/netns/${NS}`).ino;
    expect(r.stderr).toContain(`network namespace: nftables, conntrack read /run/netns/${NS} (net:[${inode}]); packets, strace, ebpf, kube, probe see the recorder's own`);
    const b = read(r.out);

    expect(JSON.parse(b.meta.netns!)).toEqual({ arg: `/run/netns/${NS}`, path: `/run/netns/${NS}`, inode, own: false, sources: ['nftables', 'conntrack'] });
    for (const s of ['nftables', 'conntrack']) {
      expect(b.sources[s]!.status).toBe('ok');
      expect(b.sources[s]!.detail).toContain(`in network namespace /run/netns/${NS} (net:[${inode}]) through nsenter --net`);
    }
    expect(b.sources.packets!.status).toBe('disabled');
    // the namespace's own addresses are the node's
    expect([...Object.values(JSON.parse(b.meta.node_addrs!) as Record<string, string[]>)[0]!].sort()).toEqual([CLIENT, '10.96.0.10', '10.244.0.5'].sort());

    // the endpoint 10.244.0.6 of KNS/web removed, once, stamped within the change: nft's monitor lines
    // reach the recorder as nft writes them (nsenter execs nft: no process and no buffer in between)
    const removed = b.events.filter((e) => ours(e) && e.kind === 'endpoint-rule-removed');
    expect(removed.map((e) => [e.attrs.service, e.attrs.endpoint])).toEqual([[`${KNS}/web:http`, '10.244.0.6:8080']]);
    const changed = b.events.filter((e) => e.kind === 'rules-changed' && e.ts_ns >= r.changeFrom);
    expect(changed.length).toBeGreaterThanOrEqual(1);
    for (const e of [removed[0]!, changed[0]!]) {
      expect(e.ts_ns).toBeGreaterThanOrEqual(r.changeFrom);
      expect(e.ts_ns).toBeLessThanOrEqual(r.changeTo);
    }
    expect(b.events.some((e) => ours(e) && e.kind === 'endpoint-rule-added')).toBe(false);

    // the client's refused connection: VIP DNATed to the backend, NEW then DESTROY, from that namespace's conntrack
    const flow = b.ct.filter((c) => c.orig_sport === r.port);
    expect(flow.map((c) => c.type)).toEqual(['NEW', 'DESTROY']);
    for (const c of flow) expect(c).toMatchObject({ orig_dst: '10.96.0.10', orig_dport: 80, reply_src: '10.244.0.5', reply_sport: 8080 });
  }, 60_000);

  it('without --netns the host\'s rules and conntrack are read: neither the removal nor the flow is there', async () => {
    const r = await recordChange([]);
    expect(r.code).toBe(0);
    expect(r.stderr).not.toMatch(/network namespace:/);
    const b = read(r.out);
    expect(b.meta.netns).toBeUndefined();
    expect(b.sources.nftables!.status).toBe('ok');
    expect(b.sources.nftables!.detail).not.toContain('network namespace');
    expect(b.events.filter(ours)).toEqual([]);
    expect(b.ct).toEqual([]);
  }, 60_000);
});
