/**
 * bench/capture-rate.ts — highest packet rate recorded with zero kernel drops: the packets source
 * (its backend: the capture addon, else tcpdump -w to spool files; chunks into the SQLite bundle) vs plain `tcpdump -w FILE`, both capturing the same UDP
 * flood at stepped rates on a bridge joining two namespaces this bench creates. Run as root:
 *   npx tsx bench/capture-rate.ts [seconds-per-step=2] [rates=5000,10000,20000,40000,80000]
 */
import { execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BundleWriter } from '../recorder/bundle-writer.js';
import { create } from '../recorder/sources/packets/index.js';
import { parseTcpdumpStats } from '../recorder/sources/packets/stats.js';
import type { RecordContext, RecordOptions } from '../recorder/source.js';

const secs = Number(process.argv[2] ?? 2);
const rates = (process.argv[3] ?? '5000,10000,20000,40000,80000').split(',').map(Number);
const R = randomBytes(2).toString('hex');
const BR = `rtcb${R}br`, A = `rt-cb-${R}-a`, B = `rt-cb-${R}-b`;
const sh = (...a: string[]) => execFileSync(a[0]!, a.slice(1), { stdio: 'pipe' }).toString();
const dir = mkdtempSync(join(tmpdir(), 'rt-capture-bench-'));

// sends `rate` UDP datagrams/s for `secs` seconds in 1 ms batches; prints how many it sent
const SENDER = `const d=require('dgram').createSocket('udp4');const rate=+process.argv[1],secs=+process.argv[2];
const buf=Buffer.alloc(64);let sent=0;const t0=process.hrtime.bigint();
function tick(){const el=Number(process.hrtime.bigint()-t0)/1e9;if(el>=secs){d.close();console.log(sent);return;}
const due=Math.floor(el*rate);let n=0;while(sent<due&&n<2000){d.send(buf,9999,'10.80.0.2');sent++;n++;}setImmediate(tick);}tick();`;

function setup(): void {
  sh('ip', 'link', 'add', BR, 'type', 'bridge'); sh('ip', 'link', 'set', BR, 'up');
  for (const [ns, ip, v] of [[A, '10.80.0.1', 'a'], [B, '10.80.0.2', 'b']] as const) {
    sh('ip', 'netns', 'add', ns);
    sh('ip', 'link', 'add', `rtcb${R}${v}`, 'type', 'veth', 'peer', 'name', `rtcb${R}${v}p`);
    sh('ip', 'link', 'set', `rtcb${R}${v}p`, 'master', BR, 'up');
    sh('ip', 'link', 'set', `rtcb${R}${v}`, 'netns', ns);
    sh('ip', '-n', ns, 'addr', 'add', `${ip}/24`, 'dev', `rtcb${R}${v}`);
    sh('ip', '-n', ns, 'link', 'set', `rtcb${R}${v}`, 'up');
  }
  // a static neighbour: no ARP in the measurement; B drops the datagrams (nothing listens) quietly
  const mac = sh('ip', '-n', B, '-j', 'link', 'show', `rtcb${R}b`);
  sh('ip', '-n', A, 'neigh', 'replace', '10.80.0.2', 'lladdr', JSON.parse(mac)[0].address, 'dev', `rtcb${R}a`);
  sh('ip', 'netns', 'exec', B, 'iptables', '-A', 'INPUT', '-p', 'udp', '--dport', '9999', '-j', 'DROP');
}
function teardown(): void {
  for (const ns of [A, B]) try { sh('ip', 'netns', 'del', ns); } catch { /* gone */ }
  for (const l of [`rtcb${R}ap`, `rtcb${R}bp`, BR]) try { sh('ip', 'link', 'del', l); } catch { /* gone */ }
  rmSync(dir, { recursive: true, force: true });
}

async function step(rate: number) {
  const opts = { out: join(dir, `b${rate}.rtb`), namespace: 'default', iface: [BR], filter: 'udp port 9999', snaplen: 128, rate: 1, concurrency: 1, settle: 0, packets: true, strace: false, ebpf: false, nft: false, conntrack: false, kube: false, pid: [] } as RecordOptions;
  const ctx: RecordContext = { opts, pods: new Map(), onPodsChanged() {}, podsChanged() {}, requestStop() {}, log() {} };
  const w = new BundleWriter(opts.out, { overwrite: true });
  const src = create(opts);
  await src.preflight(ctx);
  const td = spawn('tcpdump', ['-w', join(dir, `t${rate}.pcap`), '-s', '128', '-B', '32768', '-i', BR, 'udp port 9999'], { stdio: ['ignore', 'ignore', 'pipe'] });
  let tdErr = '';
  td.stderr!.on('data', (d) => { tdErr += d; });
  await new Promise<void>((res) => { const i = setInterval(() => { if (/listening on/.test(tdErr)) { clearInterval(i); res(); } }, 20); });
  await src.start(w, ctx);
  const cpu0 = process.cpuUsage();
  const sender = spawn('ip', ['netns', 'exec', A, 'node', '-e', SENDER, String(rate), String(secs)], { stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  sender.stdout!.on('data', (d) => { out += d; });
  await new Promise((r) => sender.on('close', r));
  // tcpdump -w (not immediate mode) hands packets over in ring blocks with a 1 s timeout: let both settle
  await new Promise((r) => setTimeout(r, 1300));
  await src.stop();
  const cpu = process.cpuUsage(cpu0);
  td.kill('SIGINT');
  await new Promise((r) => td.on('close', r));
  const st = src.stats();
  w.close();
  const t = parseTcpdumpStats(tdErr);
  return {
    rate, sent: Number(out.trim()), ours: st.events, oursDrops: st.dropped, tcpdump: t.captured ?? 0, tcpdumpDrops: (t.droppedKernel ?? 0) + (t.droppedIface ?? 0),
    oursCpuPct: Math.round(((cpu.user + cpu.system) / 1e6 / (secs + 1.3)) * 100),
  };
}

setup();
try {
  const rows: Array<Awaited<ReturnType<typeof step>>> = [];
  for (const r of rates) rows.push(await step(r));
  console.log('\ncapture-rate: packets source (capture addon, else tcpdump -w spool; chunks into SQLite) vs tcpdump -w file, same traffic, same run');
  console.log('target pps | sent pps | sent    | ours rec | ours drops | ours CPU% (node) | tcpdump rec | tcpdump drops');
  for (const x of rows) {
    console.log(`${String(x.rate).padStart(10)} | ${String(Math.round(x.sent / secs)).padStart(8)} | ${String(x.sent).padStart(7)} | ${String(x.ours).padStart(8)} | ${String(x.oursDrops).padStart(10)} | ${String(x.oursCpuPct).padStart(16)} | ${String(x.tcpdump).padStart(11)} | ${String(x.tcpdumpDrops).padStart(13)}`);
  }
  // rates are what the sender achieved (it is the limit on a small machine), not the target
  const best = (f: (x: typeof rows[number]) => boolean) => Math.max(0, ...rows.filter(f).map((x) => Math.round(x.sent / secs)));
  console.log(`highest achieved rate with zero drops and every packet recorded: ours ${best((x) => x.oursDrops === 0 && x.ours >= x.sent)} pps, tcpdump -w ${best((x) => x.tcpdumpDrops === 0 && x.tcpdump >= x.sent)} pps`);
} finally {
  teardown();
}
