/**
 * Bench: `rolltrace analyze` on a bundle of 1,000,000 real frames (mostly HTTP, some connections
 * refused with RST) vs `tshark -Y tcp.flags.reset==1` extracting the RSTs from the same packets as a
 * pcap, in one run. Reports both times, the ratio and the analyzer's peak RSS.
 *
 *   npx tsx bench/analyze-vs-tshark.ts [--packets N] [--keep]
 */
import { spawnSync } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, rmSync, statSync, writeSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { BundleWriter } from '../recorder/bundle-writer.js';
import { TCP, type PacketRow } from '../schemas/rows.js';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
const argv = process.argv.slice(2);
const N = Number(argv[argv.indexOf('--packets') + 1] ?? 0) || 1_000_000;
const keep = argv.includes('--keep');
const dir = mkdtempSync(join(tmpdir(), 'analyze-bench-'));
const bundle = join(dir, 'bench.rtb');
const pcap = join(dir, 'bench.pcap');

function ip4(s: string): number[] { return s.split('.').map(Number); }
function csum(b: Buffer, off: number, len: number): number {
  let s = 0;
  for (let i = 0; i < len; i += 2) s += (b[off + i]! << 8) + (i + 1 < len ? b[off + i + 1]! : 0);
  while (s > 0xffff) s = (s & 0xffff) + (s >>> 16);
  return ~s & 0xffff;
}
/** Ethernet + IPv4 + TCP frame with `payload` bytes of HTTP-ish text. */
function frame(src: string, sport: number, dst: string, dport: number, flags: number, seq: number, ack: number, payload: Buffer | null): Buffer {
  const pl = payload?.length ?? 0;
  const b = Buffer.alloc(14 + 20 + 20 + pl);
  b.set([0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1, 0x08, 0x00], 0);
  b[14] = 0x45; b.writeUInt16BE(40 + pl, 16); b.writeUInt16BE(0x4000, 20); b[22] = 64; b[23] = 6;
  b.set(ip4(src), 26); b.set(ip4(dst), 30);
  b.writeUInt16BE(csum(b, 14, 20), 24);
  b.writeUInt16BE(sport, 34); b.writeUInt16BE(dport, 36); b.writeUInt32BE(seq >>> 0, 38); b.writeUInt32BE(ack >>> 0, 42);
  b[46] = 0x50; b[47] = flags; b.writeUInt16BE(64240, 48);
  if (payload) payload.copy(b, 54);
  return b;
}

const REQ = Buffer.from('GET / HTTP/1.1\r\nHost: web\r\nUser-Agent: bench\r\nAccept: */*\r\n\r\n');
const RESP = Buffer.from('HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Type: text/plain\r\n\r\nhello');

