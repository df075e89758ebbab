/**
 * Every event kind a bundle's `events` table may hold: a discriminated union on `kind`.
 * The `attrs` column holds the JSON of the matching `...Attrs` interface.
 *
 * Timestamps are Unix-epoch nanoseconds on the node's realtime clock, as JS numbers
 * (exact to ~256 ns at today's epoch, below every source's own precision).
 */

export const SOURCE_NAMES = [
  'packets', 'strace', 'ebpf', 'nftables', 'conntrack', 'kube', 'probe', 'rollout', 'recorder', 'lab',
] as const;
/** Recorder sources plus `import:<kind>` for bundles built by `rolltrace import`. */
export type SourceName = (typeof SOURCE_NAMES)[number] | `import:${string}`;

/** How a source stamps time. */
export const CLOCKS = {
  /** stamped by the kernel, or by a tracer synchronously with the kernel event, on the realtime clock (pcap, strace -ttt) */
  kernel: 'kernel',
  /** stamped by the kernel on CLOCK_MONOTONIC/BOOTTIME and converted with meta.clock_offset_* */
  convertedMonotonic: 'converted-monotonic',
  /** stamped on receipt from an unbuffered pipe, by rolltrace (nft monitor, watches) or by the tool (conntrack -o timestamp) */
  receipt: 'receipt',
  /** seen by polling at an interval: the true instant is up to one interval earlier */
  polled: 'polled',
  /** taken from a file given to `rolltrace import` */
  file: 'file',
} as const;
export type Clock = (typeof CLOCKS)[keyof typeof CLOCKS];

export const SOURCE_STATUS = ['ok', 'failed', 'disabled', 'unavailable', 'stopped-early', 'running'] as const;
export type SourceStatus = (typeof SOURCE_STATUS)[number];

// ---------------------------------------------------------------- process (strace, ebpf)

export interface SignalAttrs {
  pid: number;
  tid?: number;
  comm?: string;
  signo: number;
  /** e.g. SIGTERM */
  signame: string;
  /** generated: the kernel queued it (ebpf signal_generate); delivered: the process received it (strace) */
  phase: 'generated' | 'delivered';
  sender_pid?: number;
  sender_comm?: string;
  /** kernel result of signal_generate (0 delivered, 1 ignored, ...) */
  result?: number;
  /** pod UID of the target, from /proc/PID/cgroup read when the event was received (ebpf; null when gone) */
  pod_uid?: string | null;
}

export interface ListenAttrs {
  pid: number;
  comm?: string;
  fd?: number;
  addr: string;
  port: number;
  /** how rolltrace learnt of it: the listen() syscall, /proc at attach, or the kernel's TCP state */
  how: 'syscall' | 'proc' | 'tcp-state';
  netns?: number;
  /** cgroup v2 id of the listening task (ebpf) */
  cgroup_id?: number;
  /** pod UID when the cgroup maps to a pod on this node */
  pod_uid?: string | null;
}

export interface AcceptAttrs {
  pid: number;
  fd: number;
  listen_fd?: number;
  peer?: string;
  peer_port?: number;
}

export interface ListenerClosedAttrs {
  pid?: number;
  comm?: string;
  fd?: number;
  addr: string;
  port: number;
  /** close(2), shutdown(2), the process exiting with the listener open, or LISTEN->CLOSE seen by the kernel */
  how: 'close' | 'shutdown' | 'exit' | 'tcp-state';
  netns?: number;
  cgroup_id?: number;
  /** pod UID when the cgroup maps to a pod on this node */
  pod_uid?: string | null;
}

export interface ProcessExitAttrs {
  pid: number;
  comm?: string;
  /** exit status when it exited normally */
  code?: number | null;
  /** the signal that killed it, e.g. SIGKILL */
  signal?: string | null;
}

