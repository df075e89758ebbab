#!/usr/bin/env node
// rolltrace node image: `npm run image` builds an OCI image archive (out/rolltrace-image.tar) with no
// registry and no Docker. Node built-ins, debootstrap, chroot and tar only; root.
//   layer 1  Debian trixie (minbase) + nodejs 20 + tcpdump, strace, bpftrace, nftables, iptables (nft),
//            conntrack, iproute2, libpcap    — debootstrap + apt-get in a chroot
//   layer 2  /opt/rolltrace/node_modules: the production dependencies, native modules (better-sqlite3,
//            cap) and rolltrace's capture addon (/opt/rolltrace/native/capture/build/Release) compiled in a
//            trixie build chroot against the image's node and libpcap
//   layer 3  /opt/rolltrace (the `npm pack` tarball: bin/, dist/, docs/, deploy/) and /usr/local/bin/rolltrace
// Every layer is cached under /var/cache/rolltrace/image/ (layer 1 keyed by suite, mirror and package
// list; layer 2 by package-lock.json and the addon's source), so a rebuild after a code change only packs and gzips layer 3.
//   node scripts/image.mjs [--out FILE] [--rebuild-base]
// The archive is an OCI image layout (oci-layout, index.json, blobs/) in a tar, named like containerd's
// own `ctr export`: `ctr -n k8s.io images import`, `kind load image-archive`, `k3d image import`,
// `skopeo copy oci-archive:...` all read it.
import { spawnSync, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  createReadStream, createWriteStream, existsSync, linkSync, mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync,
  statSync, symlinkSync, writeFileSync, readdirSync, chmodSync,
} from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createGzip } from 'node:zlib';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'));

export const SUITE = 'trixie'; // nodejs 20 (bookworm's is 18)
export const MIRROR = process.env.ROLLTRACE_IMAGE_MIRROR ?? 'http://deb.debian.org/debian';
/** what the recorder's sources run, and what the lab runs (see scripts/setup.mjs CORE) */
export const RUNTIME_PACKAGES = ['nodejs', 'libpcap0.8t64', 'tcpdump', 'strace', 'bpftrace', 'nftables', 'iptables', 'conntrack', 'iproute2', 'procps', 'ca-certificates'];
const BUILD_PACKAGES = ['build-essential', 'python3', 'libpcap-dev', 'libnode-dev', 'node-gyp'];
export const CACHE = process.env.ROLLTRACE_IMAGE_CACHE ?? '/var/cache/rolltrace/image';
/** The name the image is imported under (containerd and the kubelet spell `rolltrace:X` this way). */
export const IMAGE_NAME = `docker.io/library/rolltrace:${pkg.version}`;
/** How deploy/ refers to it. */
export const IMAGE_REF = `rolltrace:${pkg.version}`;
export const DEFAULT_OUT = join(root, 'out', 'rolltrace-image.tar');

const log = (s) => process.stderr.write(`[image] ${s}\n`);
const fail = (s) => { log(s); process.exit(1); };
const sha256 = (s) => createHash('sha256').update(s).digest('hex');

// stdout carries the result only (the archive's path, then its name, digest and size): what the build
// steps print goes to stderr (a cold build's version checks in the chroot printed 'v20.19.2' first)
function sh(cmd, args, opts = {}) {
  const r = spawnSync(cmd, args, { stdio: ['ignore', opts.capture ? 'pipe' : 2, 'inherit'], encoding: 'utf8', ...opts });
  if (r.status !== 0) throw new Error(`${cmd} ${args.slice(0, 6).join(' ')}${args.length > 6 ? ' ...' : ''} failed (exit ${r.status ?? r.signal})`);
  return r.stdout ?? '';
}

/** run a shell script inside a chroot with /proc mounted, no daemons started by package scripts */
function inChroot(rootfs, script) {
  const prc = join(rootfs, 'usr/sbin/policy-rc.d');
  writeFileSync(prc, '#!/bin/sh\nexit 101\n', { mode: 0o755 });
  mkdirSync(join(rootfs, 'proc'), { recursive: true });
  sh('mount', ['-t', 'proc', 'proc', join(rootfs, 'proc')]);
  try {
    sh('chroot', [rootfs, '/usr/bin/env', '-i', 'PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', 'HOME=/root',
      'DEBIAN_FRONTEND=noninteractive', 'LC_ALL=C.UTF-8', '/bin/sh', '-ec', script]);
  } finally {
    spawnSync('umount', [join(rootfs, 'proc')], { stdio: 'ignore' });
    rmSync(prc, { force: true });
  }
}

