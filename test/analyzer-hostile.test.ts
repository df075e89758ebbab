import { spawnSync } from 'node:child_process';
import { copyFileSync, readFileSync, rmSync, statSync, truncateSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { randomBytes } from 'node:crypto';
import Database from 'better-sqlite3';
import { afterAll, describe, expect, it } from 'vitest';
import { ev } from '../schemas/events.js';
import { at, OLD, pod, scenario, tmpBundle } from './analyzer-synth.js';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
const dirs: string[] = [];
afterAll(() => { for (const d of dirs) rmSync(d, { recursive: true, force: true }); });

function cli(args: string[]) {
  return spawnSync(process.execPath, [join(ROOT, 'bin/rolltrace.mjs'), ...args], { encoding: 'utf8', timeout: 60_000 });
}
function fresh(name: string, o = {}): string {
  const f = scenario(tmpBundle(name), o);
  dirs.push(dirname(f));
  return f;
}
function expectOneLineError(r: ReturnType<typeof cli>, re: RegExp) {
  expect(r.status).toBe(2);
  expect(r.stderr.trim().split('\n').filter((l) => !l.startsWith('npm warn'))).toHaveLength(1);
  expect(r.stderr).toMatch(re);
  expect(r.stderr).not.toMatch(/\n\s+at /);
}

describe('hostile bundles', () => {
  it('random bytes: one-line error, exit 2', () => {
    const f = join(dirname(fresh('rand-base')), 'random.rtb');
    writeFileSync(f, randomBytes(8192));
    expectOneLineError(cli(['analyze', f]), /not a rolltrace bundle/);
  });

  it('truncated file: one-line error or degraded analysis, never a stack', () => {
    const src = fresh('trunc');
    for (const frac of [0.5, 0.2]) {
      const f = src.replace(/\.rtb$/, `-${frac}.rtb`);
      copyFileSync(src, f);
      truncateSync(f, Math.floor(statSync(f).size * frac));
      for (const cmd of [['analyze', f], ['analyze', f, '--format', 'json'], ['timeline', f]]) {
        const r = cli(cmd);
        expect([0, 1, 2]).toContain(r.status);
        expect(r.stderr).not.toMatch(/\n\s+at /);
        if (r.status === 2) expect(r.stderr).toMatch(/damaged|malformed|not a rolltrace/);
      }
    }
  });

  it('future schema: one-line error naming the version', () => {
    const f = fresh('future');
    const db = new Database(f);
    db.pragma('user_version = 99');
    db.close();
    expectOneLineError(cli(['analyze', f]), /schema version 99 is newer/);
  });

  it('missing table: degraded analysis with a warning', () => {
    const f = fresh('droptable');
    const db = new Database(f);
    db.exec('DROP VIEW IF EXISTS tcp_resets; DROP VIEW IF EXISTS timeline; DROP TABLE packets;');
    db.close();
    const r = cli(['analyze', f, '--format', 'json']);
    expect(r.status).toBe(1);
    const a = JSON.parse(r.stdout);
    expect(a.warnings.join(' ')).toMatch(/lacks table\(s\) packets/);
    // probes + conntrack still name the backend
    expect(a.failures).toHaveLength(2);
    expect(a.failures[0].backend.ip).toBe(OLD.ip);
    expect(a.failures[0].via).toEqual(['conntrack', 'probe']);
  });

  it('a packets table missing a column costs only the packet scan: probe failures still reported, with a warning', () => {
    const f = join(dirname(fresh('dropcol-base')), 'dropcol.rtb');
    copyFileSync(join(ROOT, 'fixtures/bundles/race-synthetic.rtb'), f);
    const db = new Database(f);
    db.exec('ALTER TABLE packets DROP COLUMN inner_dport');
    db.close();
    const r = cli(['analyze', f, '--format', 'json']);
    expect(r.status).toBe(1);
    const a = JSON.parse(r.stdout);
    expect(a.failures).toHaveLength(2);
    expect(a.failures.every((x: { via: string[] }) => x.via.includes('probe'))).toBe(true);
    expect(a.warnings.join(' ')).toMatch(/failure detection \(packets\) skipped: no such column: inner_dport/);
    // the text report keeps its verdict when the timeline cannot read the packets
    const t = cli(['analyze', f]);
    expect(t.status).toBe(1);
    expect(t.stdout.split('\n')[0]).toMatch(/^VERDICT: FAILURES — 2 failed connection/);
    expect(t.stdout).toMatch(/timeline unavailable: no such column: inner_dport/);
  });

  it('absurd values: huge and negative timestamps, NULLs, attrs not JSON', () => {
    const f = fresh('absurd');
    const db = new Database(f);
    db.prepare('INSERT INTO events(ts_ns, source, kind, subject, attrs) VALUES (?, ?, ?, ?, ?)').run(9.2e18, 'strace', 'listener-closed', null, '{"addr":"0.0.0.0","port":8080}');
    db.prepare('INSERT INTO events(ts_ns, source, kind, subject, attrs) VALUES (?, ?, ?, ?, ?)').run(-5, 'ebpf', 'signal', null, '{"pid":1,"signame":"SIGTERM"}');
    db.prepare('INSERT INTO events(ts_ns, source, kind, subject, attrs) VALUES (?, ?, ?, ?, ?)').run(at(2.5), 'nftables', 'endpoint-rule-removed', null, 'not json {{{');
    db.prepare('INSERT INTO events(ts_ns, source, kind, subject, attrs) VALUES (?, ?, ?, ?, ?)').run(at(2.6), 'strace', 'signal', null, '[1,2,3]');
    db.prepare("INSERT INTO packets(ts_ns, iface, linktype, caplen, len, l3, src, dst, proto, sport, dport, tcp_flags) VALUES (?, NULL, 1, 0, 0, NULL, NULL, NULL, 'tcp', NULL, NULL, 4)").run(at(2.7));
    db.prepare("INSERT INTO packets(ts_ns, iface, linktype, caplen, len, l3, src, dst, proto, sport, dport, tcp_flags, icmp_type) VALUES (?, 'x', 1, 0, 0, 'ip4', '1.2.3.4', '5.6.7.8', 'icmp', NULL, NULL, NULL, 3)").run(-1e18);
    db.prepare("INSERT INTO probe_requests(start_ns, end_ns, local_addr, local_port, remote, outcome, status, error) VALUES (?, NULL, NULL, NULL, 'garbage', 'error', NULL, NULL)").run(9e18);
    db.prepare("INSERT INTO k8s_objects(ts_ns, kind, namespace, name, uid, resource_version, event_type, object) VALUES (?, 'Pod', NULL, NULL, NULL, NULL, 'MODIFIED', '{{not json')").run(at(1));
    db.prepare("INSERT INTO k8s_objects(ts_ns, kind, namespace, name, uid, resource_version, event_type, object) VALUES (?, 'EndpointSlice', 'default', 'x', NULL, NULL, 'MODIFIED', '{\"endpoints\": 5}')").run(at(1));
    db.prepare("INSERT OR REPLACE INTO sources(name, status, detail, events, dropped, clock) VALUES ('weird', 'failed', ?, -3, 99999999999, 'x')").run('boom');
    db.close();
    const r = cli(['analyze', f, '--format', 'json']);
    expect(r.status).toBe(1);
    const a = JSON.parse(r.stdout);
    expect(a.warnings.join(' ')).toMatch(/impossible timestamp/);
    expect(a.warnings.join(' ')).toMatch(/not JSON/);
    expect(a.pods[0].verdict).toBe('listener-closed-before-rule-removed');
    expect(a.pods[0].exposureMs).toBeCloseTo(700.5, 1);
    const t = cli(['analyze', f]);
    expect(t.status).toBe(1);
    const tl = cli(['timeline', f]);
    expect(tl.status).toBe(0);
  });

  it('markup and control characters never reach the terminal raw', () => {
    const evil = 'web-\u001b[31mred\u001b[0m-<script>alert(1)</script>\r\nfake line\u0007';
    const f = fresh('evil', {
      extra: (w: import('../recorder/bundle-writer.js').BundleWriter) => {
        w.k8sObject({ ts_ns: at(2.95), kind: 'Pod', namespace: 'default', name: OLD.name, uid: OLD.uid, resource_version: '99', event_type: 'MODIFIED', object: pod({ ...OLD, name: evil }, { deletionAt: 2.0 }) });
        w.event(ev('marker', at(2.05), 'recorder', evil, { text: evil }));
      },
    });
    for (const args of [['analyze', f], ['timeline', f], ['analyze', f, '--format', 'json']]) {
      const r = cli(args);
      expect(r.stdout).not.toMatch(/\u001b|\u0007|\r/);
      expect(r.stdout.split('\n').some((l) => l.startsWith('fake line'))).toBe(false);
    }
    const j = JSON.parse(cli(['analyze', f, '--format', 'json']).stdout);
    expect(j.pods[0].name).toContain('<script>');
  });

  it('missing file and unknown --since: exit 2, one line', () => {
    expectOneLineError(cli(['analyze', '/nonexistent/x.rtb']), /no such file/);
    const f = fresh('since');
    expectOneLineError(cli(['timeline', f, '--since', 'yesterday-ish']), /--since/);
    expect(readFileSync(f).length).toBeGreaterThan(0);
  });
});
