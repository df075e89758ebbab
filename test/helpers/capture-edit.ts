/**
 * Edits of a recorded bundle's capture (tests only): the frames of one interface's pcap chunks kept or dropped
 * one by one, every other table as recorded. Models what the capture of one interface can lose (a tcpdump that
 * stopped first loses its last frames) without touching what the other sources recorded.
 */
import Database from 'better-sqlite3';

export interface Frame { ts: number; tcp: { src: string; sport: number; dst: string; dport: number; flags: number } | null }

/** the frames of a pcap chunk (classic pcap, µs or ns, either byte order): timestamp, record bounds */
function records(d: Buffer): Array<{ ts: number; start: number; end: number }> {
  const m = d.readUInt32LE(0);
  const le = m === 0xa1b2c3d4 || m === 0xa1b23c4d;
  const nanos = (le ? m : d.readUInt32BE(0)) === 0xa1b23c4d;
  const u32 = (o: number) => (le ? d.readUInt32LE(o) : d.readUInt32BE(o));
  const out: Array<{ ts: number; start: number; end: number }> = [];
  for (let o = 24; o + 16 <= d.length;) {
    const end = o + 16 + u32(o + 8);
    out.push({ ts: u32(o) * 1e9 + u32(o + 4) * (nanos ? 1 : 1000), start: o, end });
    o = end;
  }
  return out;
}

/** the TCP header fields of an Ethernet/IPv4 frame, else null */
function tcpOf(f: Buffer): Frame['tcp'] {
  if (f.length < 54 || f.readUInt16BE(12) !== 0x0800 || f[23] !== 6) return null;
  const l4 = 14 + (f[14]! & 15) * 4;
  const ip = (o: number) => `${f[o]}.${f[o + 1]}.${f[o + 2]}.${f[o + 3]}`;
  return { src: ip(26), sport: f.readUInt16BE(l4), dst: ip(30), dport: f.readUInt16BE(l4 + 2), flags: f[l4 + 13]! };
}

/** Every frame captured on `iface`, in chunk order. */
export function framesOf(file: string, iface: string): Frame[] {
  const db = new Database(file, { readonly: true });
  try {
    const out: Frame[] = [];
    for (const c of db.prepare('SELECT data FROM packet_chunks WHERE iface = ? ORDER BY id').all(iface) as Array<{ data: Buffer }>) {
      for (const r of records(c.data)) out.push({ ts: r.ts, tcp: tcpOf(c.data.subarray(r.start + 16, r.end)) });
    }
    return out;
  } finally { db.close(); }
}

/** Keep only the frames of `iface` for which keep() holds (chunks left empty are deleted). Returns how many were dropped. */
export function keepFrames(file: string, iface: string, keep: (f: Frame) => boolean): number {
  const db = new Database(file);
  let dropped = 0;
  try {
    for (const c of db.prepare('SELECT id, data FROM packet_chunks WHERE iface = ? ORDER BY id').all(iface) as Array<{ id: number; data: Buffer }>) {
      const all = records(c.data);
      const kept = all.filter((r) => keep({ ts: r.ts, tcp: tcpOf(c.data.subarray(r.start + 16, r.end)) }));
      dropped += all.length - kept.length;
      if (kept.length === all.length) continue;
      if (!kept.length) { db.prepare('DELETE FROM packet_chunks WHERE id = ?').run(c.id); continue; }
      const data = Buffer.concat([c.data.subarray(0, 24), ...kept.map((r) => c.data.subarray(r.start, r.end))]);
      db.prepare('UPDATE packet_chunks SET data = ?, packets = ?, first_ts_ns = ?, last_ts_ns = ? WHERE id = ?').run(data, kept.length, kept[0]!.ts, kept[kept.length - 1]!.ts, c.id);
    }
  } finally { db.close(); }
  return dropped;
}