export interface ProcessAttachedAttrs {
  pid: number;
  comm?: string;
  cmdline?: string;
  /** Kubernetes pod UID, from /proc/PID/cgroup */
  pod_uid?: string | null;
  container_id?: string | null;
  cgroup?: string;
  /** network namespace inode */
  netns?: number;
  /** the IPv4/IPv6 addresses of the process's network namespace (so a process maps to a pod IP without the API) */
  addrs: string[];
  /** listeners open at attach time, from /proc/PID/fd and /proc/PID/net/tcp{,6} */
  listeners?: Array<{ fd: number; addr: string; port: number }>;
  /**
   * The strace mode that decided this attach (lazy: only pods whose termination began; all: from the
   * start) and why: `all`, `pod-terminating` (deletionTimestamp seen by the kube source) or `signal`
   * (a SIGTERM generated to the process or its pod, seen by ebpf). Absent in bundles before issue 14.
   */
  mode?: 'lazy' | 'all';
  reason?: 'all' | 'pod-terminating' | 'signal';
  /** the instant of what triggered the attach (recording start, deletion seen, SIGTERM generated) */
  trigger_ns?: number;
  /**
   * when rolltrace started strace on the process; the event's own ts is when strace reported the
   * process attached (ptrace seized: every syscall and signal after ts is seen), or, without that
   * report, the request instant with `confirmed: false` and the reason in `error` (a report later
   * than 1 s gives a second event, confirmed)
   */
  requested_ns?: number;
  confirmed?: boolean;
  error?: string;
}

export interface TcpResetSentAttrs {
  saddr: string;
  sport: number;
  daddr: string;
  dport: number;
  /** the kernel's reset reason (sk_rst_reason) when the tracepoint has one */
  reason?: string;
  state?: string;
  pid?: number;
  comm?: string;
  netns?: number;
}

// ---------------------------------------------------------------- node rules (nftables / iptables)

export interface RulesChangedAttrs {
  /** how many monitor lines made this burst */
  lines: number;
  /** counts per operation, e.g. {"add rule": 12, "delete chain": 2} */
  ops: Record<string, number>;
  /** kube-proxy tables the burst touched */
  tables: string[];
}

export interface EndpointRuleAttrs {
  /** service label: namespace/name:port from chain names or comments, else the VIP ip:port */
  service: string;
  /** the service's virtual address as ip:port, when the rules say */
  vip?: string | null;
  /** NodePort / external path, when the endpoint is reached through one */
  node_port?: number | null;
  /** backend as ip:port */
  endpoint: string;
  ip: string;
  port: number;
  /** the endpoint chain (endpoint-XXXX / KUBE-SEP-XXXX) */
  chain?: string | null;
  mode: 'nftables' | 'iptables' | 'iptables-legacy';
  /** the instant comes from the first monitor line of the burst (receipt) or from polling */
  clock?: Clock;
}

/**
 * One path of a service reaching one endpoint on this node (path-rule-added/removed). kube-proxy programs
 * the paths separately: the cluster IP (internalTrafficPolicy), the NodePort and the load-balancer /
 * external IPs (externalTrafficPolicy: Local sends these only to this node's endpoints, falling back to
 * serving+terminating ones when none is ready). endpoint-rule-added/removed keep meaning "any path".
 */
export interface PathRuleAttrs extends Pick<EndpointRuleAttrs, 'service' | 'endpoint' | 'ip' | 'port' | 'chain' | 'mode' | 'clock'> {
  /** cluster-ip, node-port, or external-ip (load-balancer / external IP) */
  path: 'cluster-ip' | 'node-port' | 'external-ip';
  /** the path's destination as ip:port; a NodePort is `*:PORT` (any local address) */
  addr: string;
  /** the traffic policy of this path: Local sends to this node's endpoints only */
  policy: 'Cluster' | 'Local';
}

export interface NoEndpointRuleAttrs {
  service: string;
  vip?: string | null;
  node_port?: number | null;
  /** what the node does when a service has no endpoint here: reject (ICMP) or drop */
  action: 'reject' | 'drop';
  mode: 'nftables' | 'iptables' | 'iptables-legacy';
}

export interface NftChangeAttrs {
  /** add, delete, flush, ... as printed by nft monitor */
  op: string;
  object: string;
  family?: string;
  table?: string;
  chain?: string;
  handle?: number;
}

