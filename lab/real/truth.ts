/**
 * The real node's truth, from the components' own records, never from rolltrace's sources:
 *  - the app's stamps (lab/real/app: JSON lines in a hostPath file per pod: its IPs, listening, SIGTERM
 *    received, listener closed before/after close(2), exit);
 *  - kubelet's log (klog, µs): SyncLoop DELETE, preStop start/end, "Killing container with a grace period",
 *    PLEG ContainerStarted, readiness probe results;
 *  - containerd's log (ns): "Stop container ... with signal terminated" (SIGTERM), "Kill container"
 *    (SIGKILL at the end of the grace period), exit events with the exit instant;
 *  - kube-proxy's log at -v=4 with proxier.go at 9: every IPv4 sync's start and end, and the nftables
 *    transaction (or iptables-restore input) it ran, which says which endpoints each service chain routes to.
 * All parsers are pure (text in, records out) and tested on logs captured from a real run
 * (fixtures/lab-real/). The result feeds lab/truth.ts buildTruth as kubelet events and sync records, so
 * the fast and the real node write the same truth file.
 */
import type { KubeletEvent } from '../node/kubelet.js';
import type { SyncRecord } from '../kubeproxy/proxy.js';
import type { ConntrackRow } from '../../schemas/rows.js';

export interface KlogLine { tsNs: number; level: string; file: string; msg: string; rest: string; body: string[] }

const KLOG_RE = /^([IWEF])(\d{2})(\d{2}) (\d{2}):(\d{2}):(\d{2})\.(\d{6})\s+\d+ ([^\]]+)\] "((?:[^"\\]|\\.)*)"(.*)$/;

/**
 * klog text lines: header `Lmmdd hh:mm:ss.uuuuuu pid file:line] "msg" k=v...`; a value written as
 * `k=<` continues on tab-indented lines up to ` >`, kept in `body`. Times are local (klog's), on `year`.
 */
export function parseKlog(text: string, year: number): KlogLine[] {
  const out: KlogLine[] = [];
  let cur: KlogLine | null = null;
  let inBody = false;
  for (const line of text.split('\n')) {
    if (inBody && cur) {
      if (line === ' >') { inBody = false; continue; }
      if (line.startsWith('\t')) { cur.body.push(line.slice(1)); continue; }
      inBody = false;
    }
    const m = KLOG_RE.exec(line);
    if (!m) continue;
    const [, level, mo, d, h, mi, s, us, file, msg, rest] = m;
    const ms = new Date(year, Number(mo) - 1, Number(d), Number(h), Number(mi), Number(s)).getTime();
    cur = { tsNs: ms * 1e6 + Number(us) * 1e3, level: level!, file: file!, msg: msg!.replace(/\\"/g, '"'), rest: rest!, body: [] };
    out.push(cur);
    if (rest!.endsWith('=<')) inBody = true;
  }
  return out;
}

/** A `key="value"` or `key=value` of a klog line. */
export function klogValue(rest: string, key: string): string | null {
  const m = new RegExp(`(?:^|\\s)${key}=("(?:[^"\\\\]|\\\\.)*"|\\S+)`).exec(rest);
  if (!m) return null;
  const v = m[1]!;
  return v.startsWith('"') ? JSON.parse(v) as string : v;
}

/** nftables: endpoints a service chain jumps to, from the rules of one transaction. */
const NFT_EP_RE = /endpoint-[A-Z0-9]+-([^/\s]+\/[^/\s]+\/[a-z]+\/[^_\s]*)__([\d.]+)\/(\d+)/g;
/** service-HASH-ns/svc/proto/port -> "ns/svc:port" */
const nftSvcName = (chainKey: string) => { const [ns, svc, , port] = chainKey.split('/'); return `${ns}/${svc}:${port}`; };

/**
 * Per service port, the endpoints routed after this transaction, for the service chains it rewrites
 * (a partial sync leaves the others as they were). A chain deleted or flushed and left empty routes none.
 */
export function nftRouted(tx: string[]): Map<string, Set<string>> {
  const out = new Map<string, Set<string>>();
  for (const l of tx) {
    const m = /^(add|flush|delete) (chain|rule) ip kube-proxy service-[A-Z0-9]+-(\S+)(.*)$/.exec(l);
    if (!m) continue;
    const svc = nftSvcName(m[3]!);
    if (m[2] === 'chain') { if (m[1] !== 'add') out.set(svc, new Set()); else if (!out.has(svc)) out.set(svc, new Set()); continue; }
    const set = out.get(svc) ?? new Set<string>();
    for (const e of m[4]!.matchAll(NFT_EP_RE)) set.add(`${e[2]}:${e[3]}`);
    out.set(svc, set);
  }
  return out;
}

/** iptables-restore input: KUBE-SVC chains declared (rewritten) and the endpoints their rules name. */
export function iptablesRouted(rules: string[], chainSvc: Map<string, string>): Map<string, Set<string>> {
  const out = new Map<string, Set<string>>();
  const declared = new Set<string>();
  for (const l of rules) {
    const d = /^:(KUBE-SVC-[A-Z0-9]+) /.exec(l);
    if (d) { declared.add(d[1]!); continue; }
    const a = /^-A (KUBE-SVC-[A-Z0-9]+) .*--comment "?([^"\s]+) -> ([\d.]+:\d+)"?/.exec(l);
    if (a) {
      chainSvc.set(a[1]!, a[2]!);
      const s = out.get(a[2]!) ?? new Set<string>();
      s.add(a[3]!);
      out.set(a[2]!, s);
    }
    const x = /^-X (KUBE-SVC-[A-Z0-9]+)/.exec(l);
    if (x && chainSvc.has(x[1]!)) out.set(chainSvc.get(x[1]!)!, new Set());
  }
  for (const c of declared) { const svc = chainSvc.get(c); if (svc && !out.has(svc)) out.set(svc, new Set()); }
  return out;
}

