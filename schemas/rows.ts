/** TypeScript types of every bundle table row (see schemas/migrations/*.sql for column docs). */
import type { Clock, SourceStatus } from './events.js';

export interface MetaRow { key: string; value: string }

export interface SourceRow {
  name: string;
  status: SourceStatus | string;
  detail: string | null;
  events: number;
  dropped: number;
  clock: Clock | string;
}

export interface EventRow {
  id: number;
  ts_ns: number;
  source: string;
  kind: string;
  subject: string | null;
  /** JSON text */
  attrs: string;
}

/** Decoded packet columns (everything but id). */
export interface PacketRow {
  ts_ns: number;
  iface: string | null;
  linktype: number;
  caplen: number;
  len: number;
  l3: 'ip4' | 'ip6' | 'arp' | null;
  src: string | null;
  dst: string | null;
  proto: string | null;
  sport: number | null;
  dport: number | null;
  tcp_flags: number | null;
  seq: number | null;
  ack: number | null;
  payload_len: number | null;
  icmp_type: number | null;
  icmp_code: number | null;
  inner_src: string | null;
  inner_dst: string | null;
  inner_proto: string | null;
  inner_sport: number | null;
  inner_dport: number | null;
  data: Uint8Array | null;
}
export type StoredPacketRow = PacketRow & { id: number };

export const TCP = { FIN: 1, SYN: 2, RST: 4, PSH: 8, ACK: 16, URG: 32, ECE: 64, CWR: 128 } as const;

export interface ConntrackRow {
  ts_ns: number;
  type: 'NEW' | 'UPDATE' | 'DESTROY';
  proto: string;
  state: string | null;
  orig_src: string | null;
  orig_dst: string | null;
  orig_sport: number | null;
  orig_dport: number | null;
  reply_src: string | null;
  reply_dst: string | null;
  reply_sport: number | null;
  reply_dport: number | null;
  flags: string | null;
  zone: number | null;
  raw: string | null;
}

export interface K8sObjectRow {
  ts_ns: number;
  kind: string;
  namespace: string | null;
  name: string | null;
  uid: string | null;
  resource_version: string | null;
  event_type: 'ADDED' | 'MODIFIED' | 'DELETED' | 'BOOKMARK' | 'LIST' | 'RELIST';
  /** JSON text */
  object: string;
}

export interface NftSnapshotRow {
  ts_ns: number;
  format: 'nft-json' | 'iptables-save' | 'iptables-legacy-save';
  reason: 'start' | 'burst' | 'stop' | 'poll' | string | null;
  ruleset: string;
}

export interface ProbeRequestRow {
  start_ns: number;
  end_ns: number | null;
  local_addr: string | null;
  local_port: number | null;
  remote: string;
  outcome: 'ok' | 'error' | 'timeout';
  status: number | null;
  error: string | null;
}

/** Well-known meta keys. Values are text; JSON where noted. */
export const META_KEYS = {
  schemaVersion: 'schema_version',
  rolltraceVersion: 'rolltrace_version',
  argv: 'argv', // JSON array
  hostname: 'hostname',
  node: 'node', // Kubernetes node name when known, else hostname
  kernel: 'kernel',
  toolVersions: 'tool_versions', // JSON object tool -> version line
  clockOffsets: 'clock_offsets', // JSON object e.g. {"monotonic_to_realtime_ns": 1700000000000000000}
  receiptStamped: 'receipt_stamped_sources', // JSON array of source names
  startedNs: 'started_ns',
  sourcesLiveNs: 'sources_live_ns', // JSON object source -> instant (ns) it was live (record); before it, that source was blind
  endedNs: 'ended_ns',
  closedCleanly: 'closed_cleanly', // "1" once finalized; absent or "0" after a crash
  createdBy: 'created_by', // record, import, merge, redact, lab
  mergedFrom: 'merged_from', // JSON array (merge)
  nodeClockOffsets: 'node_clock_offsets', // JSON object node -> offset ns (merge)
  nodeAddrs: 'node_addrs', // JSON object node -> the node's own interface addresses (the kubelet probes from them)
  redacted: 'redacted', // JSON summary (redact)
  straceMode: 'strace_mode', // JSON {requested, mode, reason}: lazy|all|off as run (record)
  packetsIndex: 'packets_index', // "deferred": packet_chunks were stored without their index in `packets` (record); readers build it (absent: indexed)
  netns: 'netns', // JSON {arg, path, inode, own, sources}: record --netns, the namespace nftables/conntrack read
} as const;
