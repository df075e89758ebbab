/**
 * Packet bytes for sharing: keep the link, IP and L4 headers (and the quoted headers of ICMP errors),
 * drop every payload byte; optionally rewrite IP addresses (IPv4/IPv6, ARP, ICMP-quoted headers) with
 * the IPv4 header checksum recomputed and the TCP/UDP/ICMP checksums adjusted incrementally
 * (RFC 1624), so Wireshark still validates them against the original segment length.
 */

export type IpMapper = (ip: string) => string;

function ip4str(b: Uint8Array, o: number): string { return `${b[o]}.${b[o + 1]}.${b[o + 2]}.${b[o + 3]}`; }
function ip4bytes(s: string): number[] { return s.split('.').map(Number); }

function ip6str(b: Uint8Array, o: number): string {
  const g: string[] = [];
  for (let i = 0; i < 16; i += 2) g.push(((b[o + i]! << 8) | b[o + i + 1]!).toString(16));
  return compress6(g);
}
function compress6(g: string[]): string {
  // longest run of zeros → ::
  let best = -1, bestLen = 0;
  for (let i = 0; i < 8;) {
    if (g[i] !== '0') { i++; continue; }
    let j = i; while (j < 8 && g[j] === '0') j++;
    if (j - i > bestLen && j - i > 1) { best = i; bestLen = j - i; }
    i = j;
  }
  if (best < 0) return g.join(':');
  return `${g.slice(0, best).join(':')}::${g.slice(best + bestLen).join(':')}`;
}
export function ip6bytes(s: string): number[] {
  let parts: string[];
  if (s.includes('::')) {
    const [a, b] = s.split('::') as [string, string];
    const ha = a ? a.split(':') : [];
    const hb = b ? b.split(':') : [];
    parts = [...ha, ...Array(8 - ha.length - hb.length).fill('0'), ...hb];
  } else parts = s.split(':');
  const out: number[] = [];
  for (const p of parts) { const v = parseInt(p || '0', 16); out.push(v >> 8, v & 0xff); }
  return out;
}

function sum16(b: Uint8Array, o: number, n: number): number {
  let s = 0;
  for (let i = 0; i + 1 < n; i += 2) s += (b[o + i]! << 8) | b[o + i + 1]!;
  if (n % 2) s += b[o + n - 1]! << 8;
  return s;
}
function fold(s: number): number { while (s >> 16) s = (s & 0xffff) + (s >> 16); return s; }

/** RFC 1624 eqn 3: HC' = ~(~HC + ~m + m') over the changed 16-bit words. */
function adjustChecksum(hc: number, oldWords: number[], newWords: number[]): number {
  let s = (~hc) & 0xffff;
  for (let i = 0; i < oldWords.length; i++) s += ((~oldWords[i]!) & 0xffff) + newWords[i]!;
  return (~fold(s)) & 0xffff;
}
function words(bytes: number[] | Uint8Array, o = 0, n = bytes.length): number[] {
  const w: number[] = [];
  for (let i = 0; i < n; i += 2) w.push(((bytes[o + i] ?? 0) << 8) | (bytes[o + i + 1] ?? 0));
  return w;
}

interface L3 { off: number; ethertype: number }

/** Offset of the network header for a pcap linktype, or null when unknown. */
export function networkOffset(data: Uint8Array, linktype: number): L3 | null {
  const n = data.length;
  switch (linktype) {
    case 1: { // Ethernet (+ VLAN tags)
      if (n < 14) return null;
      let o = 12;
      let et = (data[o]! << 8) | data[o + 1]!;
      while ((et === 0x8100 || et === 0x88a8 || et === 0x9100) && n >= o + 6) { o += 4; et = (data[o]! << 8) | data[o + 1]!; }
      return { off: o + 2, ethertype: et };
    }
    case 113: return n >= 16 ? { off: 16, ethertype: (data[14]! << 8) | data[15]! } : null; // Linux cooked v1
    case 276: return n >= 20 ? { off: 20, ethertype: (data[0]! << 8) | data[1]! } : null; // Linux cooked v2
    case 101: case 12: case 14: case 228: case 229: { // raw IP
      if (!n) return null;
      const v = data[0]! >> 4;
      return { off: 0, ethertype: v === 6 ? 0x86dd : 0x0800 };
    }
    case 0: case 109: { // BSD loopback / OpenBSD loop: 4-byte address family
      if (n < 5) return null;
      const v = data[4]! >> 4;
      return { off: 4, ethertype: v === 6 ? 0x86dd : 0x0800 };
    }
    default: return null;
  }
}

interface IpHdr { v: 4 | 6; off: number; hlen: number; proto: number; l4: number }
function ipHeader(d: Uint8Array, off: number): IpHdr | null {
  if (d.length < off + 1) return null;
  const v = d[off]! >> 4;
  if (v === 4) {
    const hlen = (d[off]! & 0xf) * 4;
    if (hlen < 20 || d.length < off + hlen) return null;
    return { v: 4, off, hlen, proto: d[off + 9]!, l4: off + hlen };
  }
  if (v === 6) {
    if (d.length < off + 40) return null;
    let nh = d[off + 6]!;
    let p = off + 40;
    for (let guard = 0; guard < 8 && [0, 43, 60, 44].includes(nh); guard++) {
      if (d.length < p + 8) return null;
      const next = d[p]!;
      p += nh === 44 ? 8 : (d[p + 1]! + 1) * 8;
      nh = next;
    }
    return { v: 6, off, hlen: p - off, proto: nh, l4: p };
  }
  return null;
}

