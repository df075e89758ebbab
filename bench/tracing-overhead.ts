/**
 * bench/tracing-overhead.ts — requests/s and p99 latency of a small HTTP server (one new connection
 * per request, so accept/close run every time) untraced, under the strace source, and under the
 * ebpf source. Server and load generator run in a namespace this bench creates. Run as root:
 *   npx tsx bench/tracing-overhead.ts [seconds=4] [concurrency=8]
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import type { Sink } from '../recorder/bundle-writer.js';
import type { RecordContext, RecordOptions, Source } from '../recorder/source.js';
import { create as createStrace } from '../recorder/sources/strace/index.js';
import { create as createEbpf } from '../recorder/sources/ebpf/index.js';

const secs = Number(process.argv[2] ?? 4);
const conc = Number(process.argv[3] ?? 8);
const NS = `rt-to-${randomBytes(3).toString('hex')}`;
const sh = (...a: string[]) => execFileSync(a[0]!, a.slice(1), { stdio: 'pipe' }).toString();

const SERVER = `require('http').createServer((q,s)=>s.end('ok\\n')).listen(18090,'127.0.0.1',()=>console.log('ready'))`;
// closed-loop load: conc workers, each a fresh connection per request; prints {n, p50, p99} in ms
const CLIENT = `const http=require('http');const secs=+process.argv[1],conc=+process.argv[2];const lat=[];const end=Date.now()+secs*1000;let err=0;
function one(){if(Date.now()>=end)return Promise.resolve();const t=process.hrtime.bigint();return new Promise(r=>{const q=http.get({host:'127.0.0.1',port:18090,path:'/',agent:false},s=>{s.resume();s.on('end',()=>{lat.push(Number(process.hrtime.bigint()-t)/1e6);r();});});q.on('error',()=>{err++;r();});}).then(one);}
Promise.all(Array.from({length:conc},one)).then(()=>{lat.sort((a,b)=>a-b);console.log(JSON.stringify({n:lat.length,err,p50:lat[Math.floor(lat.length*0.5)],p99:lat[Math.floor(lat.length*0.99)]}));});`;

function nullSink(): Sink & { n: number } {
  const s = { n: 0, event() { s.n++; }, packet() {}, conntrack() {}, k8sObject() {}, nftSnapshot() {}, probeRequest() {}, dropped() {} };
  return s;
}

async function run(label: string, mk: ((pid: number) => Source) | null) {
  const server: ChildProcess = spawn('ip', ['netns', 'exec', NS, 'node', '-e', SERVER], { stdio: ['ignore', 'pipe', 'inherit'] });
  await new Promise<void>((r) => server.stdout!.once('data', () => r()));
  let src: Source | null = null;
  const sink = nullSink();
  if (mk) {
    src = mk(server.pid!);
    const opts = { pid: [String(server.pid)] } as unknown as RecordOptions;
    const ctx: RecordContext = { opts, pods: new Map(), onPodsChanged() {}, podsChanged() {}, requestStop() {}, log() {} };
    const pf = await src.preflight(ctx);
    if (!pf.ok) throw new Error(`${label}: ${pf.detail}`);
    await src.start(sink, ctx);
  }
  // async: the sources read their pipes on this event loop while the load runs
  const client = spawn('ip', ['netns', 'exec', NS, 'node', '-e', CLIENT, String(secs), String(conc)], { stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  client.stdout!.on('data', (d) => { out += d; });
  await new Promise((res) => client.on('close', res));
  const r = JSON.parse(out) as { n: number; err: number; p50: number; p99: number };
  if (src) await src.stop();
  server.kill('SIGKILL');
  await new Promise((res) => server.on('close', res));
  return { label, rps: Math.round(r.n / secs), p50: r.p50, p99: r.p99, err: r.err, events: sink.n };
}

sh('ip', 'netns', 'add', NS);
sh('ip', '-n', NS, 'link', 'set', 'lo', 'up');
try {
  const base: RecordOptions = { out: '', namespace: 'default', iface: [], snaplen: 128, rate: 1, concurrency: 1, settle: 0, packets: false, strace: true, ebpf: true, nft: false, conntrack: false, kube: false, pid: [] };
  const rows: Array<Awaited<ReturnType<typeof run>>> = [];
  await run('warm-up', null); // JIT, page cache: not reported
  rows.push(await run('untraced', null));
  rows.push(await run('strace source', (pid) => createStrace({ ...base, pid: [String(pid)] })));
  rows.push(await run('ebpf source', (pid) => createEbpf({ ...base, pid: [String(pid)] })));
  rows.push(await run('untraced (again)', null));
  console.log(`\ntracing-overhead: HTTP server, new connection per request, ${conc} concurrent clients, ${secs} s each (2 shared cores)`);
  console.log('mode              |  req/s | p50 ms | p99 ms | errors | events recorded');
  for (const x of rows) console.log(`${x.label.padEnd(17)} | ${String(x.rps).padStart(6)} | ${x.p50.toFixed(2).padStart(6)} | ${x.p99.toFixed(2).padStart(6)} | ${String(x.err).padStart(6)} | ${x.events}`);
} finally {
  try { sh('ip', 'netns', 'del', NS); } catch { /* gone */ }
}
