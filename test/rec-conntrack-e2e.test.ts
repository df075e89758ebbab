/**
 * End to end, as root, in a throwaway network namespace: the conntrack source through the Source
 * interface records an accepted and a refused connection through nftables DNAT (service VIP ->
 * backend), with the backend as reply_src.
 */
import { execFile, execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { afterAll, describe, expect, it } from 'vitest';
import type { Sink } from '../recorder/bundle-writer.js';
import type { RecordContext, RecordOptions } from '../recorder/source.js';
import { create } from '../recorder/sources/conntrack/index.js';
import type { ConntrackRow } from '../schemas/rows.js';

const ns = `recct-e2e-${randomBytes(3).toString('hex')}`;
const procs: ChildProcess[] = [];
const X = (...argv: string[]) => execFileSync('ip', ['netns', 'exec', ns, ...argv], { stdio: ['ignore', 'pipe', 'pipe'] });

afterAll(() => {
  for (const p of procs) if (p.pid && p.exitCode === null) { try { process.kill(p.pid, 'SIGKILL'); } catch { /* gone */ } }
  try { execFileSync('ip', ['netns', 'del', ns]); } catch { /* gone */ }
});

class MemSink implements Sink {
  rows: ConntrackRow[] = [];
  drops = 0;
  event() {}
  packet() {}
  conntrack(c: ConntrackRow) { this.rows.push(c); }
  k8sObject() {}
  nftSnapshot() {}
  probeRequest() {}
  dropped(_s: string, n: number) { this.drops += n; }
}

const opts = { out: '/dev/null', namespace: 'default', iface: [], snaplen: 128, rate: 1, concurrency: 1, settle: 0 } as unknown as RecordOptions;
const ctx: RecordContext = { opts, pods: new Map(), onPodsChanged() {}, podsChanged() {}, requestStop() {}, log() {} };
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const CLIENT = `
import socket, sys
for dst in [('10.96.0.10', 80), ('10.96.0.20', 80)]:
    s = socket.socket()
    s.bind(('10.244.0.5', 0))
    port = s.getsockname()[1]
    try:
        s.connect(dst); s.sendall(b'hi'); s.recv(10); print(port, 'ok')
    except ConnectionRefusedError:
        print(port, 'refused')
    s.close()
`;
const SERVER = `
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(('10.244.0.5', 8080)); s.listen(8); print('ready', flush=True)
while True:
    c, _ = s.accept(); c.recv(10); c.sendall(b'ok'); c.close()
`;

describe('conntrack source, real DNAT in a netns', () => {
  it('an accepted and a refused connection yield rows with the backend as reply_src', async () => {
    execFileSync('ip', ['netns', 'add', ns]);
    X('ip', 'link', 'set', 'lo', 'up');
    X('ip', 'link', 'add', 'rct0', 'type', 'veth', 'peer', 'name', 'rct1');
    X('ip', 'link', 'set', 'rct0', 'up');
    X('ip', 'link', 'set', 'rct1', 'up');
    X('ip', 'addr', 'add', '10.244.0.5/32', 'dev', 'rct0');
    X('ip', 'addr', 'add', '10.244.0.6/32', 'dev', 'rct0');
    X('ip', 'route', 'add', '10.96.0.0/16', 'dev', 'rct0'); // the VIPs need a route (output NAT runs after routing)
    execFileSync('ip', ['netns', 'exec', ns, 'nft', '-f', '-'], {
      input: `table ip rtct {
  chain out {
    type nat hook output priority -100; policy accept;
    ip daddr 10.96.0.10 tcp dport 80 dnat to 10.244.0.5:8080
    ip daddr 10.96.0.20 tcp dport 80 dnat to 10.244.0.6:8081
  }
}
`,
    });
    const server = spawn('ip', ['netns', 'exec', ns, 'python3', '-u', '-c', SERVER], { stdio: ['ignore', 'pipe', 'ignore'] });
    procs.push(server);
    await new Promise<void>((resolve) => server.stdout!.once('data', () => resolve()));

    const src = create(opts, { exec: ['ip', 'netns', 'exec', ns] });
    const pf = await src.preflight(ctx);
    expect(pf.ok).toBe(true);
    const sink = new MemSink();
    await src.start(sink, ctx);
    const before = Date.now() * 1e6;
    const out = await new Promise<string>((resolve, reject) =>
      execFile('ip', ['netns', 'exec', ns, 'python3', '-c', CLIENT], (e, so) => (e ? reject(e) : resolve(so))));
    const after = (Date.now() + 1) * 1e6;
    await sleep(200);
    await src.stop();

    const [ok, refused] = out.trim().split('\n').map((l) => l.split(' '));
    expect(ok![1]).toBe('ok');
    expect(refused![1]).toBe('refused');
    const okPort = Number(ok![0]);
    const refPort = Number(refused![0]);

    const okRows = sink.rows.filter((r) => r.orig_sport === okPort && r.orig_dst === '10.96.0.10');
    expect(okRows[0]).toMatchObject({ type: 'NEW', proto: 'tcp', orig_src: '10.244.0.5', orig_dport: 80, reply_src: '10.244.0.5', reply_sport: 8080 });
    expect(okRows.some((r) => r.type === 'UPDATE' && r.state === 'ESTABLISHED')).toBe(true);

    const refRows = sink.rows.filter((r) => r.orig_sport === refPort && r.orig_dst === '10.96.0.20');
    expect(refRows.map((r) => r.type)).toEqual(['NEW', 'DESTROY']);
    expect(refRows.every((r) => r.reply_src === '10.244.0.6' && r.reply_sport === 8081 && (r.flags ?? '').includes('UNREPLIED'))).toBe(true);

    for (const r of [...okRows, ...refRows]) {
      expect(r.ts_ns).toBeGreaterThanOrEqual(before);
      expect(r.ts_ns).toBeLessThanOrEqual(after);
    }
    expect(sink.drops).toBe(0);
    expect(src.stats().events).toBe(sink.rows.length);
  }, 30_000);
});