/** Bytes of the headers to keep after an IP header (L4 header, and ICMP errors' quoted headers). */
function l4Keep(d: Uint8Array, ip: IpHdr): number {
  const rest = d.length - ip.l4;
  if (rest <= 0) return 0;
  switch (ip.proto) {
    case 6: return rest >= 13 ? Math.min(rest, Math.max(20, (d[ip.l4 + 12]! >> 4) * 4)) : rest;
    case 17: return Math.min(rest, 8);
    case 1: case 58: {
      const type = d[ip.l4]!;
      const isErr = ip.proto === 1 ? [3, 4, 5, 11, 12].includes(type) : type >= 1 && type <= 4;
      if (!isErr || rest <= 8) return Math.min(rest, 8);
      const inner = ipHeader(d, ip.l4 + 8);
      if (!inner) return Math.min(rest, 8);
      return Math.min(rest, 8 + inner.hlen + 8);
    }
    default: return 0;
  }
}

/** Headers-only copy of a frame. Unknown link types and non-IP frames other than ARP keep nothing past the link header. */
export function stripPayload(data: Uint8Array, linktype: number): Uint8Array {
  const l3 = networkOffset(data, linktype);
  if (!l3) return data.subarray(0, 0);
  if (l3.ethertype === 0x0806) return data.subarray(0, Math.min(data.length, l3.off + 28)); // ARP: no payload
  const ip = ipHeader(data, l3.off);
  if (!ip) return data.subarray(0, Math.min(data.length, l3.off));
  return data.subarray(0, ip.l4 + l4Keep(data, ip));
}

function rewriteIp(d: Uint8Array, ip: IpHdr, map: IpMapper, l4Csum: boolean): void {
  if (ip.v === 4) {
    const o = ip.off;
    const oldAddr = Array.from(d.subarray(o + 12, o + 20));
    const ns = ip4bytes(map(ip4str(d, o + 12)));
    const nd = ip4bytes(map(ip4str(d, o + 16)));
    d.set(ns, o + 12); d.set(nd, o + 16);
    d[o + 10] = 0; d[o + 11] = 0;
    const c = (~fold(sum16(d, o, ip.hlen))) & 0xffff;
    d[o + 10] = c >> 8; d[o + 11] = c & 0xff;
    if (l4Csum) fixL4(d, ip, oldAddr, [...ns, ...nd]);
  } else {
    const o = ip.off;
    const oldAddr = Array.from(d.subarray(o + 8, o + 40));
    const ns = ip6bytes(map(ip6str(d, o + 8)));
    const nd = ip6bytes(map(ip6str(d, o + 24)));
    d.set(ns, o + 8); d.set(nd, o + 24);
    if (l4Csum) fixL4(d, ip, oldAddr, [...ns, ...nd]);
  }
}

/** Adjust the L4 checksum for the pseudo-header change (TCP, UDP, ICMPv6 use it; ICMPv4 does not). */
function fixL4(d: Uint8Array, ip: IpHdr, oldAddr: number[], newAddr: number[]): void {
  const at = ip.proto === 6 ? 16 : ip.proto === 17 ? 6 : ip.proto === 58 ? 2 : -1;
  if (at < 0 || d.length < ip.l4 + at + 2) return;
  const hc = (d[ip.l4 + at]! << 8) | d[ip.l4 + at + 1]!;
  if (ip.proto === 17 && hc === 0) return; // no UDP checksum
  let c = adjustChecksum(hc, words(oldAddr), words(newAddr));
  if (ip.proto === 17 && c === 0) c = 0xffff;
  d[ip.l4 + at] = c >> 8; d[ip.l4 + at + 1] = c & 0xff;
}

/** Rewrite every IP address in a (possibly truncated) frame in place. */
export function pseudonymizeFrame(data: Uint8Array, linktype: number, map: IpMapper): void {
  const l3 = networkOffset(data, linktype);
  if (!l3) return;
  if (l3.ethertype === 0x0806) {
    const o = l3.off;
    if (data.length >= o + 28 && data[o + 4] === 6 && data[o + 5] === 4) {
      data.set(ip4bytes(map(ip4str(data, o + 14))), o + 14);
      data.set(ip4bytes(map(ip4str(data, o + 24))), o + 24);
    }
    return;
  }
  const ip = ipHeader(data, l3.off);
  if (!ip) return;
  rewriteIp(data, ip, map, true);
  if ((ip.proto === 1 || ip.proto === 58) && data.length >= ip.l4 + 8) {
    const inner = ipHeader(data, ip.l4 + 8);
    if (!inner) return;
    const before = Array.from(data.subarray(ip.l4 + 8, ip.l4 + 8 + inner.hlen));
    rewriteIp(data, inner, map, false);
    const after = Array.from(data.subarray(ip.l4 + 8, ip.l4 + 8 + inner.hlen));
    // the ICMP checksum covers the quoted header: adjust it by the quoted bytes that changed
    const hc = (data[ip.l4 + 2]! << 8) | data[ip.l4 + 3]!;
    const c = adjustChecksum(hc, words(before), words(after));
    data[ip.l4 + 2] = c >> 8; data[ip.l4 + 3] = c & 0xff;
  }
}