/**
 * kube-proxy's IPv4 syncs: start ("Syncing nftables|iptables rules"), end ("SyncProxyRules complete"),
 * and the endpoints each rewritten service port routes to, diffed against the state before the sync.
 */
export function kubeProxySyncs(lines: KlogLine[]): SyncRecord[] {
  const out: SyncRecord[] = [];
  const routed = new Map<string, Set<string>>();
  const chainSvc = new Map<string, string>();
  let cur: (SyncRecord & { after: Map<string, Set<string>> | null }) | null = null;
  for (const l of lines) {
    const fam = klogValue(l.rest, 'ipFamily');
    if (fam && fam !== 'IPv4') continue;
    const start = /^Syncing (nftables|iptables) rules$/.exec(l.msg);
    if (start) {
      cur = { seq: out.length + 1, mode: start[1] as 'nftables' | 'iptables', startNs: l.tsNs, endNs: l.tsNs, added: [], removed: [], flushedChains: [], deletedChains: [], error: null, after: null };
      continue;
    }
    if (!cur) continue;
    if (l.msg === 'Running nftables transaction') {
      cur.after = nftRouted(l.body);
      for (const b of l.body) {
        const f = /^flush chain ip kube-proxy (endpoint-\S+)/.exec(b); if (f) cur.flushedChains.push(f[1]!);
        const d = /^delete chain ip kube-proxy (\S+)/.exec(b); if (d) cur.deletedChains.push(d[1]!);
      }
    } else if (l.msg === 'Restoring iptables') {
      // the rules come as one quoted value (a []byte), or as a multi-line value
      const rules = l.body.length ? l.body : (klogValue(l.rest, 'rules') ?? '').split('\n');
      cur.after = iptablesRouted(rules, chainSvc);
      for (const r of rules) { const x = /^-X (KUBE-SEP-\S+)/.exec(r); if (x) cur.deletedChains.push(x[1]!); }
    } else if (l.msg === 'nftables sync failed' || l.msg === 'Failed to execute iptables-restore') {
      cur.error = l.msg;
    } else if (l.msg === 'SyncProxyRules complete') {
      cur.endNs = l.tsNs;
      if (!cur.error && cur.after) {
        for (const [svc, eps] of cur.after) {
          const before = routed.get(svc) ?? new Set<string>();
          for (const e of eps) if (!before.has(e)) cur.added.push(`${svc}|${e}`);
          for (const e of before) if (!eps.has(e)) cur.removed.push(`${svc}|${e}`);
          routed.set(svc, eps);
        }
      }
      const { after: _after, ...rec } = cur;
      out.push(rec);
      cur = null;
    }
  }
  return out;
}

export interface PodRecord { what: string; tsNs: number; pod: string; uid: string | null; containerId?: string | null; detail?: Record<string, unknown> }

