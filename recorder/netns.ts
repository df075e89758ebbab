/**
 * `record --netns PATH|PID`: the network namespace whose kube-proxy rules and conntrack table are read
 * (a kind/k3d node container's, a `ip netns` namespace). Only the nftables and conntrack sources enter
 * it, each tool run as `nsenter --net=PATH TOOL ...`: nsenter setns()es and then execs the tool, so the
 * tool itself writes to our pipe (no extra process, no buffering in between) and, unlike
 * `ip netns exec`, nothing is remounted. Packets, strace, ebpf, kube and probe stay in the recorder's
 * own namespace (the host's, where the node's veths, processes and tracepoints are visible).
 */
import { spawnSync } from 'node:child_process';
import { existsSync, readlinkSync, statSync, statfsSync } from 'node:fs';
import { InputError } from '../schemas/errors.js';

/** statfs f_type of nsfs (linux/magic.h NSFS_MAGIC): /run/netns/NAME bind mounts and /proc/PID/ns/* */
export const NSFS_MAGIC = 0x6e736673;

/** Sources that read the --netns namespace; every other source sees the recorder's own. */
export const NETNS_SOURCES = ['nftables', 'conntrack'] as const;

export interface NetnsTarget {
  /** as given on the command line */
  arg: string;
  /** the namespace file nsenter enters (a PID becomes /proc/PID/ns/net) */
  path: string;
  /** the namespace's inode (net:[INODE] in /proc/PID/ns/net) */
  inode: number;
  /** true when it is the recorder's own namespace already */
  own: boolean;
}

/** Validate `--netns PATH|PID` up front; InputError (one line, exit 2) when it is not a network namespace. */
export function resolveNetns(arg: string): NetnsTarget {
  const a = arg.trim();
  if (!a) throw new InputError('--netns needs a path (/run/netns/NAME, /proc/PID/ns/net) or a process id');
  const isPid = /^\d+$/.test(a);
  const path = isPid ? `/proc/${a}/ns/net` : a;
  if (isPid && !existsSync(`/proc/${a}`)) throw new InputError(`--netns ${a}: no process with that id`);
  try { statSync(path); } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') throw new InputError(`--netns ${a}: no such file`);
    throw new InputError(`--netns ${a}: cannot open it (${code ?? (e as Error).message.split('\n')[0]})`);
  }
  let fsType: number;
  try { fsType = Number(statfsSync(path).type); } catch (e) { throw new InputError(`--netns ${a}: cannot stat: ${(e as Error).message.split('\n')[0]}`); }
  if (fsType !== NSFS_MAGIC) {
    throw new InputError(`--netns ${a}: not a namespace file (expected /run/netns/NAME, /proc/PID/ns/net, a bind-mounted netns or a PID)`);
  }
  // /proc/PID/ns/* are symbolic links naming their type: say which namespace it is instead
  let link: string | null = null;
  try { link = readlinkSync(path); } catch { /* a bind-mounted nsfs file: no link */ }
  const kind = link?.match(/^(\w+):\[\d+\]$/)?.[1];
  if (kind && kind !== 'net') throw new InputError(`--netns ${a}: not a network namespace (it is a ${kind} namespace)`);
  // a bind-mounted file: setns(CLONE_NEWNET) refuses any other namespace type; this also proves nsenter runs
  const r = spawnSync('nsenter', [`--net=${path}`, 'true'], { encoding: 'utf8', timeout: 5000 });
  if (r.error) throw new InputError(`--netns needs nsenter (util-linux): ${r.error.message}`);
  if (r.status !== 0) {
    const why = (r.stderr || '').trim().split('\n').pop() ?? '';
    if (/Invalid argument/.test(why)) throw new InputError(`--netns ${a}: not a network namespace`);
    throw new InputError(`--netns ${a}: cannot enter it: ${why || `nsenter exit ${r.status}`}`);
  }
  const inode = statSync(path).ino;
  let own = false;
  try { own = statSync('/proc/self/ns/net').ino === inode; } catch { /* no procfs */ }
  return { arg: a, path, inode, own };
}

/** Command prefix that runs a tool inside the namespace (empty: the recorder's own). */
export function netnsExec(n: NetnsTarget | undefined): string[] {
  return n ? ['nsenter', `--net=${n.path}`] : [];
}

/** Suffix of the nftables/conntrack preflight detail (stored in the bundle's sources table). */
export function netnsNote(n: NetnsTarget | undefined): string {
  return n ? `; in network namespace ${n.path} (net:[${n.inode}]) through nsenter --net` : '';
}

/** The line `record` prints under the source plan: which source reads which namespace. */
export function netnsPlanLine(n: NetnsTarget): string {
  const own = n.own ? ' (the recorder\'s own namespace already)' : '';
  return `network namespace: nftables, conntrack read ${n.path} (net:[${n.inode}])${own}; packets, strace, ebpf, kube, probe see the recorder's own (the host's)`;
}

/**
 * The non-loopback, non-link-local addresses of `ip -j addr show` (pure; fixture-tested). Used for
 * meta.node_addrs when --netns names the node: its addresses are the namespace's, not the host's.
 */
export function parseIpAddrJson(text: string): string[] {
  let doc: unknown;
  try { doc = JSON.parse(text); } catch { return []; }
  if (!Array.isArray(doc)) return [];
  const out: string[] = [];
  for (const link of doc as Array<{ ifname?: unknown; flags?: unknown; addr_info?: unknown }>) {
    if (!link || typeof link !== 'object' || !Array.isArray(link.addr_info)) continue;
    if (Array.isArray(link.flags) && link.flags.includes('LOOPBACK')) continue;
    for (const ai of link.addr_info as Array<{ local?: unknown; scope?: unknown }>) {
      if (typeof ai?.local !== 'string' || ai.scope === 'host' || ai.scope === 'link') continue;
      out.push(ai.local);
    }
  }
  return [...new Set(out)];
}

/**
 * The hostname of the process holding a `/proc/PID/ns/net` namespace (a kind/k3d node container's is
 * its node name), or null for a namespace file without a process (/run/netns/NAME).
 */
export function netnsHostname(n: NetnsTarget): string | null {
  const pid = n.path.match(/^\/proc\/(\d+)\/ns\/net$/)?.[1];
  if (!pid) return null;
  const r = spawnSync('nsenter', [`--uts=/proc/${pid}/ns/uts`, 'hostname'], { encoding: 'utf8', timeout: 5000 });
  return r.status === 0 && r.stdout.trim() ? r.stdout.trim() : null;
}

/** The namespace's own addresses (empty when `ip` fails there). */
export function netnsAddrs(n: NetnsTarget): string[] {
  const r = spawnSync('nsenter', [`--net=${n.path}`, 'ip', '-j', 'addr', 'show'], { encoding: 'utf8', timeout: 5000 });
  return r.status === 0 ? parseIpAddrJson(r.stdout) : [];
}
