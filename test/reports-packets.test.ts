/** Redaction of real frames captured by tcpdump on this machine (fixtures/reports/*.pcap). */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseCapture } from '../recorder/decode/pcapfile.js';
import { decodeFrame } from '../recorder/decode/packet.js';
import { pseudonymizeFrame, stripPayload } from '../analyzer/redact/packet.js';
import { Pseudonymizer } from '../analyzer/redact/pseudonymize.js';
import { PacketAnnotator, writePcapng } from '../analyzer/export/pcapng.js';
import type { StoredPacketRow } from '../schemas/rows.js';

const FIX = join(import.meta.dirname, '..', 'fixtures', 'reports');
let dir: string;
beforeAll(() => { dir = mkdtempSync(join(tmpdir(), 'reports-packets-')); });
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const rows = (file: string) => parseCapture(new Uint8Array(readFileSync(join(FIX, file)))).records;
function toStored(recs: Array<{ ts_ns: number; linktype: number; data: Uint8Array; len: number }>): StoredPacketRow[] {
  return recs.map((r, i) => ({ ...decodeFrame(r.linktype, r.data, r.data.length, r.len), id: i + 1, ts_ns: r.ts_ns, iface: 'x', data: r.data }));
}
function tshark(file: string, fields: string[]): string[][] {
  return execFileSync('tshark', ['-r', file, '-o', 'ip.check_checksum:TRUE', '-T', 'fields', '-E', 'separator=\t', ...fields.flatMap((f) => ['-e', f])],
    { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trimEnd().split('\n').map((l) => l.split('\t'));
}

for (const file of ['eth.pcap', 'any-sll2.pcap']) {
  describe(`redacting real frames: ${file}`, () => {
    it('keeps every header the decoder reads and drops every payload byte', () => {
      const recs = rows(file);
      expect(recs.length).toBeGreaterThan(25);
      let shrunk = 0;
      for (const r of recs) {
        const before = decodeFrame(r.linktype, r.data, r.data.length, r.len);
        const cut = stripPayload(r.data, r.linktype);
        const after = decodeFrame(r.linktype, cut, cut.length, r.len);
        // same decoded columns (5-tuple, flags, seq/ack, ICMP quote, payload length from the IP header)
        expect({ ...after, caplen: 0 }).toEqual({ ...before, caplen: 0 });
        if (before.payload_len && before.proto === 'tcp') {
          expect(cut.length).toBe(r.data.length - before.payload_len);
          shrunk++;
        }
        const text = Buffer.from(cut).toString('latin1');
        expect(text).not.toMatch(/HTTP\/1\.|GET \/|Host:/);
      }
      expect(shrunk).toBeGreaterThanOrEqual(4);
    });

    it('pseudonymizes every address, ICMP quotes included, with valid IP and ICMP checksums (tshark)', () => {
      const recs = rows(file);
      const p = new Pseudonymizer(Buffer.alloc(32, 3));
      const orig = toStored(recs);
      const mapped = recs.map((r) => { const d = new Uint8Array(r.data); pseudonymizeFrame(d, r.linktype, p.ip); return { ...r, data: d }; });
      const stored = toStored(mapped);
      stored.forEach((s, i) => {
        const o = orig[i]!;
        expect(s.src).toBe(o.src ? p.ip(o.src) : null);
        expect(s.dst).toBe(o.dst ? p.ip(o.dst) : null);
        expect(s.inner_src).toBe(o.inner_src ? p.ip(o.inner_src) : null);
        expect(s.inner_dst).toBe(o.inner_dst ? p.ip(o.inner_dst) : null);
        expect([s.sport, s.dport, s.tcp_flags, s.seq, s.payload_len]).toEqual([o.sport, o.dport, o.tcp_flags, o.seq, o.payload_len]);
        if (o.src) expect(s.src).not.toBe(o.src);
      });
      const out = join(dir, `${file}.pcapng`);
      writePcapng(out, stored, new PacketAnnotator(null));
      const t = tshark(out, ['ip.checksum.status', 'icmp.checksum.status', 'ip.src', 'ipv6.src', 'icmpv6.checksum.status']);
      expect(t).toHaveLength(recs.length);
      const ipStatus = t.flatMap((x) => x[0] ? x[0].split(',') : []);
      expect(ipStatus.length).toBeGreaterThan(10);
      expect(ipStatus.every((s) => s === '1')).toBe(true); // 1 = good
      const icmp = t.filter((x) => x[1]);
      expect(icmp.length).toBeGreaterThanOrEqual(1);
      expect(icmp.every((x) => x[1] === '1')).toBe(true);
      // ICMPv6 checksums cover the IPv6 pseudo-header: adjusted for the new addresses
      const icmp6 = t.filter((x) => x[4]);
      expect(icmp6.length).toBeGreaterThanOrEqual(4);
      expect(icmp6.every((x) => x[4] === '1')).toBe(true);
      for (const x of t) {
        if (x[2]) expect(x[2]).toMatch(/^(10\.|127\.)/);
        if (x[3]) expect(x[3]).toMatch(/^(fd00:|fe80:|::)/);
      }
    });
  });
}
