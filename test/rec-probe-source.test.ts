import http from 'node:http';
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Prober } from '../recorder/sources/probe/index.js';
import { classifyError, parseProbeUrl, PortRotator, slotDueMs } from '../recorder/sources/probe/probe.js';
import type { ProbeRequestRow } from '../schemas/rows.js';

const servers: Array<http.Server | net.Server> = [];
function listen<T extends http.Server | net.Server>(s: T): Promise<number> {
  servers.push(s);
  return new Promise((resolve) => s.listen(0, '127.0.0.1', () => resolve((s.address() as net.AddressInfo).port)));
}

async function probeFor(url: string, n: number, extra: Partial<ConstructorParameters<typeof Prober>[0]> = {}): Promise<ProbeRequestRow[]> {
  const rows: ProbeRequestRow[] = [];
  let resolveN!: () => void;
  const got = new Promise<void>((r) => { resolveN = r; });
  const p = new Prober({ url, rate: 40, concurrency: 2, keepalive: false, timeoutMs: 1000, ...extra }, (r) => {
    rows.push(r);
    if (rows.length >= n) resolveN();
  });
  await p.resolve();
  p.start();
  await got;
  await p.stop();
  return rows;
}

let okPort = 0, closedPort = 0, eofPort = 0, rstPort = 0, hangPort = 0;
const hanging: net.Socket[] = [];

beforeAll(async () => {
  okPort = await listen(http.createServer((req, res) => { res.writeHead(204); res.end(); }));
  const tmp = net.createServer();
  closedPort = await listen(tmp);
  await new Promise<void>((r) => tmp.close(() => r()));
  servers.splice(servers.indexOf(tmp), 1);
  eofPort = await listen(net.createServer((s) => { s.once('data', () => s.end()); }));
  rstPort = await listen(net.createServer((s) => { s.once('data', () => s.resetAndDestroy()); }));
  hangPort = await listen(net.createServer((s) => { hanging.push(s); s.on('error', () => undefined); }));
});

afterAll(async () => {
  for (const s of hanging) s.destroy();
  await Promise.all(servers.map((s) => new Promise<void>((r) => s.close(() => r()))));
});

describe('probe source against local servers', () => {
  it('records ok rows with status, local address and the bound local port', async () => {
    const rows = await probeFor(`http://127.0.0.1:${okPort}/healthz`, 8);
    expect(rows.length).toBeGreaterThanOrEqual(8);
    for (const r of rows) {
      expect(r).toMatchObject({ outcome: 'ok', status: 204, error: null, local_addr: '127.0.0.1', remote: `127.0.0.1:${okPort}` });
      expect(r.local_port).toBeGreaterThanOrEqual(20000);
      expect(r.local_port).toBeLessThanOrEqual(29999);
      expect(r.end_ns!).toBeGreaterThanOrEqual(r.start_ns);
    }
    expect(new Set(rows.map((r) => r.local_port)).size).toBe(rows.length);
    // realtime epoch ns
    expect(Math.abs(rows[0]!.start_ns / 1e6 - Date.now())).toBeLessThan(60_000);
  });

  it('records ECONNREFUSED with the local port it bound', async () => {
    const rows = await probeFor(`http://127.0.0.1:${closedPort}/`, 5);
    for (const r of rows) {
      expect(r).toMatchObject({ outcome: 'error', error: 'ECONNREFUSED', status: null, local_addr: '127.0.0.1' });
      expect(r.local_port).toBeGreaterThanOrEqual(20000);
    }
  });

  it('tells EOF (FIN before a response) from ECONNRESET (RST)', async () => {
    const eof = await probeFor(`http://127.0.0.1:${eofPort}/`, 3);
    expect(eof.map((r) => r.error)).toEqual(eof.map(() => 'EOF'));
    const rst = await probeFor(`http://127.0.0.1:${rstPort}/`, 3);
    expect(rst.map((r) => r.error)).toEqual(rst.map(() => 'ECONNRESET'));
  });

  it('times out a request that gets no response', async () => {
    const rows = await probeFor(`http://127.0.0.1:${hangPort}/`, 1, { timeoutMs: 200, rate: 5, concurrency: 1 });
    expect(rows[0]).toMatchObject({ outcome: 'timeout', error: 'ETIMEDOUT', status: null });
    expect(rows[0]!.local_port).toBeGreaterThanOrEqual(20000);
  });

  it('reuses the connection with --keepalive', async () => {
    const rows = await probeFor(`http://127.0.0.1:${okPort}/`, 6, { keepalive: true, concurrency: 1 });
    expect(rows.every((r) => r.outcome === 'ok')).toBe(true);
    expect(new Set(rows.map((r) => r.local_port)).size).toBeLessThan(rows.length);
  });
});

describe('probe pure helpers', () => {
  it('parses URLs', () => {
    expect(parseProbeUrl('http://10.96.0.10/x?y=1')).toMatchObject({ host: '10.96.0.10', port: 80, path: '/x?y=1' });
    expect(parseProbeUrl('https://[fd00::1]:8443/')).toMatchObject({ host: 'fd00::1', port: 8443, protocol: 'https:' });
    expect(() => parseProbeUrl('ftp://x')).toThrow(/only http/);
    expect(() => parseProbeUrl('nope')).toThrow(/not a URL/);
  });
  it('keeps a fixed schedule', () => {
    expect([0, 1, 2, 10].map((i) => slotDueMs(i, 10))).toEqual([0, 100, 200, 1000]);
  });
  it('rotates ports and skips ports in use', () => {
    const r = new PortRotator(100, 103, 102);
    expect([r.take(new Set()), r.take(new Set([103])), r.take(new Set())]).toEqual([102, 100, 101]);
    expect(() => new PortRotator(1, 2).take(new Set([1, 2]))).toThrow(/no free local port/);
  });
  it('classifies errors', () => {
    expect(classifyError(Object.assign(new Error('socket hang up'), { code: 'ECONNRESET' }), false)).toEqual({ outcome: 'error', error: 'EOF' });
    expect(classifyError(Object.assign(new Error('read ECONNRESET'), { code: 'ECONNRESET', syscall: 'read' }), false)).toEqual({ outcome: 'error', error: 'ECONNRESET' });
    expect(classifyError(Object.assign(new Error('x'), { code: 'EHOSTUNREACH', syscall: 'connect' }), false)).toEqual({ outcome: 'error', error: 'EHOSTUNREACH' });
    expect(classifyError(new Error('whatever'), true)).toEqual({ outcome: 'timeout', error: 'ETIMEDOUT' });
  });
});