function ensureHostTools() {
  if (process.getuid?.() !== 0) fail('building the image needs root (debootstrap, chroot): run as root');
  const missing = [['debootstrap', 'debootstrap']].filter(([cmd]) => spawnSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' }).status !== 0);
  if (missing.length) {
    log(`installing ${missing.map((m) => m[1]).join(' ')}`);
    sh('apt-get', ['install', '-y', '-qq', '--no-install-recommends', ...missing.map((m) => m[1])], { env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' } });
  }
}

/** remove a cache directory, first unmounting the /proc a killed build may have left in its chroots */
function clearDir(dir) {
  for (const p of ['rootfs.tmp/proc', 'rootfs/proc']) spawnSync('umount', [join(dir, p)], { stdio: 'ignore' });
  rmSync(dir, { recursive: true, force: true });
}

/** debootstrap + apt-get: the runtime root filesystem, cached */
function baseRootfs(key, rebuild) {
  const dir = join(CACHE, `base-${key}`);
  const rootfs = join(dir, 'rootfs');
  if (!rebuild && existsSync(join(dir, 'rootfs.done'))) return { dir, rootfs, cached: true };
  clearDir(dir);
  mkdirSync(dir, { recursive: true });
  const tmp = join(dir, 'rootfs.tmp');
  log(`debootstrap ${SUITE} from ${MIRROR}`);
  sh('debootstrap', ['--variant=minbase', '--keyring=/usr/share/keyrings/debian-archive-keyring.gpg', SUITE, tmp, MIRROR], { stdio: ['ignore', 'ignore', 'inherit'] });
  log(`apt-get install ${RUNTIME_PACKAGES.join(' ')}`);
  inChroot(tmp, [
    'apt-get update -qq',
    `apt-get install -y -qq --no-install-recommends ${RUNTIME_PACKAGES.join(' ')} >/dev/null`,
    'apt-get clean',
    'rm -rf /var/lib/apt/lists/* /var/cache/debconf/*-old /var/log/*.log /var/log/apt/*',
    // documentation, man pages and translations: not needed on a node; the copyright files stay
    "find /usr/share/doc -mindepth 1 -not -name copyright -not -type d -delete",
    'rm -rf /usr/share/man/* /usr/share/info/* /usr/share/locale/*',
    'node --version && tcpdump --version && strace -V && bpftrace --version && nft --version && iptables --version && conntrack --version && ip -V',
  ].join('\n'));
  const major = Number(sh('chroot', [tmp, 'node', '-p', 'process.versions.node.split(".")[0]'], { capture: true }).trim());
  if (major < 20) throw new Error(`${SUITE}'s nodejs is ${major}, rolltrace needs >= 20`);
  renameSync(tmp, rootfs);
  writeFileSync(join(dir, 'rootfs.done'), `${new Date().toISOString()}\n`);
  return { dir, rootfs, cached: false };
}

/** the runtime root filesystem + compilers and headers, for the native modules; cached */
function buildRootfs(base, key) {
  const dir = join(CACHE, `build-${key}`);
  const rootfs = join(dir, 'rootfs');
  if (existsSync(join(dir, 'rootfs.done'))) return rootfs;
  clearDir(dir);
  mkdirSync(dir, { recursive: true });
  const tmp = join(dir, 'rootfs.tmp');
  sh('cp', ['-a', base.rootfs, tmp]);
  log(`build chroot: apt-get install ${BUILD_PACKAGES.join(' ')}`);
  inChroot(tmp, ['apt-get update -qq', `apt-get install -y -qq --no-install-recommends ${BUILD_PACKAGES.join(' ')} >/dev/null`, 'apt-get clean'].join('\n'));
  renameSync(tmp, rootfs);
  writeFileSync(join(dir, 'rootfs.done'), `${new Date().toISOString()}\n`);
  return rootfs;
}

/**
 * A layer: tar of `dir` (sorted, numeric owners, xattrs kept: file capabilities) -> gzip, hashed on the
 * way: diffID = sha256 of the tar, digest = sha256 of the gzip. Cached as `file` + `file.json`.
 */
async function layer(dir, file, excludes = []) {
  const meta = `${file}.json`;
  if (existsSync(meta) && existsSync(file)) return JSON.parse(readFileSync(meta, 'utf8'));
  const tarArgs = ['--create', '--file=-', '--directory', dir, '--sort=name', '--numeric-owner', '--xattrs', '--xattrs-include=security.capability',
    ...excludes.map((e) => `--exclude=${e}`), '.'];
  const tar = spawn('tar', tarArgs, { stdio: ['ignore', 'pipe', 'inherit'] });
  const diff = createHash('sha256');
  const dig = createHash('sha256');
  const gz = createGzip({ level: 6 });
  const out = createWriteStream(`${file}.tmp`);
  let size = 0;
  gz.on('data', (b) => { dig.update(b); size += b.length; });
  tar.stdout.on('data', (b) => diff.update(b));
  const exited = new Promise((res, rej) => tar.on('exit', (c) => (c === 0 ? res() : rej(new Error(`tar ${dir} failed (exit ${c})`)))));
  await Promise.all([exited, new Promise((res, rej) => { tar.stdout.pipe(gz).pipe(out); out.on('finish', res); out.on('error', rej); gz.on('error', rej); })]);
  renameSync(`${file}.tmp`, file);
  const m = { digest: `sha256:${dig.digest('hex')}`, diffId: `sha256:${diff.digest('hex')}`, size };
  writeFileSync(meta, JSON.stringify(m));
  return m;
}

const ROOTFS_EXCLUDES = ['./proc/*', './sys/*', './dev/*', './run/*', './tmp/*', './var/tmp/*', './var/cache/apt/*', './var/lib/apt/lists/*', './usr/sbin/policy-rc.d'];

/** `npm pack` of the repository, unpacked (dist/ brought up to date first; the tarball holds what `files` lists) */
function packApp(stage) {
  sh(process.execPath, [join(root, 'scripts/build.mjs'), '--if-stale']);
  log('npm pack');
  const outp = sh('npm', ['pack', '--ignore-scripts', '--pack-destination', stage, '--json', '--silent'], { cwd: root, capture: true });
  const info = JSON.parse(outp.slice(outp.indexOf('[')))[0];
  const app = join(stage, 'app');
  mkdirSync(app, { recursive: true });
  sh('tar', ['-xzf', join(stage, info.filename), '-C', app, '--strip-components=1', '--no-same-owner']);
  return { app, tarball: info.filename };
}

/** production node_modules compiled in the build chroot, cached by package-lock.json + base */
function nodeModules(key, stage, build) {
  const lock = readFileSync(join(root, 'package-lock.json'));
  const addonSrc = ['capture.c', 'binding.gyp'].map((f) => join(root, 'native', 'capture', f));
  const depKey = sha256(Buffer.concat([lock, Buffer.from(key), ...addonSrc.map((f) => readFileSync(f))])).slice(0, 16);
  const dir = join(CACHE, `deps-${depKey}`);
  if (existsSync(join(dir, 'done'))) return { dir, depKey, cached: true };
  rmSync(dir, { recursive: true, force: true });
  const work = join(stage, 'deps');
  mkdirSync(work, { recursive: true });
  writeFileSync(join(work, 'package.json'), readFileSync(join(root, 'package.json')));
  writeFileSync(join(work, 'package-lock.json'), lock);
  mkdirSync(join(work, 'native', 'capture'), { recursive: true });
  for (const f of addonSrc) writeFileSync(join(work, 'native', 'capture', basename(f)), readFileSync(f));
  log('npm ci --omit=dev (host: downloads only, no scripts)');
  sh('npm', ['ci', '--omit=dev', '--ignore-scripts', '--no-audit', '--no-fund', '--loglevel=error'], { cwd: work });
  // compile the native modules inside the build chroot, against the image's node and libpcap
  const inside = '/opt/rolltrace-build';
  const mnt = join(build, inside);
  rmSync(mnt, { recursive: true, force: true });
  sh('cp', ['-a', work, mnt]);
  log('compiling better-sqlite3, cap and the capture addon in the build chroot');
  inChroot(build, [
    // node-gyp's log only when it fails
    `for m in node_modules/better-sqlite3 node_modules/cap native/capture; do (cd ${inside}/$m && node-gyp rebuild --release >/tmp/node-gyp.log 2>&1) || { cat /tmp/node-gyp.log; exit 1; }; done`,
    `ldd ${inside}/native/capture/build/Release/rolltrace_capture.node | grep -q libpcap`,
    `cd ${inside} && node -e "const D = require('better-sqlite3'); new D(':memory:').prepare('select 1').get(); const c = require('cap'); if (!c.Cap.deviceList) process.exit(1)"`,
    `ldd ${inside}/node_modules/cap/build/Release/cap.node | grep -q libpcap`,
  ].join('\n'));
  // keep what runs: the .node files, not the compiler's intermediates and sources
  for (const m of ['better-sqlite3', 'cap']) {
    const rel = join(mnt, 'node_modules', m, 'build');
    for (const e of readdirSync(join(rel, 'Release'))) if (!e.endsWith('.node')) rmSync(join(rel, 'Release', e), { recursive: true, force: true });
    for (const e of readdirSync(rel)) if (e !== 'Release') rmSync(join(rel, e), { recursive: true, force: true });
  }
  rmSync(join(mnt, 'node_modules', 'better-sqlite3', 'deps'), { recursive: true, force: true });
  rmSync(join(mnt, 'node_modules', 'better-sqlite3', 'build', 'Release', 'test_extension.node'), { force: true });
  mkdirSync(join(dir, 'root', 'opt', 'rolltrace', 'native', 'capture', 'build', 'Release'), { recursive: true });
  sh('mv', [join(mnt, 'node_modules'), join(dir, 'root', 'opt', 'rolltrace', 'node_modules')]);
  sh('mv', [join(mnt, 'native', 'capture', 'build', 'Release', 'rolltrace_capture.node'), join(dir, 'root', 'opt', 'rolltrace', 'native', 'capture', 'build', 'Release')]);
  rmSync(mnt, { recursive: true, force: true });
  writeFileSync(join(dir, 'done'), `${new Date().toISOString()}\n`);
  return { dir, depKey, cached: false };
}

function writeBlob(blobs, bytes) {
  const d = sha256(bytes);
  writeFileSync(join(blobs, d), bytes);
  return { digest: `sha256:${d}`, size: bytes.length };
}

export async function buildImage({ out = DEFAULT_OUT, rebuildBase = false } = {}) {
  const t0 = Date.now();
  ensureHostTools();
  mkdirSync(CACHE, { recursive: true });
  const key = sha256(JSON.stringify([SUITE, MIRROR, RUNTIME_PACKAGES, 'v1'])).slice(0, 12);
  const base = baseRootfs(key, rebuildBase);
  log(`base root filesystem: ${base.cached ? 'cached' : 'built'} (${base.rootfs})`);
  const baseLayer = await layer(base.rootfs, join(base.dir, 'layer.tar.gz'), ROOTFS_EXCLUDES);
  // what was built on top of the base follows it when the base is rebuilt
  const builtKey = sha256(key + readFileSync(join(base.dir, 'rootfs.done'), 'utf8')).slice(0, 12);
  const build = buildRootfs(base, builtKey);

  const stage = mkdtempSync(join(CACHE, 'stage-'));
  try {
    const { app } = packApp(stage);
    const deps = nodeModules(builtKey, stage, build);
    log(`node_modules: ${deps.cached ? 'cached' : 'built'}`);
    const depsLayer = await layer(join(deps.dir, 'root'), join(deps.dir, 'layer.tar.gz'));

    // layer 3: the package and the command on PATH
    const appRoot = join(stage, 'layer');
    mkdirSync(join(appRoot, 'opt'), { recursive: true });
    sh('mv', [app, join(appRoot, 'opt', 'rolltrace')]);
    mkdirSync(join(appRoot, 'usr', 'local', 'bin'), { recursive: true });
    symlinkSync('/opt/rolltrace/bin/rolltrace.mjs', join(appRoot, 'usr', 'local', 'bin', 'rolltrace'));
    mkdirSync(join(appRoot, 'var', 'lib', 'rolltrace'), { recursive: true });
    chmodSync(join(appRoot, 'opt', 'rolltrace', 'bin', 'rolltrace.mjs'), 0o755);
    sh('chown', ['-R', '0:0', appRoot]);
    const appLayer = await layer(appRoot, join(stage, 'app.tar.gz'));

    // OCI layout
    const layout = join(stage, 'oci');
    const blobs = join(layout, 'blobs', 'sha256');
    mkdirSync(blobs, { recursive: true });
    const layers = [[baseLayer, join(base.dir, 'layer.tar.gz')], [depsLayer, join(deps.dir, 'layer.tar.gz')], [appLayer, join(stage, 'app.tar.gz')]];
    for (const [m, f] of layers) linkSync(f, join(blobs, m.digest.slice(7)));
    const created = new Date().toISOString();
    const config = {
      created, architecture: 'amd64', os: 'linux',
      config: {
        Env: ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', 'NODE_ENV=production'],
        Entrypoint: ['/usr/local/bin/rolltrace'], Cmd: ['--help'], WorkingDir: '/var/lib/rolltrace',
        Labels: { 'org.opencontainers.image.title': 'rolltrace', 'org.opencontainers.image.version': pkg.version, 'org.opencontainers.image.description': pkg.description },
      },
      rootfs: { type: 'layers', diff_ids: layers.map(([m]) => m.diffId) },
      history: [
        { created, created_by: `debootstrap --variant=minbase ${SUITE}; apt-get install ${RUNTIME_PACKAGES.join(' ')}` },
        { created, created_by: 'npm ci --omit=dev; node-gyp rebuild better-sqlite3 cap native/capture (build chroot)' },
        { created, created_by: `npm pack rolltrace@${pkg.version} -> /opt/rolltrace` },
      ],
    };
    const cfg = writeBlob(blobs, Buffer.from(JSON.stringify(config)));
    const manifest = {
      schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json',
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', ...cfg },
      layers: layers.map(([m]) => ({ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: m.digest, size: m.size })),
    };
    const man = writeBlob(blobs, Buffer.from(JSON.stringify(manifest)));
    const index = {
      schemaVersion: 2, mediaType: 'application/vnd.oci.image.index.v1+json',
      manifests: [{ mediaType: 'application/vnd.oci.image.manifest.v1+json', ...man, platform: { architecture: 'amd64', os: 'linux' },
        annotations: { 'io.containerd.image.name': IMAGE_NAME, 'org.opencontainers.image.ref.name': pkg.version } }],
    };
    writeFileSync(join(layout, 'index.json'), JSON.stringify(index));
    writeFileSync(join(layout, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
    mkdirSync(dirname(resolve(out)), { recursive: true });
    sh('tar', ['--create', '--file', `${resolve(out)}.tmp`, '--directory', layout, '--numeric-owner', '--owner=0', '--group=0', '--hard-dereference', 'oci-layout', 'index.json', 'blobs']);
    renameSync(`${resolve(out)}.tmp`, resolve(out));
    // the last archive built on this machine, where `lab up --real` also looks (lab/real/rolltrace-image.ts)
    const cached = join(CACHE, 'rolltrace-image.tar');
    if (resolve(out) !== cached) {
      const tmp = `${cached}.${process.pid}.tmp`;
      rmSync(tmp, { force: true });
      try { linkSync(resolve(out), tmp); } catch { sh('cp', [resolve(out), tmp]); }
      renameSync(tmp, cached);
    }
    const size = statSync(resolve(out)).size;
    log(`built in ${((Date.now() - t0) / 1000).toFixed(0)} s: ${IMAGE_NAME} (${manifest.layers.map((l) => `${(l.size / 1048576).toFixed(1)}`).join(' + ')} MiB compressed layers)`);
    process.stdout.write(`${resolve(out)}\n${IMAGE_NAME} ${man.digest} ${(size / 1048576).toFixed(0)} MiB\n`);
    return { out: resolve(out), name: IMAGE_NAME, digest: man.digest, size };
  } finally {
    rmSync(stage, { recursive: true, force: true });
  }
}

if (process.argv[1] && fileURLToPath(import.meta.url) === resolve(process.argv[1])) {
  const args = process.argv.slice(2);
  const i = args.indexOf('--out');
  const bad = args.filter((a, j) => !['--out', '--rebuild-base'].includes(a) && j !== i + 1);
  if (bad.length || (i >= 0 && !args[i + 1])) { process.stderr.write(`usage: node scripts/image.mjs [--out FILE] [--rebuild-base]\n`); process.exit(2); }
  buildImage({ out: i >= 0 ? args[i + 1] : DEFAULT_OUT, rebuildBase: args.includes('--rebuild-base') }).catch((e) => fail(e.message));
}
