import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { CaptureStreamParser, parseCapture } from '../recorder/decode/pcapfile.js';
import { decodeFrame, ip6String } from '../recorder/decode/packet.js';
import { TCP } from '../schemas/rows.js';

const F = (n: string) => readFileSync(new URL(`../fixtures/pcap/${n}`, import.meta.url));

function decodeAll(name: string) {
  const r = parseCapture(F(name));
  return { ...r, rows: r.records.map((x) => ({ ts_ns: String(x.ts_ns), iface: x.iface, ...decodeFrame(x.linktype, x.data, x.caplen, x.len) })) };
}

describe('golden captures (tcpdump us/ns, tcpdump -i any SLL2, dumpcap pcapng)', () => {
  for (const name of ['eth-us.pcap', 'eth-ns.pcap', 'any-sll2.pcap', 'eth.pcapng']) {
    it(name, () => {
      const got = decodeAll(name);
      const want = JSON.parse(F(`${name}.expected.json`).toString());
      expect(got.format).toBe(want.format);
      expect(got.malformed).toBe(0);
      expect(got.rows).toEqual(want.rows);
    });
  }

  it('finds the refused SYN->RST, the ICMP port unreachable with its quoted UDP, and IPv6', () => {
    const { rows } = decodeAll('eth-ns.pcap');
    const rst = rows.filter((r) => r.proto === 'tcp' && (r.tcp_flags! & TCP.RST) && r.l3 === 'ip4');
    expect(rst).toHaveLength(1);
    expect(rst[0]).toMatchObject({ src: '10.77.0.2', sport: 9, dst: '10.77.0.1', seq: 0 });
    const syn = rows.find((r) => r.dport === 9 && r.tcp_flags === TCP.SYN && r.l3 === 'ip4')!;
    expect(rst[0]!.ack).toBe(syn.seq! + 1);
    const icmp = rows.find((r) => r.proto === 'icmp')!;
    expect(icmp).toMatchObject({ icmp_type: 3, icmp_code: 3, inner_src: '10.77.0.1', inner_dst: '10.77.0.2', inner_proto: 'udp', inner_dport: 9 });
    const http = rows.filter((r) => r.sport === 8080 && r.payload_len! > 0);
    expect(http[0]!.payload_len).toBe(128);
    const v6rst = rows.find((r) => r.l3 === 'ip6' && r.proto === 'tcp' && (r.tcp_flags! & TCP.RST));
    expect(v6rst).toMatchObject({ src: 'fd77::2', sport: 9, dst: 'fd77::1' });
    // MLD report behind a hop-by-hop extension header
    expect(rows[0]).toMatchObject({ l3: 'ip6', proto: 'icmp6', icmp_type: 143 });
  });

  it('ns and us captures of the same traffic agree within a few microseconds', () => {
    const us = decodeAll('eth-us.pcap').rows, ns = decodeAll('eth-ns.pcap').rows;
    expect(us.length).toBe(ns.length);
    for (let i = 0; i < us.length; i++) expect(Math.abs(Number(us[i]!.ts_ns) - Number(ns[i]!.ts_ns))).toBeLessThan(5000); // two tcpdump processes, each stamps its own copy
    expect(ns.some((r) => Number(r.ts_ns) % 1000 !== 0)).toBe(true);
  });

  it('pcapng carries the interface name from the IDB', () => {
    const r = parseCapture(F('eth.pcapng'));
    expect(r.records[0]!.iface).toMatch(/^va/);
  });
});

describe('byte orders, streaming and malformed input', () => {
  it('reads a big-endian pcap identical to the little-endian one', () => {
    const le = F('eth-ns.pcap');
    const be = Buffer.from(le);
    const sw32 = (o: number) => be.writeUInt32BE(le.readUInt32LE(o), o);
    const sw16 = (o: number) => be.writeUInt16BE(le.readUInt16LE(o), o);
    sw32(0); sw16(4); sw16(6); sw32(8); sw32(12); sw32(16); sw32(20);
    let o = 24;
    while (o < le.length) { const cap = le.readUInt32LE(o + 8); for (let k = 0; k < 16; k += 4) sw32(o + k); o += 16 + cap; }
    const a = parseCapture(le).records, b = parseCapture(be).records;
    expect(b).toEqual(a);
  });

  it('streams byte by byte with the same result', () => {
    for (const name of ['eth-us.pcap', 'eth.pcapng']) {
      const buf = F(name);
      const p = new CaptureStreamParser();
      const recs = [];
      for (let i = 0; i < buf.length; i += 7) recs.push(...p.push(buf.subarray(i, i + 7)));
      p.end();
      expect(recs).toEqual(parseCapture(buf).records);
      expect(p.malformed).toBe(0);
    }
  });

  it('counts a cut-off final record and rejects foreign bytes with InputError', () => {
    const buf = F('eth-us.pcap');
    const r = parseCapture(buf.subarray(0, buf.length - 5));
    expect(r.records.length).toBe(29);
    expect(r.malformed).toBe(1);
    expect(() => parseCapture(Buffer.from('hello world, not a capture'))).toThrow(/bad magic/);
    expect(() => parseCapture(Buffer.from('GIF89a........'))).toThrow(expect.objectContaining({ name: 'InputError' }));
    expect(() => parseCapture(Buffer.alloc(0))).toThrow(/empty/);
  });

  it('a pcapng interface block shorter than its fixed fields is skipped and counted, never a RangeError', () => {
    const shb = Buffer.from(F('eth.pcapng').subarray(0, F('eth.pcapng').readUInt32LE(4)));
    const idb = Buffer.alloc(12);
    idb.writeUInt32LE(1, 0); idb.writeUInt32LE(12, 4); idb.writeUInt32LE(12, 8);
    const r = parseCapture(Buffer.concat([shb, idb]));
    expect(r.format).toBe('pcapng');
    expect(r.malformed).toBe(1);
    expect(r.records).toEqual([]);
  });

  it('a pcapng EPB pointing at an unknown interface is skipped and counted', () => {
    const buf = Buffer.from(F('eth.pcapng'));
    // find the first EPB (type 6) and point it at interface 9
    let o = 0, patched = false;
    while (o < buf.length) { const t = buf.readUInt32LE(o), l = buf.readUInt32LE(o + 4); if (t === 6 && !patched) { buf.writeUInt32LE(9, o + 8); patched = true; } o += l; }
    const r = parseCapture(buf);
    expect(r.malformed).toBe(1);
    expect(r.records.length).toBe(29);
  });
});

