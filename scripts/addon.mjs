#!/usr/bin/env node
// Builds rolltrace's capture addon (native/capture: libpcap read by a thread of the recorder, see
// recorder/sources/packets/native.ts) when it is missing or older than its source. The package's
// `install` script (npm ci in a clone, npm install -g of the tarball) and scripts/setup.mjs run it.
// Optional: without libpcap's headers or a C compiler it says so in one line and exits 0, and the
// recorder captures through tcpdump. Node built-ins only.
import { spawnSync } from 'node:child_process';
import { existsSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const dir = join(dirname(fileURLToPath(import.meta.url)), '..', 'native', 'capture');
const out = join(dir, 'build', 'Release', 'rolltrace_capture.node');
const log = (s) => process.stderr.write(`[addon] ${s}\n`);
const mtime = (f) => (existsSync(f) ? statSync(f).mtimeMs : 0);

export function addonStale() {
  return mtime(out) < Math.max(mtime(join(dir, 'capture.c')), mtime(join(dir, 'binding.gyp')));
}

export function buildAddon() {
  if (!existsSync(join(dir, 'capture.c')) || !addonStale()) return true;
  if (!existsSync('/usr/include/pcap/pcap.h')) { log('libpcap headers missing (libpcap-dev): packet capture goes through tcpdump'); return false; }
  // npm's own node-gyp (npm tells its scripts where), else the one next to npm
  let gyp = process.env.npm_config_node_gyp;
  if (!gyp || !existsSync(gyp)) {
    const g = spawnSync('npm', ['root', '-g'], { encoding: 'utf8' });
    gyp = join(g.stdout.trim(), 'npm', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js');
  }
  if (!existsSync(gyp)) { log(`node-gyp not found (${gyp}): packet capture goes through tcpdump`); return false; }
  // the installed node's headers when they are there (no download)
  const nodedir = process.env.npm_config_nodedir || (existsSync('/usr/include/node/node_api.h') ? '/usr' : '');
  log('building the capture addon (native/capture)');
  const r = spawnSync(process.execPath, [gyp, 'rebuild', '--release', ...(nodedir ? [`--nodedir=${nodedir}`] : [])], { cwd: dir, encoding: 'utf8' });
  if (r.status !== 0 || !existsSync(out)) {
    const why = `${r.stdout ?? ''}${r.stderr ?? ''}`.split('\n').filter((l) => /error/i.test(l)).slice(-3).join(' / ');
    log(`the capture addon did not build${why ? `: ${why}` : ''}; packet capture goes through tcpdump`);
    return false;
  }
  return true;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  buildAddon();
  process.exit(0);
}
