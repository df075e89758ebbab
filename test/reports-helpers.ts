/**
 * Test helpers for the reports area: a small race-like bundle written with the real BundleWriter
 * (real Ethernet/IPv4/TCP frames with valid checksums), the Analysis that bundle implies, and a
 * headless-Chromium screenshot helper usable on any HTML report.
 */
import { execFileSync } from 'node:child_process';
import { closeSync, copyFileSync, mkdtempSync, openSync, readFileSync, rmSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PNG } from 'pngjs';
import Database from 'better-sqlite3';
import { BundleWriter } from '../recorder/bundle-writer.js';
import { ev } from '../schemas/events.js';
import { isoFromNs, type Analysis } from '../schemas/analysis.js';
import { TCP, type PacketRow } from '../schemas/rows.js';

function csum(buf: Uint8Array, init = 0): number {
  let s = init;
  for (let i = 0; i + 1 < buf.length; i += 2) s += (buf[i]! << 8) | buf[i + 1]!;
  if (buf.length % 2) s += buf[buf.length - 1]! << 8;
  while (s >> 16) s = (s & 0xffff) + (s >> 16);
  return s;
}
const ip4 = (s: string) => s.split('.').map(Number);

/** Ethernet + IPv4 + TCP (+ payload) with valid checksums. */
export function tcpFrame(src: string, sport: number, dst: string, dport: number, flags: number, seq: number, ack: number, payload = ''): Uint8Array {
  const pl = Buffer.from(payload);
  const tcpLen = 20 + pl.length;
  const b = Buffer.alloc(14 + 20 + tcpLen);
  Buffer.from([0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1]).copy(b, 0);
  b.writeUInt16BE(0x0800, 12);
  const ip = 14;
  b[ip] = 0x45; b.writeUInt16BE(20 + tcpLen, ip + 2); b.writeUInt16BE(0x1234, ip + 4); b[ip + 6] = 0x40;
  b[ip + 8] = 64; b[ip + 9] = 6;
  Buffer.from(ip4(src)).copy(b, ip + 12); Buffer.from(ip4(dst)).copy(b, ip + 16);
  b.writeUInt16BE(~csum(b.subarray(ip, ip + 20)) & 0xffff, ip + 10);
  const t = ip + 20;
  b.writeUInt16BE(sport, t); b.writeUInt16BE(dport, t + 2); b.writeUInt32BE(seq >>> 0, t + 4); b.writeUInt32BE(ack >>> 0, t + 8);
  b[t + 12] = 5 << 4; b[t + 13] = flags; b.writeUInt16BE(64240, t + 14);
  pl.copy(b, t + 20);
  const pseudo = Buffer.alloc(12);
  Buffer.from(ip4(src)).copy(pseudo, 0); Buffer.from(ip4(dst)).copy(pseudo, 4); pseudo[9] = 6; pseudo.writeUInt16BE(tcpLen, 10);
  b.writeUInt16BE(~csum(b.subarray(t), csum(pseudo)) & 0xffff, t + 16);
  return new Uint8Array(b);
}

export function tcpPacket(ts_ns: number, iface: string, src: string, sport: number, dst: string, dport: number, flags: number, payload = ''): PacketRow {
  const data = tcpFrame(src, sport, dst, dport, flags, 1000, flags & TCP.ACK ? 2000 : 0, payload);
  return {
    ts_ns, iface, linktype: 1, caplen: data.length, len: data.length, l3: 'ip4', src, dst, proto: 'tcp', sport, dport,
    tcp_flags: flags, seq: 1000, ack: flags & TCP.ACK ? 2000 : 0, payload_len: payload.length, icmp_type: null, icmp_code: null,
    inner_src: null, inner_dst: null, inner_proto: null, inner_sport: null, inner_dport: null, data,
  };
}

