/**
 * A deterministic synthetic capture of a rollout's traffic on a pod bridge, for the chunk tests and the
 * offline bench (1M packets): HTTP-like connections (SYN, SYN-ACK, ACK, request, response, FIN), some
 * bulk responses, connections refused (SYN answered by RST), resets before the response, ICMP port
 * unreachables, UDP DNS noise; client ports cycle so 4-tuples are reused. Ethernet, IPv4, ns pcap.
 */
import { openSync, writeSync, closeSync } from 'node:fs';

const MAC_A = [0x02, 0, 0, 0, 0, 1], MAC_B = [0x02, 0, 0, 0, 0, 2];

function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => { s = (s + 0x6d2b79f5) >>> 0; let t = s; t = Math.imul(t ^ (t >>> 15), t | 1); t ^= t + Math.imul(t ^ (t >>> 7), t | 61); return ((t ^ (t >>> 14)) >>> 0) / 4294967296; };
}

function ipSum(b: Buffer, o: number, n: number): number {
  let s = 0;
  for (let i = 0; i < n; i += 2) s += (b[o + i]! << 8) | b[o + i + 1]!;
  while (s > 0xffff) s = (s & 0xffff) + (s >>> 16);
  return ~s & 0xffff;
}

export interface SynthStats { packets: number; bytes: number; connections: number; refused: number; resetBeforeResponse: number; unreachable: number }

