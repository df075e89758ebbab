/**
 * Pure, bounds-checked frame decoder (the tcpdump way: decode as far as the captured bytes allow,
 * leave the rest null, never throw). Shared by the packets source and `rolltrace import`.
 */
import type { PacketRow } from '../rows.js';

export type DecodedFrame = Omit<PacketRow, 'ts_ns' | 'iface' | 'data'>;

export const LINKTYPE = {
  NULL: 0, ETHERNET: 1, RAW_OLD: 12, RAW: 101, LINUX_SLL: 113, IPV4: 228, IPV6: 229, LINUX_SLL2: 276,
} as const;

const ETH_IP4 = 0x0800;
const ETH_IP6 = 0x86dd;
const ETH_ARP = 0x0806;
const ETH_VLAN = [0x8100, 0x88a8, 0x9100];

function emptyRow(linktype: number, caplen: number, len: number): DecodedFrame {
  return {
    linktype, caplen, len, l3: null, src: null, dst: null, proto: null, sport: null, dport: null, tcp_flags: null,
    seq: null, ack: null, payload_len: null, icmp_type: null, icmp_code: null, inner_src: null, inner_dst: null,
    inner_proto: null, inner_sport: null, inner_dport: null,
  };
}

function u16(d: Uint8Array, o: number): number { return (d[o]! << 8) | d[o + 1]!; }
function u32(d: Uint8Array, o: number): number { return ((d[o]! << 24) >>> 0) + ((d[o + 1]! << 16) | (d[o + 2]! << 8) | d[o + 3]!); }

export function ip4String(d: Uint8Array, o: number): string {
  return `${d[o]}.${d[o + 1]}.${d[o + 2]}.${d[o + 3]}`;
}

/** RFC 5952 text form of 16 bytes at d[o]. */
export function ip6String(d: Uint8Array, o: number): string {
  const g: number[] = [];
  for (let i = 0; i < 8; i++) g.push(u16(d, o + i * 2));
  // IPv4-mapped ::ffff:a.b.c.d
  if (g[0] === 0 && g[1] === 0 && g[2] === 0 && g[3] === 0 && g[4] === 0 && g[5] === 0xffff) {
    return `::ffff:${ip4String(d, o + 12)}`;
  }
  let bestStart = -1, bestLen = 0;
  for (let i = 0; i < 8;) {
    if (g[i] !== 0) { i++; continue; }
    let j = i;
    while (j < 8 && g[j] === 0) j++;
    if (j - i > bestLen && j - i >= 2) { bestStart = i; bestLen = j - i; }
    i = j;
  }
  const hex = g.map((x) => x.toString(16));
  if (bestStart < 0) return hex.join(':');
  return `${hex.slice(0, bestStart).join(':')}::${hex.slice(bestStart + bestLen).join(':')}`;
}

const PROTO_NAMES: Record<number, string> = { 1: 'icmp', 6: 'tcp', 17: 'udp', 58: 'icmp6', 132: 'sctp' };
function protoName(p: number): string { return PROTO_NAMES[p] ?? String(p); }

/** IPv6 extension headers we skip over to reach the upper layer. */
const IP6_EXT = new Set([0, 43, 60, 51, 135]);
const IP6_FRAG = 44;

interface L3 {
  l3: 'ip4' | 'ip6';
  src: string | null;
  dst: string | null;
  proto: number | null;
  /** offset of the L4 header, or -1 when it cannot be reached (truncated, non-first fragment) */
  l4: number;
  /** L4 bytes on the wire according to the IP header, or null */
  l4len: number | null;
}

/** Decode an IP header at o (version from the first nibble). end = captured end. */
function decodeIp(d: Uint8Array, o: number, end: number): L3 | null {
  if (o >= end) return null;
  const v = d[o]! >> 4;
  if (v === 4) {
    const r: L3 = { l3: 'ip4', src: null, dst: null, proto: null, l4: -1, l4len: null };
    if (end - o < 20) return r;
    const ihl = (d[o]! & 0x0f) * 4;
    const total = u16(d, o + 2);
    const frag = u16(d, o + 6);
    r.proto = d[o + 9]!;
    r.src = ip4String(d, o + 12);
    r.dst = ip4String(d, o + 16);
    if (ihl < 20) return r;
    r.l4len = total >= ihl ? total - ihl : null;
    const fragOffset = frag & 0x1fff;
    if (fragOffset !== 0) return r; // non-first fragment: no L4 header here
    if (o + ihl <= end) r.l4 = o + ihl;
    return r;
  }
  if (v === 6) {
    const r: L3 = { l3: 'ip6', src: null, dst: null, proto: null, l4: -1, l4len: null };
    if (end - o < 40) return r;
    const plen = u16(d, o + 4);
    let nh = d[o + 6]!;
    r.src = ip6String(d, o + 8);
    r.dst = ip6String(d, o + 24);
    let p = o + 40;
    let remaining = plen;
    for (let guard = 0; guard < 8; guard++) {
      if (IP6_EXT.has(nh)) {
        if (p + 2 > end) { r.proto = nh; return r; }
        const hlen = nh === 51 ? (d[p + 1]! + 2) * 4 : (d[p + 1]! + 1) * 8;
        nh = d[p]!;
        p += hlen; remaining -= hlen;
        continue;
      }
      if (nh === IP6_FRAG) {
        if (p + 8 > end) { r.proto = nh; return r; }
        const fo = u16(d, p + 2) >> 3;
        nh = d[p]!;
        p += 8; remaining -= 8;
        if (fo !== 0) { r.proto = nh; r.l4len = remaining >= 0 ? remaining : null; return r; }
        continue;
      }
      break;
    }
    r.proto = nh;
    r.l4len = remaining >= 0 ? remaining : null;
    if (p <= end) r.l4 = p;
    return r;
  }
  return null;
}