export interface RaceOpts {
  node?: string;
  podName?: string;
  namespace?: string;
  /** added to every timestamp (simulates another node's clock) */
  skewNs?: number;
  /** per-node API receive delay added to k8s rows only */
  apiDelayNs?: number;
  /** ms after T0 at which this node removes the rule */
  ruleRemovedMs?: number;
  /** write probe/packets (the client node); other nodes only see API + rules */
  withTraffic?: boolean;
  /** this node runs the pod (strace events); other nodes only see API + rules */
  hostsPod?: boolean;
  t0?: number;
}

export const RACE = {
  t0: 1_763_700_000_000_000_000,
  podIp: '10.244.0.5',
  clientIp: '10.244.0.100',
  vip: '10.96.0.10',
  secret: 'hunter2-SeCrEt-value',
  token: 'tok-abcdef-123456',
};

/** A bundle where pod web-abc closes its listener 30 ms after deletion and the rule goes 200 ms later. */
export function writeRaceBundle(path: string, o: RaceOpts = {}): { t0: number; failuresAtMs: number[] } {
  const node = o.node ?? 'node-a';
  const pod = o.podName ?? 'web-abc';
  const nsName = o.namespace ?? 'shop';
  const skew = o.skewNs ?? 0;
  const api = o.apiDelayNs ?? 0;
  const t0 = o.t0 ?? RACE.t0;
  const T = (ms: number) => t0 + ms * 1e6 + skew;
  const w = new BundleWriter(path, { createdBy: 'test' });
  w.setMeta('node', node);
  w.setMeta('hostname', node);
  w.setMeta('started_ns', String(T(0)));
  w.setMeta('argv', JSON.stringify(['record', '--out', 'x.rtb', '--probe', `http://${RACE.vip}/healthz?token=${RACE.token}`]));
  for (const [n, clock] of [['packets', 'kernel'], ['strace', 'kernel'], ['nftables', 'receipt'], ['kube', 'receipt'], ['probe', 'kernel'], ['conntrack', 'kernel']] as const) {
    w.setSource(n, { status: 'ok', clock, detail: n === 'probe' ? `probing http://${RACE.vip}/healthz?token=${RACE.token}` : null });
  }
  const ip = RACE.podIp;
  const podNode = 'node-a'; // the pod runs on node-a; API objects are the same whichever node receives them
  const apiTs = (ms: number) => isoFromNs(t0 + ms * 1e6)!; // API server's own instants (not this node's clock)
  const ref = { namespace: nsName, name: pod, uid: 'uid-1111', ip, node: podNode };
  const uid = 'uid-1111';
  const podObj = (rv: string, extra: Record<string, unknown> = {}) => JSON.stringify({
    apiVersion: 'v1', kind: 'Pod',
    metadata: {
      name: pod, namespace: nsName, uid, resourceVersion: rv, labels: { app: 'web', team: 'payments' },
      annotations: { 'kubectl.kubernetes.io/last-applied-configuration': `{"env":"${RACE.secret}"}`, 'example.com/api-token': RACE.token },
      managedFields: [{ manager: 'kubectl', fieldsV1: { 'f:metadata': {} } }], ...extra,
    },
    spec: { nodeName: podNode, containers: [{ name: 'app', image: 'web:1', command: ['/app', '--password', RACE.secret], env: [{ name: 'DB_PASSWORD', value: RACE.secret }, { name: 'MODE', value: 'prod' }] }] },
    status: { podIP: ip, phase: 'Running' },
  });
  const k8s = (ms: number, kind: string, name: string, rv: string, type: 'ADDED' | 'MODIFIED' | 'DELETED', object: string) =>
    w.k8sObject({ ts_ns: T(ms) + api, kind, namespace: nsName, name, uid: kind === 'Pod' ? uid : `uid-${kind}`, resource_version: rv, event_type: type, object });
  k8s(-500, 'Pod', pod, '100', 'ADDED', podObj('100'));
  k8s(-400, 'Secret', 'db-creds', '101', 'ADDED', JSON.stringify({ kind: 'Secret', metadata: { name: 'db-creds', namespace: nsName }, data: { password: Buffer.from(RACE.secret).toString('base64') } }));
  k8s(1000, 'Pod', pod, '200', 'MODIFIED', podObj('200', { deletionTimestamp: apiTs(1000) }));
  const slice = (rv: string, terminating: boolean) => JSON.stringify({ kind: 'EndpointSlice', metadata: { name: 'web-x1', namespace: nsName, resourceVersion: rv, labels: { 'kubernetes.io/service-name': 'web' } }, endpoints: [{ addresses: [ip], conditions: { ready: !terminating, serving: true, terminating }, targetRef: { kind: 'Pod', name: pod, namespace: nsName } }] });
  k8s(1030, 'EndpointSlice', 'web-x1', '201', 'MODIFIED', slice('201', true));
  k8s(1400, 'EndpointSlice', 'web-x1', '202', 'MODIFIED', slice('202', true));
  k8s(1500, 'Pod', pod, '203', 'DELETED', podObj('203'));

  w.event(ev('endpoint-rule-added', T(-600), 'nftables', `${ip}:8080`, { service: `${nsName}/web:http`, vip: `${RACE.vip}:80`, endpoint: `${ip}:8080`, ip, port: 8080, chain: `endpoint-ABCD-${nsName}/web/tcp/http__${ip}/8080`, mode: 'nftables' }));
  if (o.hostsPod !== false) w.event(ev('process-attached', T(-550), 'strace', 'pid:4242', { pid: 4242, comm: 'app', cmdline: `/app --password ${RACE.secret} --port 8080`, addrs: [ip], pod_uid: uid }));
  w.event(ev('pod-terminating', T(1000) + api, 'kube', `${nsName}/${pod}`, { ...ref, deletionTimestamp: apiTs(1000), gracePeriodSeconds: 30 }));
  if (o.hostsPod !== false) w.event(ev('signal', T(1005), 'strace', 'pid:4242', { pid: 4242, comm: 'app', signo: 15, signame: 'SIGTERM', phase: 'delivered' }));
  if (o.hostsPod !== false) w.event(ev('listener-closed', T(1010), 'strace', `${ip}:8080`, { pid: 4242, comm: 'app', fd: 3, addr: '0.0.0.0', port: 8080, how: 'close' }));
  w.event(ev('endpoint-changed', T(1030) + api, 'kube', `${nsName}/web-x1`, { namespace: nsName, slice: 'web-x1', service: 'web', ip, ports: [8080], change: 'modified', ready: false, serving: true, terminating: true, pod: `${nsName}/${pod}`, pod_uid: uid, node: podNode }));
  const ruleMs = o.ruleRemovedMs ?? 1210;
  w.event(ev('endpoint-rule-removed', T(ruleMs), 'nftables', `${ip}:8080`, { service: `${nsName}/web:http`, vip: `${RACE.vip}:80`, endpoint: `${ip}:8080`, ip, port: 8080, chain: `endpoint-ABCD-${nsName}/web/tcp/http__${ip}/8080`, mode: 'nftables', clock: 'receipt' }));
  if (o.hostsPod !== false) w.event(ev('process-exit', T(1300), 'strace', 'pid:4242', { pid: 4242, comm: 'app', code: 0 }));
  w.event(ev('endpoint-changed', T(1400) + api, 'kube', `${nsName}/web-x1`, { namespace: nsName, slice: 'web-x1', service: 'web', ip, change: 'removed', pod: `${nsName}/${pod}`, node: podNode }));
  w.event(ev('pod-deleted', T(1500) + api, 'kube', `${nsName}/${pod}`, ref));
  w.nftSnapshot({ ts_ns: T(-600), format: 'nft-json', reason: 'start', ruleset: JSON.stringify({ nftables: [{ rule: { family: 'ip', table: 'kube-proxy', chain: `endpoint-ABCD-${nsName}/web/tcp/http__${ip}/8080`, expr: [{ dnat: { addr: ip, port: 8080 } }] } }] }) });

  const failuresAtMs: number[] = [];
  if (o.withTraffic !== false) {
    let port = 40000;
    for (let ms = 0; ms < 1600; ms += 100) {
      port++;
      const fail = ms > 1010 && ms < ruleMs;
      const s = T(ms);
      w.probeRequest({ start_ns: s, end_ns: s + (fail ? 1e6 : 3e6), local_addr: RACE.clientIp, local_port: port, remote: `${RACE.vip}:80`, outcome: fail ? 'error' : 'ok', status: fail ? null : 200, error: fail ? 'ECONNREFUSED' : null });
      w.packet(tcpPacket(s + 1e5, 'cni0', RACE.clientIp, port, ip, 8080, TCP.SYN));
      w.conntrack({ ts_ns: s + 5e4, type: 'NEW', proto: 'tcp', state: 'SYN_SENT', orig_src: RACE.clientIp, orig_dst: RACE.vip, orig_sport: port, orig_dport: 80, reply_src: ip, reply_dst: RACE.clientIp, reply_sport: 8080, reply_dport: port, flags: null, zone: null, raw: `[NEW] tcp 6 120 SYN_SENT src=${RACE.clientIp} dst=${RACE.vip} sport=${port} dport=80` });
      if (fail) {
        failuresAtMs.push(ms);
        w.packet(tcpPacket(s + 4e5, 'cni0', ip, 8080, RACE.clientIp, port, TCP.RST | TCP.ACK));
      } else {
        w.packet(tcpPacket(s + 4e5, 'cni0', ip, 8080, RACE.clientIp, port, TCP.SYN | TCP.ACK));
        w.packet(tcpPacket(s + 6e5, 'lo', RACE.clientIp, port, ip, 8080, TCP.PSH | TCP.ACK, `GET /healthz?token=${RACE.token} HTTP/1.1\r\nAuthorization: Bearer ${RACE.secret}\r\n\r\n`));
      }
    }
  }
  w.close();
  const db = new Database(path);
  db.prepare("UPDATE meta SET value = ? WHERE key = 'ended_ns'").run(String(T(1600)));
  db.close();
  return { t0: t0 + skew, failuresAtMs };
}

