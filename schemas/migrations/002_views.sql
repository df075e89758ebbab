-- rolltrace bundle schema, migration 002: views that read like the report.

-- view timeline: every source on one clock, oldest first (`sqlite3 x.rtb 'select * from timeline'`).
CREATE VIEW timeline AS
SELECT ts_ns,                                                                   -- ts_ns: realtime ns
       strftime('%Y-%m-%dT%H:%M:%f', ts_ns / 1e9, 'unixepoch') || 'Z' AS at,   -- at: UTC instant, milliseconds
       round((ts_ns - (SELECT CAST(value AS INTEGER) FROM meta WHERE key = 'started_ns')) / 1e9, 3) AS rel_s, -- rel_s: seconds since the recording started
       source,                                                                  -- source: which source saw it
       kind,                                                                    -- kind: event kind, probe-ok/probe-error, conntrack-new/-destroy, packet
       subject,                                                                 -- subject: what it is about
       detail                                                                   -- detail: the fields, as JSON or text
FROM (
  SELECT ts_ns, source, kind, subject, attrs AS detail FROM events
  UNION ALL
  SELECT start_ns, 'probe', 'probe-' || outcome, remote,
         json_object('local', local_addr || ':' || local_port, 'status', status, 'error', error,
                     'ms', round((end_ns - start_ns) / 1e6, 3))
  FROM probe_requests
  UNION ALL
  SELECT ts_ns, 'conntrack', 'conntrack-' || lower(type), orig_src || ':' || orig_sport || '>' || orig_dst || ':' || orig_dport,
         json_object('reply_src', reply_src || ':' || reply_sport, 'state', state, 'flags', flags)
  FROM conntrack
  UNION ALL
  SELECT ts_ns, 'packets', 'packet', src || ':' || ifnull(sport, '') || '>' || dst || ':' || ifnull(dport, ''),
         json_object('iface', iface, 'proto', proto, 'flags', tcp_flags, 'len', len, 'icmp_type', icmp_type)
  FROM packets
)
ORDER BY ts_ns;

-- view tcp_resets: every captured TCP segment with RST set, with the pod that sent it when known from events.
CREATE VIEW tcp_resets AS
SELECT p.ts_ns,                                                       -- ts_ns: capture time
       strftime('%Y-%m-%dT%H:%M:%f', p.ts_ns / 1e9, 'unixepoch') || 'Z' AS at, -- at: UTC instant
       p.iface,                                                       -- iface: interface
       p.src, p.sport,                                                -- src, sport: who sent the RST
       p.dst, p.dport,                                                -- dst, dport: who received it
       p.tcp_flags                                                    -- tcp_flags: flag bits (RST 4, ACK 16)
FROM packets p
WHERE p.proto = 'tcp' AND (p.tcp_flags & 4) != 0
ORDER BY p.ts_ns;

-- view probe_failures: probe requests that did not get an HTTP response.
CREATE VIEW probe_failures AS
SELECT id,                                                                   -- id: probe request id
       strftime('%Y-%m-%dT%H:%M:%f', start_ns / 1e9, 'unixepoch') || 'Z' AS at, -- at: UTC start instant
       local_addr, local_port,                                               -- local_addr, local_port: client side
       remote,                                                               -- remote: target
       outcome, error,                                                       -- outcome, error: what happened
       round((end_ns - start_ns) / 1e6, 3) AS ms                             -- ms: request duration
FROM probe_requests
WHERE outcome != 'ok'
ORDER BY start_ns;

-- view endpoint_rules: this node's rule changes per endpoint, as the nftables source reduced them.
CREATE VIEW endpoint_rules AS
SELECT ts_ns,                                                                -- ts_ns: when the change was seen
       strftime('%Y-%m-%dT%H:%M:%f', ts_ns / 1e9, 'unixepoch') || 'Z' AS at, -- at: UTC instant
       kind,                                                                 -- kind: endpoint-rule-added or endpoint-rule-removed
       json_extract(attrs, '$.service') AS service,                          -- service: service label (namespace/name:port or VIP)
       json_extract(attrs, '$.endpoint') AS endpoint,                        -- endpoint: backend ip:port
       json_extract(attrs, '$.mode') AS mode                                 -- mode: nftables or iptables
FROM events
WHERE kind IN ('endpoint-rule-added', 'endpoint-rule-removed')
ORDER BY ts_ns;