/** Write `packets` frames (at least) to `out`; returns what was generated. */
export function writeSynthPcap(out: string, packets: number, seed = 12): SynthStats {
  const r = rng(seed);
  const fd = openSync(out, 'w');
  const hdr = Buffer.alloc(24);
  hdr.writeUInt32LE(0xa1b23c4d, 0); hdr.writeUInt16LE(2, 4); hdr.writeUInt16LE(4, 6); hdr.writeUInt32LE(262144, 16); hdr.writeUInt32LE(1, 20);
  const buf = Buffer.alloc(4 << 20);
  let used = 0;
  buf.set(hdr, 0); used = 24;
  const st: SynthStats = { packets: 0, bytes: 0, connections: 0, refused: 0, resetBeforeResponse: 0, unreachable: 0 };
  let ts = 1_795_000_000_000_000_000; // ns
  const flush = () => { writeSync(fd, buf, 0, used); st.bytes += used; used = 0; };
  const frame = (proto: number, l4: (b: Buffer, o: number) => number, payload: number): void => {
    ts += 2_000 + Math.floor(r() * 60_000);
    if (used + 16 + 14 + 20 + 60 + payload > buf.length) flush();
    const o = used + 16;
    buf.set(MAC_A, o); buf.set(MAC_B, o + 6);
    buf.writeUInt16BE(0x0800, o + 12);
    const ip = o + 14;
    const l4len = l4(buf, ip + 20);
    const total = 20 + l4len + payload;
    buf[ip] = 0x45; buf[ip + 1] = 0; buf.writeUInt16BE(total, ip + 2); buf.writeUInt32BE(0x40000000, ip + 4);
    buf[ip + 8] = 64; buf[ip + 9] = proto; buf.writeUInt16BE(0, ip + 10);
    buf.writeUInt16BE(ipSum(buf, ip, 20), ip + 10);
    buf.fill(0x61, ip + 20 + l4len, ip + 20 + l4len + payload);
    const caplen = 14 + total;
    const sec = Math.floor(ts / 1e9);
    buf.writeUInt32LE(sec, used); buf.writeUInt32LE(ts - sec * 1e9, used + 4); buf.writeUInt32LE(caplen, used + 8); buf.writeUInt32LE(caplen, used + 12);
    used += 16 + caplen;
    st.packets++;
  };
  let cport = 30000;
  while (st.packets < packets) {
    const client = (10 << 24) | (244 << 16) | (0 << 8) | (1 + Math.floor(r() * 20));
    const server = (10 << 24) | (42 << 16) | (0 << 8) | (10 + Math.floor(r() * 8));
    cport = cport >= 49999 ? 30000 : cport + 1;
    const sp = cport, dp = 80;
    let cseq = Math.floor(r() * 2 ** 31), sseq = Math.floor(r() * 2 ** 31);
    const tcp = (fromClient: boolean, flags: number, payload: number) => {
      const a = fromClient ? client : server, b = fromClient ? server : client;
      frame(6, (bb, o) => {
        // the IP addresses are set here, after the generic header: src at o-8, dst at o-4
        bb.writeUInt32BE(a >>> 0, o - 8); bb.writeUInt32BE(b >>> 0, o - 4);
        bb.writeUInt16BE(fromClient ? sp : dp, o); bb.writeUInt16BE(fromClient ? dp : sp, o + 2);
        bb.writeUInt32BE((fromClient ? cseq : sseq) >>> 0, o + 4); bb.writeUInt32BE((fromClient ? sseq : cseq) >>> 0, o + 8);
        bb[o + 12] = 0x50; bb[o + 13] = flags; bb.writeUInt16BE(65535, o + 14); bb.writeUInt32BE(0, o + 16);
        return 20;
      }, payload);
      if (fromClient) cseq += payload + (flags & 3 ? 1 : 0); else sseq += payload + (flags & 3 ? 1 : 0);
    };
    st.connections++;
    const k = r();
    if (k < 0.02) { tcp(true, 0x02, 0); tcp(false, 0x14, 0); st.refused++; continue; }
    tcp(true, 0x02, 0); tcp(false, 0x12, 0); tcp(true, 0x10, 0);
    tcp(true, 0x18, 80 + Math.floor(r() * 100));
    if (k < 0.03) { tcp(false, 0x14, 0); st.resetBeforeResponse++; continue; }
    tcp(false, 0x10, 0);
    const segs = k > 0.9 ? 20 : 1;
    for (let i = 0; i < segs; i++) { tcp(false, 0x18, 200 + Math.floor(r() * 200)); if (i % 2) tcp(true, 0x10, 0); }
    tcp(true, 0x11, 0); tcp(false, 0x11, 0); tcp(true, 0x10, 0);
    if (r() < 0.2) {
      // DNS noise
      frame(17, (bb, o) => { bb.writeUInt32BE(client >>> 0, o - 8); bb.writeUInt32BE(((10 << 24) | (96 << 16) | 10) >>> 0, o - 4); bb.writeUInt16BE(40000 + (cport % 1000), o); bb.writeUInt16BE(53, o + 2); bb.writeUInt16BE(8 + 40, o + 4); bb.writeUInt16BE(0, o + 6); return 8; }, 40);
    }
    if (r() < 0.005) {
      // a UDP datagram to a closed port and its ICMP port unreachable quoting it
      st.unreachable++;
      frame(1, (bb, o) => {
        bb.writeUInt32BE(server >>> 0, o - 8); bb.writeUInt32BE(client >>> 0, o - 4);
        bb[o] = 3; bb[o + 1] = 3; bb.writeUInt16BE(0, o + 2); bb.writeUInt32BE(0, o + 4);
        const q = o + 8;
        bb[q] = 0x45; bb[q + 1] = 0; bb.writeUInt16BE(28, q + 2); bb.writeUInt32BE(0, q + 4); bb[q + 8] = 64; bb[q + 9] = 17; bb.writeUInt16BE(0, q + 10);
        bb.writeUInt32BE(client >>> 0, q + 12); bb.writeUInt32BE(server >>> 0, q + 16);
        bb.writeUInt16BE(45000, q + 20); bb.writeUInt16BE(9999, q + 22); bb.writeUInt16BE(8, q + 24); bb.writeUInt16BE(0, q + 26);
        return 8 + 28;
      }, 0);
    }
  }
  flush();
  closeSync(fd);
  return st;
}