// ---------------------------------------------------------------- kube (derived from watch events)

export interface PodRef {
  namespace: string;
  name: string;
  uid: string;
  ip?: string | null;
  node?: string | null;
}
export interface PodTerminatingAttrs extends PodRef {
  deletionTimestamp: string;
  gracePeriodSeconds?: number | null;
}
export interface PodReadyAttrs extends PodRef {
  ready: boolean;
}
export interface EndpointChangedAttrs {
  namespace: string;
  slice: string;
  service?: string | null;
  ip: string;
  ports?: number[];
  change: 'added' | 'removed' | 'modified';
  ready?: boolean | null;
  serving?: boolean | null;
  terminating?: boolean | null;
  pod?: string | null;
  pod_uid?: string | null;
  node?: string | null;
}
export interface WatchAttrs {
  resource: string;
  reason?: string;
  resourceVersion?: string;
}
export interface RolloutAttrs {
  namespace: string;
  deployment: string;
  detail?: string;
}

// ---------------------------------------------------------------- recorder

export interface MarkerAttrs {
  text: string;
}
export interface CaptureCappedAttrs {
  max_mb: number;
  packets: number;
}

/** kind → attrs type. Extend here (never change the meaning of an existing kind). */
export interface EventAttrsByKind {
  signal: SignalAttrs;
  listen: ListenAttrs;
  accept: AcceptAttrs;
  'listener-closed': ListenerClosedAttrs;
  'process-exit': ProcessExitAttrs;
  'process-attached': ProcessAttachedAttrs;
  'tcp-reset-sent': TcpResetSentAttrs;
  'rules-changed': RulesChangedAttrs;
  'nft-change': NftChangeAttrs;
  'endpoint-rule-added': EndpointRuleAttrs;
  'endpoint-rule-removed': EndpointRuleAttrs;
  'no-endpoint-rule-added': NoEndpointRuleAttrs;
  'no-endpoint-rule-removed': NoEndpointRuleAttrs;
  'path-rule-added': PathRuleAttrs;
  'path-rule-removed': PathRuleAttrs;
  'pod-created': PodRef;
  'pod-ready': PodReadyAttrs;
  'pod-terminating': PodTerminatingAttrs;
  'pod-deleted': PodRef;
  'endpoint-changed': EndpointChangedAttrs;
  'watch-reconnect': WatchAttrs;
  'watch-relist': WatchAttrs;
  'rollout-restart': RolloutAttrs;
  'rollout-complete': RolloutAttrs;
  marker: MarkerAttrs;
  'capture-capped': CaptureCappedAttrs;
}
export type EventKind = keyof EventAttrsByKind;
export const EVENT_KINDS: readonly EventKind[] = [
  'signal', 'listen', 'accept', 'listener-closed', 'process-exit', 'process-attached', 'tcp-reset-sent',
  'rules-changed', 'nft-change', 'endpoint-rule-added', 'endpoint-rule-removed', 'no-endpoint-rule-added',
  'no-endpoint-rule-removed', 'pod-created', 'pod-ready', 'pod-terminating', 'pod-deleted',
  'endpoint-changed', 'watch-reconnect', 'watch-relist', 'rollout-restart', 'rollout-complete', 'marker',
  'capture-capped', 'path-rule-added', 'path-rule-removed',
] as const;

/** One row of `events`, typed by kind. */
export type RtEvent = {
  [K in EventKind]: {
    kind: K;
    ts_ns: number;
    source: SourceName;
    subject: string | null;
    attrs: EventAttrsByKind[K];
  };
}[EventKind];

/** Build a typed event (helps inference at call sites). */
export function ev<K extends EventKind>(
  kind: K, ts_ns: number, source: SourceName, subject: string | null, attrs: EventAttrsByKind[K],
): RtEvent {
  return { kind, ts_ns, source, subject, attrs } as RtEvent;
}

export function isEventKind(k: string): k is EventKind {
  return (EVENT_KINDS as readonly string[]).includes(k);
}