/** kubelet's records about pods (pod = "ns/name"). */
export function kubeletRecords(lines: KlogLine[]): PodRecord[] {
  const out: PodRecord[] = [];
  for (const l of lines) {
    const pod = klogValue(l.rest, 'pod');
    const uid = klogValue(l.rest, 'podUID');
    if (l.msg === 'SyncLoop DELETE') {
      const pods = /pods=\[([^\]]*)\]/.exec(l.rest)?.[1]?.split(',').map((p) => JSON.parse(p) as string) ?? [];
      for (const p of pods) out.push({ what: 'deletion-seen', tsNs: l.tsNs, pod: p, uid: null });
    } else if (l.msg === 'Running preStop hook' && pod) out.push({ what: 'prestop-start', tsNs: l.tsNs, pod, uid });
    else if ((l.msg === 'PreStop hook completed' || l.msg === 'PreStop hook not completed in grace period') && pod) out.push({ what: 'prestop-end', tsNs: l.tsNs, pod, uid });
    else if (l.msg === 'Killing container with a grace period' && pod) {
      out.push({ what: 'killing', tsNs: l.tsNs, pod, uid, containerId: klogValue(l.rest, 'containerID')?.replace(/^containerd:\/\//, '') ?? null,
        detail: { gracePeriod: Number(klogValue(l.rest, 'gracePeriod')) } });
    } else if (l.msg === 'SyncLoop (PLEG): event for pod' && pod) {
      const ev = /event=(\{.*\})/.exec(l.rest)?.[1];
      try {
        const e = JSON.parse(ev ?? '') as { ID: string; Type: string; Data: string };
        out.push({ what: e.Type === 'ContainerStarted' ? 'pleg-started' : e.Type === 'ContainerDied' ? 'pleg-died' : `pleg-${e.Type}`, tsNs: l.tsNs, pod, uid: e.ID, containerId: e.Data });
      } catch { /* not JSON */ }
    } else if (l.msg === 'SyncLoop (probe)' && pod && klogValue(l.rest, 'probe') === 'readiness') {
      out.push({ what: klogValue(l.rest, 'status') === 'ready' ? 'probe-ready' : 'probe-not-ready', tsNs: l.tsNs, pod, uid: null });
    }
  }
  return out;
}

export interface ContainerdRecord { what: 'sigterm' | 'sigkill' | 'exit'; tsNs: number; containerId: string; exitNs?: number; exitStatus?: number }

