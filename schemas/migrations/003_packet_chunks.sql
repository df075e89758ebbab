-- rolltrace bundle schema, migration 003: frames in chunked pcap BLOBs, `packets` as their index.
-- A busy node cannot afford a decoded SQLite row per frame: every captured frame is kept, byte for byte,
-- in `packet_chunks` (each chunk a complete classic pcap file: its 24-byte header, then the records), and
-- `packets` holds only the frames the analysis reads (TCP SYN/FIN/RST, the first payload segment of each
-- direction of a connection, ICMP errors), found by a header scan, each pointing at its record.
-- Bundles written before 003 keep their frames in packets.data (chunk_id null) and read as before.

-- table packet_chunks: every captured frame, as classic pcap files of at most ~1 MiB.
CREATE TABLE packet_chunks (
  id          INTEGER PRIMARY KEY, -- id: chunk order per writer (packets.chunk_id points here)
  iface       TEXT,                -- iface: capture interface name
  linktype    INTEGER NOT NULL,    -- linktype: pcap LINKTYPE_* of every frame in the chunk
  first_ts_ns INTEGER NOT NULL,    -- first_ts_ns: timestamp of the chunk's first frame
  last_ts_ns  INTEGER NOT NULL,    -- last_ts_ns: timestamp of the chunk's last frame
  packets     INTEGER NOT NULL,    -- packets: frames in the chunk
  data        BLOB NOT NULL        -- data: a pcap file (24-byte header, then 16-byte record headers and frames; magic gives byte order and µs/ns)
);
CREATE INDEX packet_chunks_ts ON packet_chunks(first_ts_ns);

ALTER TABLE packets ADD COLUMN chunk_id INTEGER; -- chunk_id: packet_chunks.id holding the frame (data is then null), null in bundles before schema 3
ALTER TABLE packets ADD COLUMN chunk_off INTEGER; -- chunk_off: byte offset of the frame's pcap record header in the chunk's data

-- the flow lookups (a failed connection's packets) go by ports first: a client's ephemeral port is as
-- selective as the 4-tuple, and an index of two integers costs a third of one of two address strings
DROP INDEX IF EXISTS packets_flow;
CREATE INDEX packets_ports ON packets(sport, dport);
