-- rolltrace bundle schema, migration 001: the core tables.
-- Every *_ns column is Unix-epoch nanoseconds on the recording node's realtime clock.
-- Comments of the form `-- name: text` directly after a column document it; docs/bundle.md is
-- generated from them (npm run docs:bundle) and a test checks the two agree.

-- table meta: key/value facts about the recording (schema version, host, kernel, argv, clocks, ...).
CREATE TABLE meta (
  key   TEXT PRIMARY KEY, -- key: name of the fact, e.g. schema_version, hostname, kernel, started_ns
  value TEXT NOT NULL     -- value: its value as text (numbers in decimal, structures as JSON)
);

-- table sources: one row per recorder source, with how it went.
CREATE TABLE sources (
  name    TEXT PRIMARY KEY,           -- name: packets, strace, ebpf, nftables, conntrack, kube, probe, import:*
  status  TEXT NOT NULL,              -- status: ok, failed, disabled, unavailable, stopped-early
  detail  TEXT,                       -- detail: why it failed or how it ran (tool version, interfaces, fallback used)
  events  INTEGER NOT NULL DEFAULT 0, -- events: rows this source wrote (events, packets, conntrack, k8s objects or probe requests)
  dropped INTEGER NOT NULL DEFAULT 0, -- dropped: records lost (kernel drops, unparsable lines, ring overflow)
  clock   TEXT NOT NULL               -- clock: how timestamps were taken: kernel, converted-monotonic, receipt, polled, file
);

-- table events: the unified timeline of low-volume facts from every source.
CREATE TABLE events (
  id      INTEGER PRIMARY KEY,        -- id: insertion order
  ts_ns   INTEGER NOT NULL,           -- ts_ns: when it happened (realtime ns)
  source  TEXT NOT NULL,              -- source: the source that saw it (see sources.name)
  kind    TEXT NOT NULL,              -- kind: event kind, see schemas/events.ts (signal, listener-closed, endpoint-rule-removed, ...)
  subject TEXT,                       -- subject: what it is about: pid:N, ip:port, namespace/name, chain name
  attrs   TEXT NOT NULL DEFAULT '{}'  -- attrs: JSON object with the kind's fields
);
CREATE INDEX events_ts ON events(ts_ns);
CREATE INDEX events_kind_ts ON events(kind, ts_ns);

-- table packets: captured frames, decoded.
CREATE TABLE packets (
  id          INTEGER PRIMARY KEY, -- id: capture order
  ts_ns       INTEGER NOT NULL,    -- ts_ns: capture timestamp (kernel, realtime ns)
  iface       TEXT,                -- iface: capture interface name
  linktype    INTEGER NOT NULL,    -- linktype: pcap LINKTYPE_* of data (1 ethernet, 113 linux cooked, 276 cooked v2, 101 raw IP)
  caplen      INTEGER NOT NULL,    -- caplen: bytes stored in data
  len         INTEGER NOT NULL,    -- len: original frame length on the wire
  l3          TEXT,                -- l3: ip4, ip6, arp or null
  src         TEXT,                -- src: IP source address
  dst         TEXT,                -- dst: IP destination address
  proto       TEXT,                -- proto: tcp, udp, icmp, icmp6 or the IP protocol number
  sport       INTEGER,             -- sport: TCP/UDP source port
  dport       INTEGER,             -- dport: TCP/UDP destination port
  tcp_flags   INTEGER,             -- tcp_flags: TCP flag bits (FIN 1, SYN 2, RST 4, PSH 8, ACK 16, URG 32, ECE 64, CWR 128)
  seq         INTEGER,             -- seq: TCP sequence number
  ack         INTEGER,             -- ack: TCP acknowledgement number
  payload_len INTEGER,             -- payload_len: L4 payload bytes on the wire (from IP length)
  icmp_type   INTEGER,             -- icmp_type: ICMP/ICMPv6 type
  icmp_code   INTEGER,             -- icmp_code: ICMP/ICMPv6 code
  inner_src   TEXT,                -- inner_src: for ICMP errors, source of the quoted original packet
  inner_dst   TEXT,                -- inner_dst: for ICMP errors, destination of the quoted original packet
  inner_proto TEXT,                -- inner_proto: for ICMP errors, protocol of the quoted packet
  inner_sport INTEGER,             -- inner_sport: for ICMP errors, quoted source port
  inner_dport INTEGER,             -- inner_dport: for ICMP errors, quoted destination port
  data        BLOB                 -- data: the frame bytes, snaplen-limited (may be emptied by redact)
);
CREATE INDEX packets_ts ON packets(ts_ns);
CREATE INDEX packets_flow ON packets(src, sport, dst, dport);

