/**
 * Stable pseudonyms for one redaction pass: IPv4 addresses map /24 by /24 into 10.0.0.0/8 (the host
 * byte is kept, so two addresses share a pseudonymous /24 exactly when they shared a real one);
 * IPv6 addresses map to fd00::/8 by a keyed hash; Kubernetes names (namespaces, pods, workloads,
 * services, slices, nodes, label values) map to `<kind>-<hash>`. The key is random per run, so the
 * pseudonyms cannot be reversed by hashing guesses; every table of the bundle goes through the same
 * instance, so every join and every analysis result is unchanged.
 */
import { createHmac, randomBytes } from 'node:crypto';
import { isIPv4, isIPv6 } from 'node:net';

/** Addresses with a fixed meaning are kept. */
function keepIPv4(ip: string): boolean {
  const a = Number(ip.split('.')[0]);
  return a === 0 || a === 127 || a >= 224;
}

/** Words too generic to replace as text even when used as a label value. */
const STOP = new Set(['true', 'false', 'null', 'none', 'yes', 'no', 'tcp', 'udp', 'sctp', 'http', 'https', 'grpc', 'ip', 'ip6', 'inet',
  'v1', 'v2', 'apps', 'app', 'pod', 'pods', 'node', 'nodes', 'service', 'services', 'endpoint', 'endpoints', 'kube-proxy', 'nat', 'filter',
  'accept', 'drop', 'reject', 'ready', 'running', 'pending', 'added', 'modified', 'deleted', 'stable', 'latest', 'main', 'master', 'name']);

export class Pseudonymizer {
  private key: Buffer;
  private v4 = new Map<string, string>(); // /24 prefix -> pseudonymous prefix
  private v4used = new Set<string>();
  private v6 = new Map<string, string>();
  private names = new Map<string, string>();
  private used = new Set<string>();
  private nameRe: RegExp | null = null;
  ipCount = 0;

  constructor(key?: Buffer) { this.key = key ?? randomBytes(32); }

  private hash(s: string): Buffer { return createHmac('sha256', this.key).update(s).digest(); }

  ip = (ip: string): string => {
    if (isIPv4(ip)) {
      if (keepIPv4(ip)) return ip;
      const parts = ip.split('.');
      const prefix = parts.slice(0, 3).join('.');
      let p = this.v4.get(prefix);
      if (!p) {
        const h = this.hash(`v4:${prefix}`);
        let n = h.readUInt16BE(0);
        for (;;) { p = `10.${n >> 8}.${n & 0xff}`; if (!this.v4used.has(p)) break; n = (n + 1) & 0xffff; }
        this.v4.set(prefix, p);
        this.v4used.add(p);
      }
      this.ipCount++;
      return `${p}.${parts[3]}`;
    }
    if (isIPv6(ip)) {
      const low = ip.toLowerCase();
      if (low === '::' || low === '::1' || low.startsWith('::ffff:')) return ip;
      let m = this.v6.get(low);
      if (!m) {
        const h = this.hash(`v6:${low}`);
        const g: string[] = ['fd00'];
        for (let i = 0; i < 7; i++) g.push(h.readUInt16BE(i * 2).toString(16));
        m = g.join(':');
        this.v6.set(low, m);
      }
      return m;
    }
    return ip;
  };

  /** Register a name to pseudonymize everywhere (as text). Generic words, very short names (< 3, node names < 2) and names longer than a DNS subdomain (253) are skipped. */
  addName(name: unknown, kind: string): void {
    if (typeof name !== 'string') return;
    const n = name.trim();
    if (n.length > 253 || n.length < (kind === 'node' ? 2 : 3) || STOP.has(n.toLowerCase()) || /^[\d.:/-]+$/.test(n) || this.names.has(n) || this.used.has(n)) return;
    if (!/^[A-Za-z0-9][A-Za-z0-9._-]*$/.test(n)) return;
    const h = this.hash(`name:${n}`).toString('hex');
    let len = 6;
    let p = `${kind}-${h.slice(0, len)}`;
    while (this.used.has(p)) p = `${kind}-${h.slice(0, ++len)}`;
    this.names.set(n, p);
    this.used.add(p);
    this.nameRe = null;
  }

  get nameCount(): number { return this.names.size; }
  nameOf(n: string): string { return this.names.get(n) ?? n; }

  private regex(): RegExp | null {
    if (!this.names.size) return null;
    if (!this.nameRe) {
      const alts = [...this.names.keys()].sort((a, b) => b.length - a.length).map((s) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'));
      this.nameRe = new RegExp(`(?<![A-Za-z0-9_.])(?:${alts.join('|')})(?![A-Za-z0-9_])(?!\\.[A-Za-z0-9])`, 'g');
    }
    return this.nameRe;
  }

  /** Replace every IP address and registered name inside free text. */
  text = (s: string): string => {
    let out = s.replace(/(?<![\d.])(\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3})(?!\d|\.\d)/g, (m) => (isIPv4(m) ? this.ip(m) : m));
    out = out.replace(/(?<![0-9A-Za-z:])((?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4})(?![0-9A-Za-z:])/g, (m) => (m.includes(':') && isIPv6(m) ? this.ip(m) : m));
    const re = this.regex();
    if (re) out = out.replace(re, (m) => this.names.get(m) ?? m);
    return out;
  };
}