/** The Analysis the race bundle implies (what analyzeBundle should say), for renderer tests. */
export function raceAnalysis(o: { podName?: string; namespace?: string; t0?: number; failuresAtMs?: number[] } = {}): Analysis {
  const t0 = o.t0 ?? RACE.t0;
  const pod = o.podName ?? 'web-abc';
  const ns = o.namespace ?? 'shop';
  const I = (ms: number) => isoFromNs(t0 + ms * 1e6)!;
  const fails = o.failuresAtMs ?? [1100, 1200];
  return {
    schema: 'rolltrace.analysis/v1',
    bundle: { node: 'node-a', start: I(-600), end: I(1600), sources: [{ name: 'packets', status: 'ok', events: 40, dropped: 0 }, { name: 'strace', status: 'ok', events: 5, dropped: 0 }] },
    pods: [{
      namespace: ns, name: pod, ip: RACE.podIp, deletionAt: I(1000), sigtermAt: I(1005), listenerClosedAt: I(1010), exitedAt: I(1300),
      endpointTerminatingAt: I(1030), endpointRemovedAt: I(1400), ruleRemovedAt: I(1210), exposureMs: 200, verdict: 'listener-closed-before-rule-removed',
      failedConnections: fails.length, evidence: [`listener 0.0.0.0:8080 closed by pid 4242 (${pod}) at +1.010 s`, 'rule removed at +1.210 s (nft monitor, receipt)'],
    }],
    failures: fails.map((ms, i) => ({
      at: I(ms), client: `${RACE.clientIp}:${40001 + ms / 100}`, service: `${RACE.vip}:80`, backend: { ip: RACE.podIp, port: 8080, pod: `${ns}/${pod}` },
      cause: 'listener-closed' as const, evidence: [`RST from ${RACE.podIp}:8080 ${ms - 1010} ms after its listener closed`, `probe #${i} ECONNREFUSED`], via: ['probe', 'packets'],
    })),
    recommendation: { preStopSeconds: 2, terminationGracePeriodSeconds: 32, why: 'rules on this node lagged SIGTERM by up to 200 ms; a preStop sleep of 2 s covers it 10x' },
  };
}