/** containerd's log: `time="RFC3339Nano" level=info msg="..."`. */
export function containerdRecords(text: string): ContainerdRecord[] {
  const out: ContainerdRecord[] = [];
  for (const line of text.split('\n')) {
    const m = /^time="([^"]+)" level=\w+ msg="((?:[^"\\]|\\.)*)"/.exec(line);
    if (!m) continue;
    const tsNs = isoToNs(m[1]!);
    const msg = m[2]!.replace(/\\"/g, '"');
    let x: RegExpExecArray | null;
    if ((x = /^Stop container "([0-9a-f]{64})" with signal (\w+)/.exec(msg))) {
      out.push({ what: x[2] === 'killed' ? 'sigkill' : 'sigterm', tsNs, containerId: x[1]! });
    } else if ((x = /^Kill container "([0-9a-f]{64})"/.exec(msg))) {
      out.push({ what: 'sigkill', tsNs, containerId: x[1]! });
    } else if ((x = /^received exit event container_id:"([0-9a-f]{64})".*?exit_status:(\d+).*?exited_at:\{seconds:(\d+)(?:\s+nanos:(\d+))?\}/.exec(msg))) {
      out.push({ what: 'exit', tsNs, containerId: x[1]!, exitStatus: Number(x[2]), exitNs: Number(x[3]) * 1e9 + Number(x[4] ?? 0) });
    } else if ((x = /^received exit event container_id:"([0-9a-f]{64})".*?exited_at:\{seconds:(\d+)(?:\s+nanos:(\d+))?\}/.exec(msg))) {
      out.push({ what: 'exit', tsNs, containerId: x[1]!, exitStatus: 0, exitNs: Number(x[2]) * 1e9 + Number(x[3] ?? 0) });
    }
  }
  return out;
}

/** RFC3339 with up to 9 fractional digits -> epoch ns (a JS number, sub-µs precision is lost). */
export function isoToNs(iso: string): number {
  const m = /^(.*?:\d{2})(?:\.(\d+))?(Z|[+-]\d{2}:\d{2})$/.exec(iso);
  if (!m) return NaN;
  return Date.parse(m[1]! + m[3]!) * 1e6 + Number((m[2] ?? '').padEnd(9, '0').slice(0, 9));
}

export interface Stamp { ev: string; ts_ns: number; name: string; [k: string]: unknown }

/** The app's stamps of one pod (JSON lines; a torn last line is ignored). */
export function parseStamps(text: string): Stamp[] {
  const out: Stamp[] = [];
  for (const l of text.split('\n')) {
    if (!l.trim()) continue;
    try { const j = JSON.parse(l) as Stamp; if (typeof j.ev === 'string' && typeof j.ts_ns === 'number') out.push(j); } catch { /* torn */ }
  }
  return out;
}

/**
 * The lab truth's kubelet-event list for the real node: one pod per stamp file (its name and IP are the
 * app's own), its uid and container id from kubelet's log, SIGTERM/SIGKILL/exit from containerd's.
 */
export function realKubeletEvents(input: { namespace: string; stamps: Map<string, Stamp[]>; kubelet: PodRecord[]; containerd: ContainerdRecord[] }): KubeletEvent[] {
  const out: KubeletEvent[] = [];
  for (const [name, st] of input.stamps) {
    const pod = `${input.namespace}/${name}`;
    const recs = input.kubelet.filter((r) => r.pod === pod);
    const uid = recs.find((r) => r.uid)?.uid ?? name;
    const started = st.find((s) => s.ev === 'started');
    const ip = (started?.ips as string[] | undefined)?.[0] ?? null;
    const emit = (what: string, ts: number, detail?: Record<string, unknown>) => out.push({ ts_ns: ts, pod, uid, ip, what, ...(detail ? { detail } : {}) });
    // the app's container: the one kubelet was killing, else the started container whose id is not the sandbox's
    const killing = recs.find((r) => r.what === 'killing');
    const cid = killing?.containerId ?? null;
    const startedRec = recs.filter((r) => r.what === 'pleg-started');
    emit('container-started', started?.ts_ns ?? startedRec[0]?.tsNs ?? 0, { containerId: cid });
    for (const s of st) {
      if (s.ev === 'started') continue;
      emit(`backend:${s.ev}`, s.ts_ns, s as unknown as Record<string, unknown>);
    }
    for (const r of recs) {
      if (r.what === 'probe-ready' || r.what === 'probe-not-ready' || r.what === 'prestop-start' || r.what === 'prestop-end') emit(r.what, r.tsNs);
    }
    const del = recs.find((r) => r.what === 'deletion-seen');
    if (del) emit('deletion-seen', del.tsNs, { gracePeriod: killing?.detail?.gracePeriod });
    if (cid) {
      const cr = input.containerd.filter((c) => c.containerId === cid);
      const term = cr.find((c) => c.what === 'sigterm');
      if (term) emit('sigterm-sent', term.tsNs, { containerId: cid, from: 'containerd' });
      const kill = cr.find((c) => c.what === 'sigkill');
      if (kill) emit('sigkill-sent', kill.tsNs, { containerId: cid, from: 'containerd' });
      const exit = cr.find((c) => c.what === 'exit');
      if (exit) emit('container-exited', exit.exitNs ?? exit.tsNs, { code: exit.exitStatus });
    }
  }
  return out.sort((a, b) => a.ts_ns - b.ts_ns);
}

/**
 * Connections to a service whose SYN nobody answered before `beforeNs`: conntrack reported NEW
 * (SYN_SENT) and never anything after (no SYN-ACK, no RST, no DESTROY). That happens on a real node when
 * the rules still send a SYN to a pod whose network is already torn down; the client times out.
 */
export function unansweredFlows(events: ConntrackRow[], isService: (ip: string, port: number) => boolean, beforeNs: number):
  Array<{ atNs: number; client: string; service: string; backendIp: string | null; backendPort: number | null }> {
  const flows = new Map<string, { row: ConntrackRow; more: boolean }>();
  for (const e of events) {
    if (e.proto !== 'tcp' || e.orig_dst == null || e.orig_dport == null || !isService(e.orig_dst, e.orig_dport)) continue;
    const k = `${e.orig_src}:${e.orig_sport}>${e.orig_dst}:${e.orig_dport}`;
    if (e.type === 'NEW') flows.set(k, { row: e, more: false });
    else { const f = flows.get(k); if (f) f.more = true; }
  }
  const out = [];
  for (const { row, more } of flows.values()) {
    if (more || row.state !== 'SYN_SENT' || row.ts_ns >= beforeNs) continue;
    const dnat = !(row.reply_src === row.orig_dst && row.reply_sport === row.orig_dport);
    out.push({ atNs: row.ts_ns, client: `${row.orig_src}:${row.orig_sport}`, service: `${row.orig_dst}:${row.orig_dport}`,
      backendIp: dnat ? row.reply_src ?? null : null, backendPort: dnat ? row.reply_sport ?? null : null });
  }
  return out.sort((a, b) => a.atNs - b.atNs);
}
