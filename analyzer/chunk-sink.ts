/**
 * A ChunkSink writing straight into a bundle being built whole (redact, merge): frames go through the
 * same FrameStore as the recorder's, so a derived bundle keeps the chunked layout and its index.
 */
import type { DB } from '../schemas/db.js';
import type { ChunkSink } from '../schemas/decode/chunks.js';

export function dbChunkSink(db: DB): ChunkSink {
  let id = (db.prepare('SELECT coalesce(max(id), 0) AS n FROM packet_chunks').get() as { n: number }).n;
  const insChunk = db.prepare('INSERT INTO packet_chunks(id, iface, linktype, first_ts_ns, last_ts_ns, packets, data) VALUES (?, ?, ?, ?, ?, ?, ?)');
  const insIdx = db.prepare(`INSERT INTO packets(ts_ns, iface, linktype, caplen, len, l3, src, dst, proto, sport, dport, tcp_flags, seq, ack,
    payload_len, icmp_type, icmp_code, inner_src, inner_dst, inner_proto, inner_sport, inner_dport, data, chunk_id, chunk_off)
    VALUES (@ts_ns, @iface, @linktype, @caplen, @len, @l3, @src, @dst, @proto, @sport, @dport, @tcp_flags, @seq, @ack,
    @payload_len, @icmp_type, @icmp_code, @inner_src, @inner_dst, @inner_proto, @inner_sport, @inner_dport, NULL, @chunk_id, @chunk_off)`);
  return {
    nextChunkId: () => ++id,
    chunk: (c) => { insChunk.run(c.id, c.iface, c.linktype, Math.round(c.first_ts_ns), Math.round(c.last_ts_ns), c.packets, c.data); },
    index: (r) => { insIdx.run({ ...r, ts_ns: Math.round(r.ts_ns) }); },
  };
}
