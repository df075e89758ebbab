/** A TCP packet row as the failure detector reads it (the columns it uses; the rest empty). */
import type { StoredPacketRow } from '../../schemas/rows.js';

export const pkt = (ts: number, src: string, sport: number, dst: string, dport: number, flags: number, payload = 0, iface = 'cni0'): StoredPacketRow => ({
  id: ts, ts_ns: ts, iface, linktype: 1, caplen: 0, len: 0, l3: 'ip4', src, dst, proto: 'tcp', sport, dport, tcp_flags: flags, seq: null, ack: null,
  payload_len: payload, icmp_type: null, icmp_code: null, inner_src: null, inner_dst: null, inner_sport: null, inner_dport: null, inner_proto: null, data: null,
} as unknown as StoredPacketRow);