function decodeIpInto(row: DecodedFrame, d: Uint8Array, o: number, end: number): void {
  const ip = decodeIp(d, o, end);
  if (!ip) return;
  row.l3 = ip.l3;
  row.src = ip.src;
  row.dst = ip.dst;
  if (ip.proto === null) return;
  row.proto = protoName(ip.proto);
  const p = ip.l4;
  if (p < 0) return;
  if (ip.proto === 6) {
    if (p + 4 <= end) { row.sport = u16(d, p); row.dport = u16(d, p + 2); }
    if (p + 8 <= end) row.seq = u32(d, p + 4);
    if (p + 12 <= end) row.ack = u32(d, p + 8);
    if (p + 14 <= end) {
      row.tcp_flags = d[p + 13]!;
      const doff = (d[p + 12]! >> 4) * 4;
      if (ip.l4len !== null && doff >= 20) row.payload_len = Math.max(0, ip.l4len - doff);
    }
  } else if (ip.proto === 17) {
    if (p + 4 <= end) { row.sport = u16(d, p); row.dport = u16(d, p + 2); }
    if (ip.l4len !== null) row.payload_len = Math.max(0, ip.l4len - 8);
  } else if (ip.proto === 1 || ip.proto === 58) {
    if (p + 1 <= end) row.icmp_type = d[p]!;
    if (p + 2 <= end) row.icmp_code = d[p + 1]!;
    const t = row.icmp_type;
    const isError = ip.proto === 1 ? (t === 3 || t === 11 || t === 12 || t === 4 || t === 5) : (t !== null && t < 128);
    if (isError && p + 8 < end) {
      const inner = decodeIp(d, p + 8, end);
      if (inner) {
        row.inner_src = inner.src;
        row.inner_dst = inner.dst;
        row.inner_proto = inner.proto === null ? null : protoName(inner.proto);
        if (inner.l4 >= 0 && (inner.proto === 6 || inner.proto === 17) && inner.l4 + 4 <= end) {
          row.inner_sport = u16(d, inner.l4);
          row.inner_dport = u16(d, inner.l4 + 2);
        }
      }
    }
    if (ip.l4len !== null) row.payload_len = Math.max(0, ip.l4len - 8);
  }
}

function decodeEthertype(row: DecodedFrame, et: number, d: Uint8Array, o: number, end: number): void {
  if (et === ETH_IP4 || et === ETH_IP6) decodeIpInto(row, d, o, end);
  else if (et === ETH_ARP) row.l3 = 'arp';
}

/**
 * Decode one captured frame. `caplen` bytes of `data` are valid; `len` is the original length.
 * Never throws: whatever is truncated stays null.
 */
export function decodeFrame(linktype: number, data: Uint8Array, caplen: number = data.length, len: number = caplen): DecodedFrame {
  const row = emptyRow(linktype, caplen, len);
  const d = data;
  const end = Math.min(caplen, d.length);
  switch (linktype) {
    case LINKTYPE.ETHERNET: {
      if (end < 14) return row;
      let et = u16(d, 12);
      let o = 14;
      for (let i = 0; i < 2 && ETH_VLAN.includes(et); i++) {
        if (o + 4 > end) return row;
        et = u16(d, o + 2);
        o += 4;
      }
      decodeEthertype(row, et, d, o, end);
      return row;
    }
    case LINKTYPE.LINUX_SLL: {
      if (end < 16) return row;
      decodeEthertype(row, u16(d, 14), d, 16, end);
      return row;
    }
    case LINKTYPE.LINUX_SLL2: {
      if (end < 20) return row;
      decodeEthertype(row, u16(d, 0), d, 20, end);
      return row;
    }
    case LINKTYPE.RAW: case LINKTYPE.RAW_OLD: case 14: case LINKTYPE.IPV4: case LINKTYPE.IPV6:
      decodeIpInto(row, d, 0, end);
      return row;
    case LINKTYPE.NULL: {
      if (end < 4) return row;
      // host byte order AF_ value: 2 = AF_INET; 10/24/28/30 = AF_INET6 on various OSes
      const le = d[0]! | (d[1]! << 8);
      const be = u16(d, 2);
      const af = le !== 0 ? le : be;
      if (af === 2 || af === 10 || af === 24 || af === 28 || af === 30) decodeIpInto(row, d, 4, end);
      return row;
    }
    default:
      return row;
  }
}