function synthesize(): { rsts: number; written: number } {
  const w = new BundleWriter(bundle, { createdBy: 'bench', overwrite: true });
  w.setMeta('started_ns', String(1_776_000_000e9));
  w.setMeta('node', 'bench');
  w.setSource('packets', { status: 'ok', clock: 'kernel' });
  const fd = openSync(pcap, 'w');
  const gh = Buffer.alloc(24);
  gh.writeUInt32LE(0xa1b23c4d, 0); gh.writeUInt16LE(2, 4); gh.writeUInt16LE(4, 6); gh.writeUInt32LE(262144, 16); gh.writeUInt32LE(1, 20);
  writeSync(fd, gh);
  let pbuf: Buffer[] = [];
  let pbytes = 0;
  let t = 1_776_000_000e9;
  let written = 0;
  let rsts = 0;
  let flowN = 0;
  const emit = (src: string, sport: number, dst: string, dport: number, flags: number, seq: number, ack: number, payload: Buffer | null) => {
    const data = frame(src, sport, dst, dport, flags, seq, ack, payload);
    t += 20_000; // 20 µs apart
    const row: PacketRow = {
      ts_ns: t, iface: 'cni0', linktype: 1, caplen: data.length, len: data.length, l3: 'ip4', src, dst, proto: 'tcp', sport, dport,
      tcp_flags: flags, seq, ack, payload_len: payload?.length ?? 0, icmp_type: null, icmp_code: null,
      inner_src: null, inner_dst: null, inner_proto: null, inner_sport: null, inner_dport: null, data,
    };
    w.packet(row);
    const rh = Buffer.alloc(16);
    const sec = Math.floor(t / 1e9);
    rh.writeUInt32LE(sec, 0); rh.writeUInt32LE(Math.round(t - sec * 1e9), 4); rh.writeUInt32LE(data.length, 8); rh.writeUInt32LE(data.length, 12);
    pbuf.push(rh, data); pbytes += 16 + data.length;
    if (pbytes > 1 << 20) { writeSync(fd, Buffer.concat(pbuf)); pbuf = []; pbytes = 0; }
    written++;
    if (written % 100_000 === 0) w.flush();
  };
  while (written < N) {
    flowN++;
    const client = `10.0.${(flowN >> 8) & 255}.${(flowN & 255) || 1}`;
    const cport = 1024 + (flowN % 60000);
    const server = flowN % 2 ? '10.42.0.97' : '10.42.0.98';
    const isn = (flowN * 7919) >>> 0;
    if (flowN % 100 === 0) {
      // refused: SYN answered by RST
      emit(client, cport, server, 8080, TCP.SYN, isn, 0, null);
      emit(server, 8080, client, cport, TCP.RST | TCP.ACK, 0, isn + 1, null);
      rsts++;
      continue;
    }
    emit(client, cport, server, 8080, TCP.SYN, isn, 0, null);
    emit(server, 8080, client, cport, TCP.SYN | TCP.ACK, 5000, isn + 1, null);
    emit(client, cport, server, 8080, TCP.ACK, isn + 1, 5001, null);
    emit(client, cport, server, 8080, TCP.ACK | TCP.PSH, isn + 1, 5001, REQ);
    emit(server, 8080, client, cport, TCP.ACK | TCP.PSH, 5001, isn + 1 + REQ.length, RESP);
    emit(client, cport, server, 8080, TCP.ACK | TCP.FIN, isn + 1 + REQ.length, 5001 + RESP.length, null);
    emit(server, 8080, client, cport, TCP.ACK | TCP.FIN, 5001 + RESP.length, isn + 2 + REQ.length, null);
    emit(client, cport, server, 8080, TCP.ACK, isn + 2 + REQ.length, 5002 + RESP.length, null);
  }
  if (pbuf.length) writeSync(fd, Buffer.concat(pbuf));
  closeSync(fd);
  w.setSource('packets', { status: 'ok', clock: 'kernel', events: written });
  w.close();
  return { rsts, written };
}

function timed(cmd: string, args: string[]): { ms: number; status: number | null; stdout: string; stderr: string } {
  const t0 = process.hrtime.bigint();
  const r = spawnSync(cmd, args, { encoding: 'utf8', maxBuffer: 1 << 28, cwd: ROOT });
  return { ms: Number(process.hrtime.bigint() - t0) / 1e6, status: r.status, stdout: r.stdout ?? '', stderr: r.stderr ?? '' };
}

try {
  const s0 = Date.now();
  const { rsts, written } = synthesize();
  process.stderr.write(`synthesized ${written} packets (${rsts} RSTs) in ${((Date.now() - s0) / 1000).toFixed(1)} s: bundle ${(statSync(bundle).size / 1e6).toFixed(1)} MB, pcap ${(statSync(pcap).size / 1e6).toFixed(1)} MB\n`);
  const tsx = join(ROOT, 'node_modules/.bin/tsx');
  const an = timed(existsSync(tsx) ? tsx : 'npx', [...(existsSync(tsx) ? [] : ['tsx']), join(ROOT, 'bench/analyze-child.ts'), 'analyze', bundle, '--format', 'json']);
  const rss = Number(/MAXRSS_KB=(\d+)/.exec(an.stderr)?.[1] ?? NaN);
  let found = -1;
  try { found = (JSON.parse(an.stdout) as { failures: unknown[] }).failures.length; } catch { /* reported below */ }
  const ts = timed('tshark', ['-r', pcap, '-n', '-Y', 'tcp.flags.reset==1', '-T', 'fields', '-e', 'frame.time_epoch', '-e', 'ip.src', '-e', 'tcp.srcport', '-e', 'ip.dst', '-e', 'tcp.dstport']);
  const tsLines = ts.stdout.trim() ? ts.stdout.trim().split('\n').length : 0;
  const res = {
    packets: written, rsts,
    analyze: { ms: Math.round(an.ms), exit: an.status, failuresFound: found, peakRssMB: Math.round(rss / 1024) },
    tshark: { ms: Math.round(ts.ms), exit: ts.status, rstsFound: tsLines },
    ratio: Math.round((an.ms / ts.ms) * 100) / 100,
  };
  process.stdout.write(JSON.stringify(res, null, 2) + '\n');
  process.stdout.write(`rolltrace analyze ${res.analyze.ms} ms (peak RSS ${res.analyze.peakRssMB} MB, ${found} failures) vs tshark ${res.tshark.ms} ms (${tsLines} RSTs): ratio ${res.ratio}\n`);
} finally {
  if (!keep) rmSync(dir, { recursive: true, force: true });
  else process.stderr.write(`kept ${dir}\n`);
}