-- table conntrack: connection-tracking events (the kernel's word on DNAT: original vs reply tuple).
CREATE TABLE conntrack (
  id          INTEGER PRIMARY KEY, -- id: insertion order
  ts_ns       INTEGER NOT NULL,    -- ts_ns: event time (kernel timestamp when available)
  type        TEXT NOT NULL,       -- type: NEW, UPDATE, DESTROY
  proto       TEXT NOT NULL,       -- proto: tcp, udp, icmp, ...
  state       TEXT,                -- state: TCP state (SYN_SENT, ESTABLISHED, CLOSE, ...) when given
  orig_src    TEXT,                -- orig_src: original direction source (the client)
  orig_dst    TEXT,                -- orig_dst: original direction destination (the service VIP before DNAT)
  orig_sport  INTEGER,             -- orig_sport: client port
  orig_dport  INTEGER,             -- orig_dport: service port
  reply_src   TEXT,                -- reply_src: reply direction source (the backend after DNAT)
  reply_dst   TEXT,                -- reply_dst: reply direction destination
  reply_sport INTEGER,             -- reply_sport: backend port
  reply_dport INTEGER,             -- reply_dport: reply destination port
  flags       TEXT,                -- flags: ASSURED, UNREPLIED, ... space-separated
  zone        INTEGER,             -- zone: conntrack zone when not 0
  raw         TEXT                 -- raw: the line as printed by the tool
);
CREATE INDEX conntrack_ts ON conntrack(ts_ns);
CREATE INDEX conntrack_orig ON conntrack(orig_src, orig_sport);

-- table k8s_objects: every watch event received, the object stored whole.
CREATE TABLE k8s_objects (
  id               INTEGER PRIMARY KEY, -- id: receive order
  ts_ns            INTEGER NOT NULL,    -- ts_ns: when this node received the watch event
  kind             TEXT NOT NULL,       -- kind: Pod, EndpointSlice, Service, Deployment, ReplicaSet, Event
  namespace        TEXT,                -- namespace: object namespace
  name             TEXT,                -- name: object name
  uid              TEXT,                -- uid: metadata.uid
  resource_version TEXT,                -- resource_version: metadata.resourceVersion
  event_type       TEXT NOT NULL,       -- event_type: ADDED, MODIFIED, DELETED, BOOKMARK, LIST (initial list) or RELIST (after 410)
  object           TEXT NOT NULL        -- object: the object as JSON
);
CREATE INDEX k8s_objects_ts ON k8s_objects(ts_ns);
CREATE INDEX k8s_objects_kind ON k8s_objects(kind, namespace, name);

-- table nft_snapshots: full rulesets taken at start, after bursts of changes, and at stop.
CREATE TABLE nft_snapshots (
  id      INTEGER PRIMARY KEY, -- id: snapshot order
  ts_ns   INTEGER NOT NULL,    -- ts_ns: when the snapshot was taken (receipt)
  format  TEXT NOT NULL,       -- format: nft-json (nft -j list ruleset) or iptables-save (iptables-save -t nat text)
  reason  TEXT,                -- reason: start, burst, stop, poll
  ruleset TEXT NOT NULL        -- ruleset: the snapshot as printed by the tool
);
CREATE INDEX nft_snapshots_ts ON nft_snapshots(ts_ns);

-- table probe_requests: every request of the recorder's own probe traffic.
CREATE TABLE probe_requests (
  id         INTEGER PRIMARY KEY, -- id: request order
  start_ns   INTEGER NOT NULL,    -- start_ns: when the connection attempt started
  end_ns     INTEGER,             -- end_ns: when the outcome was known
  local_addr TEXT,                -- local_addr: client address (joins packets.src and conntrack.orig_src)
  local_port INTEGER,             -- local_port: client port (joins packets.sport and conntrack.orig_sport)
  remote     TEXT NOT NULL,       -- remote: target as ip:port (the service VIP when probing a Service)
  outcome    TEXT NOT NULL,       -- outcome: ok, error, timeout
  status     INTEGER,             -- status: HTTP status code when a response arrived
  error      TEXT                 -- error: ECONNREFUSED, ECONNRESET, EOF, ETIMEDOUT, ... when it failed
);
CREATE INDEX probe_requests_start ON probe_requests(start_ns);
