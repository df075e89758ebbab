import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { BundleReader } from '../analyzer/bundle-reader.js';
import { analyzeBundle } from '../analyzer/analyze.js';
import { redactBundle, maskCmdline, stripUrlQueries } from '../analyzer/redact/redact.js';
import { pseudonymizeFrame, stripPayload } from '../analyzer/redact/packet.js';
import { Pseudonymizer } from '../analyzer/redact/pseudonymize.js';
import { writePcapng, PacketAnnotator } from '../analyzer/export/pcapng.js';
import type { Analysis } from '../schemas/analysis.js';
import { TCP } from '../schemas/rows.js';
import { damagedFixture, RACE, tcpPacket, writeRaceBundle } from './reports-helpers.js';

let dir: string;
let bundle: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'reports-redact-'));
  bundle = join(dir, 'race.rtb');
  writeRaceBundle(bundle);
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));


async function analyze(file: string): Promise<Analysis> {
  const r = await BundleReader.open(file);
  try { return await analyzeBundle(r); } finally { r.close(); }
}
const summary = (a: Analysis) => ({
  pods: a.pods.map((p) => ({ verdict: p.verdict, exposureMs: p.exposureMs, failed: p.failedConnections, closed: p.listenerClosedAt, rule: p.ruleRemovedAt })),
  failures: a.failures.map((f) => ({ at: f.at, cause: f.cause, port: f.backend.port })),
  rec: [a.recommendation.preStopSeconds, a.recommendation.terminationGracePeriodSeconds],
});

describe('redact helpers', () => {
  it('masks command-line values and URL queries', () => {
    expect(maskCmdline('/app --password hunter2 --port=8080 serve')).toBe('/app --password *** --port=*** ***');
    expect(stripUrlQueries('GET http://10.0.0.1/x?token=abc#f and https://h/y')).toBe('GET http://10.0.0.1/x and https://h/y');
  });

  it('keeps only headers and pseudonymizes frames with valid IP and TCP checksums (tshark validates)', () => {
    const p = new Pseudonymizer(Buffer.alloc(32, 7));
    const rows = [
      tcpPacket(1e18, 'eth0', '192.168.7.9', 5555, '172.16.3.4', 80, TCP.PSH | TCP.ACK, 'GET /secret HTTP/1.1\r\n\r\n'),
      tcpPacket(1e18 + 1000, 'eth0', '172.16.3.4', 80, '192.168.7.9', 5555, TCP.RST | TCP.ACK),
    ];
    expect(stripPayload(rows[0]!.data!, 1)).toHaveLength(54);
    for (const r of rows) pseudonymizeFrame(r.data!, 1, p.ip);
    const out = join(dir, 'pseudo.pcapng');
    writePcapng(out, rows.map((r, i) => ({ ...r, id: i + 1 })), new PacketAnnotator(null));
    const lines = execFileSync('tshark', ['-r', out, '-o', 'ip.check_checksum:TRUE', '-o', 'tcp.check_checksum:TRUE', '-T', 'fields',
      '-e', 'ip.src', '-e', 'ip.dst', '-e', 'ip.checksum.status', '-e', 'tcp.checksum.status'], { encoding: 'utf8' }).trim().split('\n');
    expect(lines).toHaveLength(2);
    for (const l of lines) {
      const [src, dst, ipc, tcpc] = l.split('\t');
      expect(src).toMatch(/^10\.\d+\.\d+\.(9|4)$/);
      expect(dst).toMatch(/^10\.\d+\.\d+\.(9|4)$/);
      expect(ipc).toBe('1'); // wireshark: 0 bad, 1 good, 2 unverified
      expect(tcpc).toBe('1');
    }
    expect(lines[0]!.split('\t')[0]).toBe(lines[1]!.split('\t')[1]);
  });
});