/** Render an HTML file in headless Chromium: a PNG screenshot and the DOM after scripts ran. */
export function chromiumRender(htmlPath: string, pngPath: string, size = { w: 1400, h: 1000 }): { dom: string; png: PNG } {
  const profile = mkdtempSync(join(tmpdir(), 'reports-chromium-'));
  const base = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
    '--no-first-run', `--user-data-dir=${profile}`, `--window-size=${size.w},${size.h}`, '--hide-scrollbars'];
  try {
    execFileSync('chromium', [...base, `--screenshot=${pngPath}`, `file://${htmlPath}`], { stdio: 'ignore', timeout: 60_000 });
    const dom = execFileSync('chromium', [...base, '--virtual-time-budget=2000', '--dump-dom', `file://${htmlPath}`], { encoding: 'utf8', timeout: 60_000, stdio: ['ignore', 'pipe', 'ignore'] });
    return { dom, png: PNG.sync.read(readFileSync(pngPath)) };
  } finally {
    rmSync(profile, { recursive: true, force: true });
  }
}

/** Pixels within `tol` of an RGB colour, optionally inside a rectangle. */
export function countColour(png: PNG, rgb: [number, number, number], tol = 12, rect?: { x0: number; y0: number; x1: number; y1: number }): number {
  let n = 0;
  const { x0, y0, x1, y1 } = rect ?? { x0: 0, y0: 0, x1: png.width, y1: png.height };
  for (let y = Math.max(0, y0); y < Math.min(png.height, y1); y++) {
    for (let x = Math.max(0, x0); x < Math.min(png.width, x1); x++) {
      const i = (y * png.width + x) * 4;
      if (Math.abs(png.data[i]! - rgb[0]) <= tol && Math.abs(png.data[i + 1]! - rgb[1]) <= tol && Math.abs(png.data[i + 2]! - rgb[2]) <= tol) n++;
    }
  }
  return n;
}

