/**
 * Pure parsers for /proc files used to find pod processes and their listeners without the API:
 * /proc/PID/cgroup, /proc/PID/net/tcp{,6}, /proc/PID/net/fib_trie, /proc/PID/net/if_inet6.
 */

export interface CgroupMatch {
  /** pod UID with dashes (systemd driver writes underscores) */
  podUid: string;
  /** container id (64 hex) when the path names one */
  containerId: string | null;
  qos: 'guaranteed' | 'burstable' | 'besteffort';
  path: string;
}

const UID_RE = '([0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12})';
// systemd driver: .../kubepods-besteffort.slice/kubepods-besteffort-pod<uid_>.slice/cri-containerd-<id>.scope
const SYSTEMD_RE = new RegExp(`kubepods(?:-(burstable|besteffort))?-pod${UID_RE}\\.slice(?:/(?:cri-containerd|crio|docker|containerd)-([0-9a-f]{64})\\.scope)?`);
// cgroupfs driver: /kubepods/besteffort/pod<uid>/<id>   (guaranteed pods sit directly under /kubepods)
const CGROUPFS_RE = new RegExp(`/kubepods(?:/(burstable|besteffort))?/pod${UID_RE}(?:/(?:cri-containerd-|crio-|docker-)?([0-9a-f]{64}))?`);

/** One line of /proc/PID/cgroup ("0::/path" on v2, "N:controllers:/path" on v1). null when not a pod. */
export function parseCgroupLine(line: string): CgroupMatch | null {
  const m1 = /^\d+:[^:]*:(.*)$/.exec(line.trim());
  if (!m1) return null;
  const path = m1[1]!;
  const m = SYSTEMD_RE.exec(path) ?? CGROUPFS_RE.exec(path);
  if (!m) return null;
  return {
    podUid: m[2]!.replace(/_/g, '-'),
    containerId: m[3] ?? null,
    qos: (m[1] as 'burstable' | 'besteffort' | undefined) ?? 'guaranteed',
    path,
  };
}

/** The first pod match among the lines of a /proc/PID/cgroup file. */
export function parseCgroupFile(text: string): CgroupMatch | null {
  for (const l of text.split('\n')) { const m = parseCgroupLine(l); if (m) return m; }
  return null;
}

export interface ProcNetTcpRow { addr: string; port: number; remAddr: string; remPort: number; state: number; inode: number; uid: number }

function hexIp4(h: string): string {
  // little-endian 32-bit word
  const n = parseInt(h, 16);
  return `${n & 255}.${(n >>> 8) & 255}.${(n >>> 16) & 255}.${(n >>> 24) & 255}`;
}

function hexIp6(h: string): string {
  // four little-endian 32-bit words
  const bytes: number[] = [];
  for (let w = 0; w < 4; w++) {
    const word = h.slice(w * 8, w * 8 + 8);
    for (let b = 3; b >= 0; b--) bytes.push(parseInt(word.slice(b * 2, b * 2 + 2), 16));
  }
  return ip6FromBytes(bytes);
}

export function ip6FromBytes(b: number[]): string {
  const g: number[] = [];
  for (let i = 0; i < 8; i++) g.push((b[i * 2]! << 8) | b[i * 2 + 1]!);
  if (g.slice(0, 5).every((x) => x === 0) && g[5] === 0xffff) return `::ffff:${b[12]}.${b[13]}.${b[14]}.${b[15]}`;
  let bs = -1, bl = 0;
  for (let i = 0; i < 8;) {
    if (g[i] !== 0) { i++; continue; }
    let j = i; while (j < 8 && g[j] === 0) j++;
    if (j - i > bl && j - i >= 2) { bs = i; bl = j - i; }
    i = j;
  }
  const hex = g.map((x) => x.toString(16));
  return bs < 0 ? hex.join(':') : `${hex.slice(0, bs).join(':')}::${hex.slice(bs + bl).join(':')}`;
}

export const TCP_LISTEN = 0x0a;

/** /proc/net/tcp or tcp6. Malformed rows are skipped and counted. */
export function parseProcNetTcp(text: string): { rows: ProcNetTcpRow[]; malformed: number } {
  const rows: ProcNetTcpRow[] = [];
  let malformed = 0;
  for (const line of text.split('\n')) {
    const t = line.trim();
    if (!t || t.startsWith('sl')) continue;
    const f = t.split(/\s+/);
    const m = /^([0-9A-F]+):([0-9A-F]{4})$/i.exec(f[1] ?? '');
    const r = /^([0-9A-F]+):([0-9A-F]{4})$/i.exec(f[2] ?? '');
    if (!m || !r || f.length < 10 || !/^[0-9A-F]{2}$/i.test(f[3]!)) { malformed++; continue; }
    const dec = (h: string) => (h.length === 8 ? hexIp4(h) : h.length === 32 ? hexIp6(h) : null);
    const addr = dec(m[1]!), rem = dec(r[1]!);
    if (addr === null || rem === null) { malformed++; continue; }
    rows.push({ addr, port: parseInt(m[2]!, 16), remAddr: rem, remPort: parseInt(r[2]!, 16), state: parseInt(f[3]!, 16), uid: Number(f[7]), inode: Number(f[9]) });
  }
  return { rows, malformed };
}

/** Local (assigned) IPv4 addresses from /proc/PID/net/fib_trie (entries followed by "/32 host LOCAL"). */
export function parseFibTrieLocal(text: string): string[] {
  const out = new Set<string>();
  let last: string | null = null;
  for (const line of text.split('\n')) {
    const leaf = /\|--\s+(\d+\.\d+\.\d+\.\d+)\s*$/.exec(line);
    if (leaf) { last = leaf[1]!; continue; }
    if (last && /\/32 host LOCAL/.test(line)) out.add(last);
  }
  return [...out];
}

/** Addresses from /proc/PID/net/if_inet6: "addr32hex ifindex prefixlen scope flags ifname". */
export function parseIfInet6(text: string): Array<{ addr: string; ifname: string; scope: number }> {
  const out: Array<{ addr: string; ifname: string; scope: number }> = [];
  for (const line of text.split('\n')) {
    const f = line.trim().split(/\s+/);
    if (f.length < 6 || !/^[0-9a-f]{32}$/i.test(f[0]!)) continue;
    const b: number[] = [];
    for (let i = 0; i < 32; i += 2) b.push(parseInt(f[0]!.slice(i, i + 2), 16));
    out.push({ addr: ip6FromBytes(b), ifname: f[5]!, scope: parseInt(f[3]!, 16) });
  }
  return out;
}

/** Socket inode from a /proc/PID/fd link target ("socket:[12345]"). */
export function socketInode(link: string): number | null {
  const m = /^socket:\[(\d+)\]$/.exec(link);
  return m ? Number(m[1]) : null;
}
