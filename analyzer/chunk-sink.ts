/**
 * A ChunkSink writing straight into a bundle being built whole (redact, merge): frames go through the
 * same FrameStore as the recorder's, so a derived bundle keeps the chunked layout and its index.
 */
import type { DB } from '../schemas/db.js';
import { indexChunks, type ChunkSink, type IndexRow, type PacketChunkRow } from '../schemas/decode/chunks.js';

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

/**
 * The index of a bundle whose chunks were stored without it (record: meta packets_index = deferred),
 * built from main.packet_chunks into `table` (temp.packets for a reader, main.packets for `rolltrace
 * index`), with the same header scan as import; one chunk in memory at a time. Runs in the caller's
 * transaction; returns the rows inserted.
 */
export function insertChunkIndex(db: DB, table: 'temp.packets' | 'main.packets', inserted?: (id: number, r: IndexRow) => void): number {
  const ins = db.prepare(`INSERT INTO ${table}(ts_ns, iface, linktype, caplen, len, l3, src, dst, proto, sport, dport, tcp_flags, seq, ack,
    payload_len, icmp_type, icmp_code, inner_src, inner_dst, inner_proto, inner_sport, inner_dport, chunk_id, chunk_off)
    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`);
  // ids first: a statement cannot run while another one's iterator is open on the connection
  const ids = (db.prepare('SELECT id FROM main.packet_chunks ORDER BY id').raw(true).all() as number[][]).map((r) => r[0]!);
  const one = db.prepare('SELECT id, iface, linktype, first_ts_ns, last_ts_ns, packets, data FROM main.packet_chunks WHERE id = ?');
  function* chunks(): IterableIterator<PacketChunkRow> {
    for (const id of ids) {
      const c = one.get(id) as PacketChunkRow | undefined;
      if (c && c.data instanceof Uint8Array) yield c;
    }
  }
  return indexChunks(chunks(), {
    index: (r) => {
      const info = ins.run(Math.round(r.ts_ns), r.iface, r.linktype, r.caplen, r.len, r.l3, r.src, r.dst, r.proto, r.sport, r.dport, r.tcp_flags, r.seq, r.ack,
        r.payload_len, r.icmp_type, r.icmp_code, r.inner_src, r.inner_dst, r.inner_proto, r.inner_sport, r.inner_dport, r.chunk_id, r.chunk_off);
      inserted?.(Number(info.lastInsertRowid), r);
    },
  });
}