/**
 * Screenshot of the HTML report of any bundle (for the README): analyze, render, open in headless
 * Chromium. `npx tsx -e "import('./test/reports-helpers.ts').then(m => m.screenshotBundle('race.rtb', 'docs/report.png'))"`
 */
export async function screenshotBundle(bundlePath: string, pngPath: string, size = { w: 1400, h: 1000 }): Promise<{ html: string; png: PNG; dom: string }> {
  const { BundleReader } = await import('../analyzer/bundle-reader.js');
  const { analyzeBundle } = await import('../analyzer/analyze.js');
  const { renderHtml } = await import('../analyzer/render/html.js');
  const { writeFileSync } = await import('node:fs');
  const reader = await BundleReader.open(bundlePath);
  let html: string;
  try { html = await renderHtml(await analyzeBundle(reader)); } finally { reader.close(); }
  const dir = mkdtempSync(join(tmpdir(), 'reports-shot-'));
  try {
    const file = join(dir, 'report.html');
    writeFileSync(file, html);
    const { dom, png } = chromiumRender(file, pngPath, size);
    return { html, png, dom };
  } finally { rmSync(dir, { recursive: true, force: true }); }
}

/** A copy of the race fixture with one page of the packets table overwritten by (seeded) random bytes. */
export function damagedFixture(to: string): string {
  copyFileSync(join(import.meta.dirname, '../fixtures/bundles/race-synthetic.rtb'), to);
  const db = new Database(to, { readonly: true });
  const { page_size: size } = db.prepare('PRAGMA page_size').get() as { page_size: number };
  const { rootpage } = db.prepare("SELECT rootpage FROM sqlite_master WHERE name = 'packets'").get() as { rootpage: number };
  db.close();
  const junk = Buffer.alloc(size);
  let x = 0x2545f491;
  for (let i = 0; i < size; i++) { x ^= x << 13; x ^= x >>> 17; x ^= x << 5; junk[i] = x & 0xff; }
  const fd = openSync(to, 'r+');
  try { writeSync(fd, junk, 0, size, (rootpage - 1) * size); } finally { closeSync(fd); }
  return to;
}
