import Database from 'better-sqlite3';
import { existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { cli, ROOT } from './helpers/cli.js';

const dir = mkdtempSync(join(tmpdir(), 'import-cli-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const fx = (p: string) => join(ROOT, 'fixtures', p);
let n = 0;
const out = () => join(dir, `b${++n}.rtb`);

function open(path: string) {
  return new Database(path, { readonly: true });
}
interface Src { name: string; status: string; detail: string; events: number; dropped: number; clock: string }
const sources = (db: Database.Database) => db.prepare('SELECT * FROM sources ORDER BY name').all() as Src[];

describe('rolltrace import: pcap + pcapng + strace + nft monitor in one bundle', () => {
  const file = out();
  const r = cli(['import', '--out', file,
    '--pcap', fx('pcap/eth-ns.pcap'), '--pcap', fx('pcap/eth.pcapng'),
    '--strace', fx('import/strace-attach-sigterm.shifted.txt'),
    '--nft-monitor', fx('import/nft-remove-endpoint.ts.log'), '--nft-ruleset', fx('nft/ruleset-before.json')]);

  it('exits 0 and verify accepts the bundle', () => {
    expect(r.stderr).toContain('wrote ');
    expect(r.code).toBe(0);
    const v = cli(['verify', file]);
    expect(v.stdout + v.stderr).toMatch(/valid/);
    expect(v.code).toBe(0);
  });

  it('has one ok source row per import source, clock file, with counts', () => {
    const db = open(file);
    const s = sources(db);
    db.close();
    expect(s.map((x) => x.name)).toEqual(['import:nft', 'import:pcap', 'import:strace']);
    for (const x of s) { expect(x.status).toBe('ok'); expect(x.clock).toBe('file'); }
    const by = Object.fromEntries(s.map((x) => [x.name, x]));
    expect(by['import:pcap']!.events).toBe(60);
    expect(by['import:pcap']!.detail).toMatch(/pcap eth-ns\.pcap: 30 packets, 13 indexed; pcapng eth\.pcapng: 30 packets, 13 indexed/);
    expect(by['import:strace']!.detail).toMatch(/461 lines, 10 events, 0 lines skipped/);
    expect(by['import:nft']!.detail).toMatch(/8 records, 1 bursts .*1 endpoint-rule changes.*replayed onto ruleset-before\.json/);
  });

  it('the timeline view lists every source interleaved in time order', () => {
    const db = open(file);
    const rows = db.prepare('SELECT * FROM timeline').all() as Array<{ ts_ns: number; source: string; kind: string }>;
    const meta = Object.fromEntries((db.prepare('SELECT key, value FROM meta').all() as Array<{ key: string; value: string }>).map((m) => [m.key, m.value]));
    db.close();
    // the 26 indexed packets of 60 (schema 3: SYN/RST, first payload per direction, FIN before payload, ICMP errors; every
    // frame is in packet_chunks), 10 strace events, rules-changed + endpoint-rule-removed, and the endpoint
    // leaving the cluster-IP path (per-path events)
    expect(rows).toHaveLength(26 + 10 + 2 + rows.filter((x) => x.kind.startsWith('path-rule-')).length);
    expect(rows.filter((x) => x.kind.startsWith('path-rule-')).length).toBeGreaterThan(0);
    for (let i = 1; i < rows.length; i++) expect(rows[i]!.ts_ns).toBeGreaterThanOrEqual(rows[i - 1]!.ts_ns);
    expect(new Set(rows.map((x) => x.source))).toEqual(new Set(['packets', 'import:strace', 'import:nft']));
    // interleaved: the strace and nft events fall within the captured frames' span (the capture's first
    // frames are payload segments the index leaves in the chunks), indexed packets follow them
    expect(rows[rows.length - 1]!.source).toBe('packets');
    const idx = (s: string) => rows.map((x, i) => (x.source === s ? i : -1)).filter((i) => i >= 0);
    const db2 = open(file);
    const span = db2.prepare('SELECT min(first_ts_ns) AS a, max(last_ts_ns) AS b FROM packet_chunks').get() as { a: number; b: number };
    db2.close();
    for (const s of ['import:strace', 'import:nft']) {
      const first = rows[idx(s)[0]!]!.ts_ns;
      expect(first).toBeGreaterThan(span.a);
      expect(first).toBeLessThan(span.b);
    }
    expect(idx('import:nft')[0]).toBeLessThan(idx('import:strace')[0]!); // nft at .2, strace from .45
    // the recording spans every frame, indexed or not
    expect(Number(meta.started_ns)).toBe(span.a);
    expect(Number(meta.ended_ns)).toBe(Math.max(span.b, rows[rows.length - 1]!.ts_ns));
    expect(meta.created_by).toBe('import');
    expect(JSON.parse(meta.receipt_stamped_sources!)).toEqual(['import:nft']);
  });

  it('removing one endpoint yields exactly one endpoint-rule-removed, stamped with the burst\'s first line', () => {
    const db = open(file);
    const ev = db.prepare("SELECT ts_ns, kind, subject, attrs FROM events WHERE source = 'import:nft' ORDER BY id").all() as Array<{ ts_ns: number; kind: string; subject: string; attrs: string }>;
    const snaps = db.prepare('SELECT ts_ns, format, reason FROM nft_snapshots ORDER BY ts_ns').all() as Array<{ ts_ns: number; reason: string; format: string }>;
    db.close();
    expect(ev.map((e) => e.kind).filter((k) => !k.startsWith('path-rule-')).sort()).toEqual(['endpoint-rule-removed', 'rules-changed']);
    const paths = ev.filter((e) => e.kind.startsWith('path-rule-'));
    expect(paths.map((e) => `${e.kind} ${e.subject} ${JSON.parse(e.attrs).path} ${JSON.parse(e.attrs).addr}`)).toEqual(['path-rule-removed 10.244.0.6:8080 cluster-ip 10.96.0.10:80', 'path-rule-removed 10.244.0.6:8080 node-port *:30080']);
    const rm = ev.find((e) => e.kind === 'endpoint-rule-removed')!;
    expect(rm.subject).toBe('10.244.0.6:8080');
    expect(JSON.parse(rm.attrs)).toMatchObject({ service: 'default/web:http', vip: '10.96.0.10:80', clock: 'file', mode: 'nftables' });
    expect(Math.abs(rm.ts_ns - 1795292023200010000)).toBeLessThan(1000);
    expect(JSON.parse(ev.find((e) => e.kind === 'rules-changed')!.attrs)).toMatchObject({ lines: 8, tables: ['ip kube-proxy'] });
    expect(snaps.map((s) => `${s.format} ${s.reason}`)).toEqual(['nft-json start', 'nft-json burst']);
  });
});

describe('rolltrace import: nft monitor details', () => {
  it('a full re-sync yields one rules-changed and no endpoint change', () => {
    const file = out();
    const r = cli(['import', '--out', file, '--nft-monitor', fx('import/nft-resync.ts.log'), '--nft-ruleset', fx('nft/ruleset-whole-before.json')]);
    expect(r.code).toBe(0);
    const db = open(file);
    const kinds = db.prepare('SELECT kind FROM events').all().map((x) => (x as { kind: string }).kind);
    const s = sources(db)[0]!;
    db.close();
    expect(kinds).toEqual(['rules-changed']);
    expect(s.detail).toMatch(/126 records, 1 bursts/);
    expect(s.detail).not.toMatch(/did not hold/);
  });

  it('skips and counts malformed monitor lines', () => {
    const file = out();
    const r = cli(['import', '--out', file, '--nft-monitor', fx('import/nft-malformed.ts.log'), '--nft-ruleset', fx('nft/ruleset-before.json')]);
    expect(r.code).toBe(0);
    const db = open(file);
    const s = sources(db)[0]!;
    db.close();
    expect(s.dropped).toBe(4);
    expect(s.detail).toMatch(/4 malformed lines skipped/);
  });

  it('names the opaque iptables-mode (xt) rules in the source detail', () => {
    const file = out();
    const log = join(dir, 'xt.log');
    writeFileSync(log, '1795292023.1 {"add": {"rule": {"family": "ip", "table": "nat", "chain": "KUBE-SVC-X", "handle": 7, "expr": [{"xt": {"type": "target", "name": "DNAT"}}]}}}\n');
    const r = cli(['import', '--out', file, '--nft-monitor', log]);
    expect(r.code).toBe(0);
    const db = open(file);
    const s = sources(db)[0]!;
    db.close();
    expect(s.detail).toMatch(/endpoint changes need iptables-save snapshots \(--iptables-save\)/);
  });
});

describe('rolltrace import: strace -ff, conntrack, watch', () => {
  it('takes the pid of a -ff file from its name', () => {
    const file = out();
    expect(cli(['import', '--out', file, '--strace', fx('import/strace-ff.12893')]).code).toBe(0);
    const db = open(file);
    const ev = db.prepare('SELECT kind, subject FROM events ORDER BY ts_ns').all() as Array<{ kind: string; subject: string }>;
    db.close();
    expect(ev).toEqual([{ kind: 'signal', subject: 'pid:12893' }, { kind: 'process-exit', subject: 'pid:12893' }]);
  });

  it('imports conntrack -E -o timestamp,extended lines, counting malformed ones', () => {
    const file = out();
    expect(cli(['import', '--out', file, '--conntrack', fx('conntrack/events-malformed.txt')]).code).toBe(0);
    const db = open(file);
    const rows = db.prepare('SELECT count(*) AS c FROM conntrack').get() as { c: number };
    const s = sources(db)[0]!;
    db.close();
    expect(s).toMatchObject({ name: 'import:conntrack', status: 'ok', clock: 'file', events: rows.c, dropped: 4 });
    expect(rows.c).toBe(5);
  });

  it('imports watch JSON lines: k8s_objects plus derived pod and endpoint events', () => {
    const file = out();
    expect(cli(['import', '--out', file, '--watch', fx('watch/rollout-watch.jsonl')]).code).toBe(0);
    const db = open(file);
    const objs = (db.prepare('SELECT count(*) AS c FROM k8s_objects').get() as { c: number }).c;
    const kinds = Object.fromEntries((db.prepare("SELECT kind, count(*) AS c FROM events WHERE source = 'import:kube' GROUP BY kind").all() as Array<{ kind: string; c: number }>).map((x) => [x.kind, x.c]));
    db.close();
    expect(objs).toBe(35);
    expect(kinds).toEqual({ 'endpoint-changed': 8, 'pod-created': 4, 'pod-deleted': 2, 'pod-ready': 4, 'pod-terminating': 2 });
  });

  it('imports real kubectl get --watch -o json output (no event types)', () => {
    const file = out();
    expect(cli(['import', '--out', file, '--watch', fx('import/kubectl-watch-pods.json')]).code).toBe(0);
    const db = open(file);
    const types = db.prepare('SELECT event_type FROM k8s_objects ORDER BY rowid').all().map((x) => (x as { event_type: string }).event_type);
    const kinds = db.prepare('SELECT kind FROM events ORDER BY ts_ns, id').all().map((x) => (x as { kind: string }).kind);
    db.close();
    expect(types).toEqual(['ADDED', 'MODIFIED', 'MODIFIED', 'MODIFIED']);
    expect(kinds).toEqual(['pod-created', 'pod-ready', 'pod-terminating']);
  });
});

describe('rolltrace import: bad input exits 2 with one line naming the problem', () => {
  const bad = (args: string[], re: RegExp) => {
    const file = out();
    const r = cli(['import', '--out', file, ...args]);
    expect(r.code).toBe(2);
    const lines = r.stderr.split('\n').filter((l) => l.trim() !== '' && !/npm warn/.test(l));
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(re);
    expect(lines[0]).not.toMatch(/^\s+at /);
    expect(existsSync(file)).toBe(false); // nothing half-built is left behind
  };
  it('no inputs', () => bad([], /needs at least one of --pcap/));
  it('missing file', () => bad(['--pcap', join(dir, 'nope.pcap')], /--pcap .*nope\.pcap: no such file/));
  it('not a capture', () => bad(['--pcap', fx('import/gen.sh')], /--pcap .*gen\.sh: not a pcap or pcapng/));
  it('a pcap given as strace', () => bad(['--strace', fx('pcap/eth-ns.pcap')], /--strace .*eth-ns\.pcap: no strace -ttt lines/));
  it('nft monitor without timestamps', () => bad(['--nft-monitor', fx('import/nft-no-timestamps.jsonl')], /--nft-monitor .*nft-no-timestamps\.jsonl: no timestamps; capture with: nft -j monitor \| ts/));
  it('nft ruleset that is not JSON', () => bad(['--nft-monitor', fx('import/nft-resync.ts.log'), '--nft-ruleset', fx('import/gen.sh')], /--nft-ruleset .*gen\.sh: not JSON/));
  it('watch that is not JSON at all', () => bad(['--watch', fx('import/gen.sh')], /--watch .*gen\.sh: not JSON/));
  it('watch object without any timestamp', () => {
    const f = join(dir, 'nots.json');
    writeFileSync(f, JSON.stringify({ kind: 'Pod', metadata: { name: 'p', namespace: 'd' } }, null, 4));
    bad(['--watch', f], /--watch .*nots\.json: Pod d\/p has no "ts" and no timestamp in its metadata/);
  });
  it('conntrack without timestamps', () => {
    const f = join(dir, 'ct.txt');
    writeFileSync(f, '    [NEW] tcp      6 120 SYN_SENT src=10.0.0.1 dst=10.0.0.2 sport=1 dport=80 [UNREPLIED] src=10.0.0.2 dst=10.0.0.1 sport=80 dport=1\n');
    bad(['--conntrack', f], /--conntrack .*ct\.txt: no timestamps; capture with conntrack -E -o timestamp,extended/);
  });
  it('empty file', () => {
    const f = join(dir, 'empty.log');
    writeFileSync(f, '');
    bad(['--conntrack', f], /--conntrack .*empty\.log: empty file/);
  });
  it('plain (non-JSON) nft monitor output', () => {
    const f = join(dir, 'plain-monitor.log');
    writeFileSync(f, '1795292023.1 add rule ip kube-proxy services ip daddr 10.96.0.10 tcp dport 80 goto x # handle 5\n');
    bad(['--nft-monitor', f], /--nft-monitor .*plain-monitor\.log: no nft -j monitor JSON lines \(capture with nft -j monitor/);
  });
  it('a binary file as nft monitor', () => bad(['--nft-monitor', fx('pcap/eth-ns.pcap')], /--nft-monitor .*eth-ns\.pcap: binary file, expected text/));
  it('a failing later input leaves no bundle even after good ones', () => bad(['--pcap', fx('pcap/eth-ns.pcap'), '--watch', fx('import/gen.sh')], /--watch/));
});

describe('rolltrace import --force that fails', () => {
  it('keeps the bundle it was asked to replace, and leaves no partial file', () => {
    const file = out();
    expect(cli(['import', '--out', file, '--pcap', fx('pcap/eth-us.pcap')]).code).toBe(0);
    const notCapture = join(dir, 'not-a-capture.pcap');
    writeFileSync(notCapture, 'this is not a capture\n');
    const r = cli(['import', '--out', file, '--force', '--pcap', notCapture]);
    expect(r.code).toBe(2);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(existsSync(file)).toBe(true);
    const db = open(file);
    expect((db.prepare('SELECT sum(packets) AS n FROM packet_chunks').get() as { n: number }).n).toBe(30);
    db.close();
    expect(cli(['verify', file]).code).toBe(0);
    expect(readdirSync(dir).filter((f) => f.includes('.importing-'))).toEqual([]);
    // without --force an existing bundle is refused outright
    const again = cli(['import', '--out', file, '--pcap', fx('pcap/eth-us.pcap')]);
    expect(again.code).toBe(2);
    expect(again.stderr).toMatch(/already exists/);
  });
});
