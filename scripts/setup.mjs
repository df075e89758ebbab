#!/usr/bin/env node
// rolltrace setup: installs whatever is missing, then gets out of the way. Runs before `npm test` and
// `npm run demo` (pretest/predemo). Node built-ins only: it must run before node_modules exists.
//  1. system packages (apt-get) the recorder, the lab (fast and real: `node scripts/setup.mjs real`) and the tests use
//  2. npm ci when node_modules is absent or older than package-lock.json
//  3. rebuild `cap` (libpcap binding) when libpcap arrived after it was installed
//  4. build rolltrace's capture addon (native/capture, libpcap) when it is missing or older than its source
//  5. tracefs mounted for bpftrace
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildAddon } from './addon.mjs';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const purpose = process.env.npm_lifecycle_event === 'pretest' ? 'test' : process.argv[2] ?? 'demo';
const log = (s) => process.stderr.write(`[setup] ${s}\n`);

// package -> the command that proves it is there
const CORE = {
  nftables: 'nft', iptables: 'iptables', strace: 'strace', bpftrace: 'bpftrace', tcpdump: 'tcpdump',
  'libpcap-dev': null, conntrack: 'conntrack', iproute2: 'ip',
  // compiles the native modules: better-sqlite3 and cap when npm ci finds no prebuilt one, the capture addon
  'build-essential': null, python3: 'python3',
};
// the test suite also reads back exports with tshark, renders the HTML report in Chromium, and checks
// the node image (npm run image, which installs debootstrap itself) with skopeo and umoci
const TEST_ONLY = { tshark: 'tshark', chromium: 'chromium', skopeo: 'skopeo', umoci: 'umoci' };
// `npm run bench` (setup.mjs bench): wrk loads the traced server in bench/tracing-overhead.ts, tshark is compared in analyze-vs-tshark and offline, tcpreplay offers the packets in capture-cpu
const BENCH_ONLY = { wrk: 'wrk', tshark: 'tshark', tcpreplay: 'tcpreplay' };
// the real node (`lab build|up|run --real`, lab/real/): etcd, runc and the CNI plugins from Debian, busybox
// for the images, socat for the API relay. containerd comes from Debian trixie (lab/real/runtime.ts) and
// Kubernetes is built from the Go module proxy (lab/real/build.ts), both on first use, cached.
const REAL = { 'etcd-server': 'etcd', runc: 'runc', 'containernetworking-plugins': null, 'busybox-static': null, socat: 'socat', curl: 'curl', openssl: 'openssl' };
const wanted = purpose === 'test' ? { ...CORE, ...TEST_ONLY, ...REAL } : purpose === 'bench' ? { ...CORE, ...BENCH_ONLY } : purpose === 'real' ? { ...CORE, ...REAL } : CORE;

function installed(pkg) {
  const r = spawnSync('dpkg-query', ['-W', '-f=${Status}', pkg], { encoding: 'utf8' });
  return r.status === 0 && r.stdout.includes('install ok installed');
}

const isRoot = typeof process.getuid === 'function' && process.getuid() === 0;
const missing = Object.keys(wanted).filter((p) => !installed(p));
let pcapArrived = false;
if (missing.length) {
  if (!isRoot) {
    log(`missing system packages: ${missing.join(' ')}`);
    log(`run as root, or install them first: sudo apt-get install -y ${missing.join(' ')}`);
    process.exit(1);
  }
  log(`installing system packages: ${missing.join(' ')}`);
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  let r = spawnSync('apt-get', ['update', '-qq'], { stdio: ['ignore', 'inherit', 'inherit'], env });
  if (r.status !== 0) { log('apt-get update failed'); process.exit(1); }
  r = spawnSync('apt-get', ['install', '-y', '-qq', '--no-install-recommends', ...missing], { stdio: ['ignore', 'inherit', 'inherit'], env });
  if (r.status !== 0) { log(`apt-get install failed for: ${missing.join(' ')}`); process.exit(1); }
  pcapArrived = missing.includes('libpcap-dev');
}

// 2. npm ci when node_modules is absent or stale
const lock = join(root, 'package-lock.json');
const stamp = join(root, 'node_modules', '.rolltrace-setup-stamp');
const lockHash = existsSync(lock) ? createHash('sha256').update(readFileSync(lock)).digest('hex') : 'none';
const fresh = existsSync(stamp) && readFileSync(stamp, 'utf8').trim() === lockHash;
if (!fresh) {
  log(existsSync(join(root, 'node_modules')) ? 'node_modules is stale: npm ci' : 'node_modules is absent: npm ci');
  // npm ci only: the committed lockfile is the contract (CI and image builds use it). A lockfile npm ci
  // refuses is a bug to fix in the repository, not to paper over with `npm install`.
  const r = spawnSync('npm', ['ci', '--no-audit', '--no-fund'], { cwd: root, stdio: ['ignore', 'inherit', 'inherit'] });
  if (r.status !== 0) { log('npm ci failed (is package-lock.json in step with package.json?)'); process.exit(1); }
  mkdirSync(join(root, 'node_modules'), { recursive: true });
  const after = existsSync(lock) ? createHash('sha256').update(readFileSync(lock)).digest('hex') : 'none';
  writeFileSync(stamp, after + '\n');
  pcapArrived = false; // npm ci just built cap against whatever libpcap is there
}

// 3. cap needs libpcap at build time; when it failed to build (optional dependency) or libpcap came later, rebuild it
function capLoads() {
  const r = spawnSync(process.execPath, ['-e', "require('cap')"], { cwd: root, stdio: 'ignore' });
  return r.status === 0;
}
if (installed('libpcap-dev') && (pcapArrived || !capLoads())) {
  log('building cap (libpcap binding)');
  const has = existsSync(join(root, 'node_modules', 'cap', 'package.json'));
  const args = has ? ['rebuild', 'cap'] : ['install', '--no-save', '--no-audit', '--no-fund', 'cap@' + JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')).optionalDependencies.cap];
  const r = spawnSync('npm', args, { cwd: root, stdio: ['ignore', 'inherit', 'inherit'] });
  if (r.status !== 0 || !capLoads()) log('cap did not build: packet capture will fall back to tcpdump');
}

// 4. the capture addon: the recorder's cheapest packet path (recorder/sources/packets/native.ts); without it
// the recorder captures through tcpdump. npm ci builds it (the package's install script); this catches a
// source changed since (a pull that left the lockfile alone) and libpcap-dev installed after npm ci.
if (installed('libpcap-dev')) buildAddon();

// 5. tracefs for bpftrace tracepoints
if (isRoot && !existsSync('/sys/kernel/tracing/events') && !existsSync('/sys/kernel/debug/tracing/events')) {
  spawnSync('mount', ['-t', 'tracefs', 'nodev', '/sys/kernel/tracing'], { stdio: 'ignore' });
}