describe('link types and truncation', () => {
  const recs = parseCapture(F('eth-ns.pcap')).records;
  const rstFrame = recs.find((r) => { const d = decodeFrame(1, r.data); return d.l3 === 'ip4' && d.tcp_flags === 20; })!.data;
  const icmpFrame = recs.find((r) => decodeFrame(1, r.data).proto === 'icmp')!.data;
  const want = decodeFrame(1, rstFrame);
  const strip = (f: Uint8Array, lt: number, extra = 0) => ({ ...decodeFrame(lt, f), linktype: 1, caplen: f.length - extra, len: f.length - extra });

  it('802.1Q, Linux cooked v1/v2, raw IP and loopback null decode to the same columns', () => {
    const ip = rstFrame.subarray(14);
    const vlan = new Uint8Array([...rstFrame.subarray(0, 12), 0x81, 0x00, 0x00, 0x05, ...rstFrame.subarray(12)]);
    expect({ ...decodeFrame(1, vlan), caplen: rstFrame.length, len: rstFrame.length }).toEqual(want);
    const sll = new Uint8Array([0, 0, 0, 1, 0, 6, 1, 2, 3, 4, 5, 6, 0, 0, 0x08, 0x00, ...ip]);
    expect(strip(sll, 113, 2)).toEqual({ ...want, caplen: rstFrame.length, len: rstFrame.length });
    const sll2 = new Uint8Array([0x08, 0x00, 0, 0, 0, 0, 0, 2, 0, 1, 0, 6, 1, 2, 3, 4, 5, 6, 0, 0, ...ip]);
    expect({ ...decodeFrame(276, sll2), linktype: 1, caplen: rstFrame.length, len: rstFrame.length }).toEqual(want);
    for (const lt of [101, 12, 228]) expect({ ...decodeFrame(lt, ip), linktype: 1, caplen: rstFrame.length, len: rstFrame.length }).toEqual(want);
    const nul = new Uint8Array([2, 0, 0, 0, ...ip]);
    expect({ ...decodeFrame(0, nul), linktype: 1, caplen: rstFrame.length, len: rstFrame.length }).toEqual(want);
  });

  it('never throws on any truncation and keeps what the captured bytes allow', () => {
    for (const f of [rstFrame, icmpFrame]) {
      for (let n = 0; n <= f.length; n++) expect(() => decodeFrame(1, f.subarray(0, n), n, f.length)).not.toThrow();
    }
    const t = decodeFrame(1, rstFrame.subarray(0, 14 + 20 + 4), 38, rstFrame.length);
    expect(t).toMatchObject({ l3: 'ip4', src: '10.77.0.2', proto: 'tcp', sport: 9, dport: want.dport, seq: null, tcp_flags: null });
    const h = decodeFrame(1, rstFrame.subarray(0, 20), 20, rstFrame.length);
    expect(h).toMatchObject({ l3: 'ip4', src: null, proto: null });
    // the ICMP error cut inside the quoted header still names the inner addresses
    const q = decodeFrame(1, icmpFrame.subarray(0, 14 + 20 + 8 + 20), 62, icmpFrame.length);
    expect(q).toMatchObject({ icmp_type: 3, inner_dst: '10.77.0.2', inner_dport: null });
    expect(decodeFrame(999, rstFrame)).toMatchObject({ linktype: 999, l3: null });
  });

  it('IPv4 non-first fragments have no ports; IPv6 text is RFC 5952', () => {
    const ip = new Uint8Array(rstFrame.subarray(14));
    ip[6] = 0x00; ip[7] = 0x10; // fragment offset 16*8
    expect(decodeFrame(101, ip)).toMatchObject({ proto: 'tcp', sport: null, dport: null });
    const a = new Uint8Array(16); a[0] = 0x20; a[1] = 0x01; a[2] = 0x0d; a[3] = 0xb8; a[15] = 1;
    expect(ip6String(a, 0)).toBe('2001:db8::1');
    const m = new Uint8Array(16); m[10] = 0xff; m[11] = 0xff; m[12] = 10; m[15] = 7;
    expect(ip6String(m, 0)).toBe('::ffff:10.0.0.7');
  });
});