describe('rolltrace redact', () => {
  it('drops payloads and secrets, keeps IPs without --pseudonymize, and analyzes the same', async () => {
    const out = join(dir, 'plain.rtb');
    const r = await BundleReader.open(bundle);
    let c;
    try { c = redactBundle(r, out); } finally { r.close(); }
    expect(c.secretsDropped).toBe(1);
    expect(statSync(out).mode & 0o777).toBe(0o600);
    for (const s of ['-wal', '-shm']) expect(existsSync(out + s), s).toBe(false);
    expect(c.envValues).toBeGreaterThanOrEqual(3);
    expect(c.payloadBytesDropped).toBeGreaterThan(500);
    const bytes = readFileSync(out);
    for (const s of [RACE.secret, RACE.token, 'Authorization', 'GET /healthz', Buffer.from(RACE.secret).toString('base64'), 'last-applied-configuration', '"manager":"kubectl"']) {
      expect(bytes.includes(s), s).toBe(false);
    }
    expect(bytes.includes(RACE.podIp)).toBe(true);
    expect(existsSync(`${out}-wal`)).toBe(false);
    const db = new Database(out, { readonly: true });
    try {
      const bad = db.prepare('SELECT count(*) AS n FROM packets WHERE caplen != length(data) OR caplen > 54 OR len < caplen').get() as { n: number };
      expect(bad.n).toBe(0);
      const lens = db.prepare('SELECT sum(len) AS l FROM packets').get() as { l: number };
      expect(lens.l).toBeGreaterThan(46 * 54);
      const meta = JSON.parse((db.prepare("SELECT value FROM meta WHERE key = 'redacted'").get() as { value: string }).value);
      expect(meta.pseudonymized).toBe(false);
      expect(meta.removed.secretsDropped).toBe(1);
      expect((db.prepare("SELECT value FROM meta WHERE key = 'created_by'").get() as { value: string }).value).toBe('redact');
    } finally { db.close(); }
    expect(summary(await analyze(out))).toEqual(summary(await analyze(bundle)));
  });

  it('--pseudonymize leaves no original IP or name anywhere and the same verdicts, failures and recommendation', async () => {
    const out = join(dir, 'pseudo.rtb');
    const res = spawnSync('node', ['bin/rolltrace.mjs', 'redact', bundle, '--out', out, '--pseudonymize'], { encoding: 'utf8', cwd: join(import.meta.dirname, '..') });
    expect(res.status).toBe(0);
    expect(res.stdout).toMatch(/^\s+1\s+Secret objects dropped$/m);
    expect(res.stdout).toMatch(/names pseudonymized/);
    const bytes = readFileSync(out);
    for (const s of [RACE.secret, RACE.token, RACE.podIp, RACE.clientIp, RACE.vip, '10.244.0.', 'web-abc', 'shop', 'payments', 'node-a', 'web-x1']) {
      expect(bytes.includes(s), s).toBe(false);
    }
    // binary IPs in packet headers are rewritten too
    expect(bytes.includes(Buffer.from([10, 244, 0, 5]))).toBe(false);
    const orig = await analyze(bundle);
    const red = await analyze(out);
    expect(summary(red)).toEqual(summary(orig));
    expect(red.pods[0]!.name).toMatch(/^pod-[0-9a-f]{6}$/);
    expect(red.failures[0]!.backend.pod).toBe(`${red.pods[0]!.namespace}/${red.pods[0]!.name}`);
    expect(red.pods[0]!.ip).toMatch(/^10\.\d+\.\d+\.5$/);
    // the same pseudonymous IP in packets, probe, conntrack and events (joins kept)
    const db = new Database(out, { readonly: true });
    try {
      const ip = red.pods[0]!.ip!;
      expect((db.prepare('SELECT count(*) AS n FROM packets WHERE src = ? OR dst = ?').get(ip, ip) as { n: number }).n).toBe(46);
      expect((db.prepare('SELECT count(*) AS n FROM conntrack WHERE reply_src = ?').get(ip) as { n: number }).n).toBe(16);
      expect((db.prepare("SELECT count(*) AS n FROM events WHERE kind = 'endpoint-rule-removed' AND json_extract(attrs, '$.ip') = ?").get(ip) as { n: number }).n).toBe(1);
    } finally { db.close(); }
  });

  it('refuses to overwrite its input', () => {
    const res = spawnSync('node', ['bin/rolltrace.mjs', 'redact', bundle, '--out', bundle], { encoding: 'utf8', cwd: join(import.meta.dirname, '..') });
    expect(res.status).toBe(2);
    expect(res.stderr).toMatch(/--out must differ/);
  });

  it('a damaged input is a one-line error (exit 2) and leaves no partial bundle at --out', () => {
    const bad = damagedFixture(join(dir, 'damaged.rtb'));
    for (const extra of [[], ['--pseudonymize']]) {
      const out = join(dir, `damaged-red${extra.length}.rtb`);
      const res = spawnSync('node', ['bin/rolltrace.mjs', 'redact', bad, '--out', out, ...extra], { encoding: 'utf8', cwd: join(import.meta.dirname, '..') });
      expect(res.status).toBe(2);
      expect(res.stderr).toMatch(/^rolltrace: .*damaged\.rtb: damaged bundle \(.+\)\n$/);
      expect(res.stderr).not.toMatch(/SqliteError|\n\s+at /);
      for (const suffix of ['', '-wal', '-shm', '-journal']) expect(existsSync(out + suffix)).toBe(false);
    }
  });
});
