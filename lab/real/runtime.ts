/**
 * The container runtime of the real node, from Debian. runc and the CNI plugins come from bookworm
 * (scripts/setup.mjs installs them). containerd: kubelet 1.33 asks for >= 1.7.24 and bookworm ships
 * 1.6.20, so the lab takes trixie's containerd 1.7.24 package, downloaded with apt-get (a private apt
 * state with only the trixie source, so the machine's apt sources stay as they are) and unpacked
 * (dpkg-deb -x) into /var/cache/rolltrace/containerd/<version>/; it runs with bookworm's libc and runc.
 */
import { existsSync, mkdirSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { run } from '../sys.js';
import { CACHE_ROOT } from './build.js';

export const CONTAINERD_SUITE = 'trixie';
export const CONTAINERD_MIN = '1.7.24';
const aptDir = () => join(CACHE_ROOT, 'apt-trixie');
export const containerdDir = () => join(CACHE_ROOT, 'containerd', CONTAINERD_SUITE);
export const containerdBin = (name: 'containerd' | 'ctr' | 'containerd-shim-runc-v2') => join(containerdDir(), 'usr/bin', name);

/** apt-get options that use a private sources list and state, leaving the machine's apt alone. */
export function aptOptions(dir: string): string[] {
  return ['-o', `Dir::Etc::SourceList=${join(dir, 'sources.list')}`, '-o', 'Dir::Etc::SourceParts=/dev/null',
    '-o', `Dir::State::Lists=${join(dir, 'lists')}`, '-o', `Dir::Cache=${dir}`, '-o', `Dir::Cache::Archives=${join(dir, 'archives')}`,
    '-o', 'APT::Architecture=amd64', '-o', 'APT::Sandbox::User=root'];
}

/** Download and unpack trixie's containerd unless it is there; return the dir holding usr/bin/containerd. */
export function ensureContainerd(say: (s: string) => void): string {
  if (existsSync(containerdBin('containerd')) && existsSync(containerdBin('containerd-shim-runc-v2'))) return containerdDir();
  const dir = aptDir();
  for (const d of ['lists/partial', 'archives/partial']) mkdirSync(join(dir, d), { recursive: true });
  writeFileSync(join(dir, 'sources.list'), `deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian ${CONTAINERD_SUITE} main\n`);
  say(`fetching containerd from Debian ${CONTAINERD_SUITE} (kubelet 1.33 wants >= ${CONTAINERD_MIN}; bookworm has 1.6)`);
  const o = aptOptions(dir);
  run('apt-get', [...o, '-qq', 'update']);
  for (const f of readdirSync(dir)) if (f.endsWith('.deb')) rmSync(join(dir, f));
  run('sh', ['-c', `cd '${dir}' && apt-get ${o.map((x) => `'${x}'`).join(' ')} -qq download containerd`]);
  const deb = readdirSync(dir).find((f) => /^containerd_.*_amd64\.deb$/.test(f));
  if (!deb) throw new Error(`apt-get download containerd (${CONTAINERD_SUITE}) left no .deb in ${dir}`);
  const out = containerdDir();
  rmSync(out, { recursive: true, force: true });
  mkdirSync(out, { recursive: true });
  run('dpkg-deb', ['-x', join(dir, deb), out]);
  writeFileSync(join(out, 'SOURCE'), `${deb}\n`);
  say(`containerd: ${run(containerdBin('containerd'), ['--version']).stdout.trim()}`);
  return out;
}

export function containerdVersion(): string | null {
  if (!existsSync(containerdBin('containerd'))) return null;
  return /\s(\d+\.\d+\.\d+)/.exec(run(containerdBin('containerd'), ['--version']).stdout)?.[1] ?? null;
}
