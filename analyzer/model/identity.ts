/**
 * Who is who, over time: pods (by UID when the kube source recorded them, else by IP), the IP each held
 * and when, and which PIDs / network namespaces belong to which pod. Pure: built from rows.
 */
import { nsFromIso } from '../../schemas/analysis.js';
import type { BundleReader } from '../bundle-reader.js';
import { num, parseJson, sane, str } from '../util.js';

export interface PodInfo {
  /** uid, or `ip:<ip>` for pods known only by address */
  key: string;
  uid: string | null;
  namespace: string | null;
  /** metadata.name, or the IP when the bundle has no kube data */
  name: string;
  ips: string[];
  node: string | null;
  /** where the identity came from */
  from: 'kube' | 'process' | 'rules';
  createdNs: number | null;
  firstSeenNs: number | null;
  /** receipt of the first watch event carrying metadata.deletionTimestamp */
  deletionSeenNs: number | null;
  deletionTimestamp: string | null;
  graceSeconds: number | null;
  /** receipt of the DELETED watch event */
  deletedNs: number | null;
  /** receipt of the first watch event where the Ready condition was True */
  readyNs: number | null;
  pids: Set<number>;
  netns: Set<number>;
  /** status.hostIP(s): the address of the node the pod runs on (the kubelet probes from the node) */
  hostIps: string[];
}

export interface IpInterval { ip: string; podKey: string; from: number; to: number; how: string }

export interface PodAt { pod: PodInfo; exact: boolean; how: string }

const BAD_ADDR = /^(127\.|::1$|fe80:|0\.0\.0\.0$|::$)/i;

export function podLabel(p: PodInfo): string {
  return p.namespace ? `${p.namespace}/${p.name}` : p.name;
}

export class Identity {
  pods = new Map<string, PodInfo>();
  intervals = new Map<string, IpInterval[]>();
  pidPod = new Map<number, string>();
  netnsPod = new Map<number, string>();
  warnings: string[] = [];
  hasKube = false;

  private ensure(key: string, init: Partial<PodInfo>): PodInfo {
    let p = this.pods.get(key);
    if (!p) {
      p = {
        key, uid: null, namespace: null, name: key, ips: [], node: null, from: 'rules', createdNs: null, firstSeenNs: null,
        deletionSeenNs: null, deletionTimestamp: null, graceSeconds: null, deletedNs: null, readyNs: null,
        pids: new Set(), netns: new Set(), hostIps: [], ...init,
      };
      this.pods.set(key, p);
    }
    return p;
  }

  private addInterval(iv: IpInterval): void {
    const list = this.intervals.get(iv.ip) ?? [];
    const same = list.find((x) => x.podKey === iv.podKey);
    if (same) { same.from = Math.min(same.from, iv.from); same.to = Math.max(same.to, iv.to); return; }
    list.push(iv);
    list.sort((a, b) => a.from - b.from);
    this.intervals.set(iv.ip, list);
  }

  /** The pod that held `ip` at instant t (by UID when known). */
  podAt(ip: string | null | undefined, t: number): PodAt | null {
    if (!ip) return null;
    const list = this.intervals.get(ip);
    if (!list?.length) return null;
    let best: IpInterval | null = null;
    for (const iv of list) if (iv.from <= t && t <= iv.to && (!best || iv.from > best.from)) best = iv;
    if (best) return { pod: this.pods.get(best.podKey)!, exact: true, how: best.how };
    // nearest holder (IP assignment seen slightly after the packet, or deletion slightly before)
    let near: IpInterval | null = null;
    let nd = Infinity;
    for (const iv of list) {
      const d = t < iv.from ? iv.from - t : t - iv.to;
      if (d < nd) { nd = d; near = iv; }
    }
    if (near && (list.length === 1 || nd <= 5e9)) {
      return { pod: this.pods.get(near.podKey)!, exact: false, how: `${near.how}; nearest holder, ${Math.round(nd / 1e6)} ms outside its observed tenure` };
    }
    return null;
  }

  /**
   * The instants during which `ip` belonged to this pod: from its own tenure's start to the next
   * holder's (a rule or event of the address outside it belongs to another pod).
   */
  tenure(podKey: string, ip: string): { from: number; until: number } {
    const list = this.intervals.get(ip) ?? [];
    const i = list.findIndex((x) => x.podKey === podKey);
    if (i < 0) return { from: -Infinity, until: Infinity };
    const next = list.slice(i + 1).find((x) => x.from > list[i]!.from);
    return { from: i === 0 ? -Infinity : list[i]!.from, until: next ? next.from : Infinity };
  }

  /** Nodes' own addresses (status.hostIP of the pods running there) → node name. */
  nodeAddrs(): Map<string, string | null> {
    const m = new Map<string, string | null>();
    for (const p of this.pods.values()) for (const h of p.hostIps) if (!m.has(h)) m.set(h, p.node);
    return m;
  }

  podOfPid(pid: number | null | undefined): PodInfo | null {
    if (pid === null || pid === undefined) return null;
    const k = this.pidPod.get(pid);
    return k ? this.pods.get(k) ?? null : null;
  }
  podOfNetns(ns: number | null | undefined): PodInfo | null {
    if (ns === null || ns === undefined) return null;
    const k = this.netnsPod.get(ns);
    return k ? this.pods.get(k) ?? null : null;
  }
  /** All pods that ever held ip. */
  podsWithIp(ip: string): PodInfo[] {
    return (this.intervals.get(ip) ?? []).map((iv) => this.pods.get(iv.podKey)!).filter(Boolean);
  }

  /** Find a pod by user text: name, namespace/name, uid or IP. */
  find(text: string): PodInfo[] {
    const out: PodInfo[] = [];
    for (const p of this.pods.values()) {
      if (p.name === text || podLabel(p) === text || p.uid === text || p.ips.includes(text)) out.push(p);
    }
    return out;
  }

  /** Pod from the kube watch rows: one row (a watch event) at a time, in receipt order. */
  addPodObject(ts: number, eventType: string, objText: string): void {
    const j = parseJson(objText);
    if (!j.ok) return;
    const o = j.v;
    const md = (o.metadata ?? {}) as Record<string, unknown>;
    const st = (o.status ?? {}) as Record<string, unknown>;
    const spec = (o.spec ?? {}) as Record<string, unknown>;
    const uid = str(md.uid);
    const name = str(md.name);
    if (!uid || !name) return;
    this.hasKube = true;
    const p = this.ensure(uid, { uid, name, namespace: str(md.namespace), from: 'kube' });
    p.from = 'kube'; p.uid = uid; p.name = name; p.namespace = str(md.namespace);
    p.node = str(spec.nodeName) ?? p.node;
    if (p.firstSeenNs === null) p.firstSeenNs = ts;
    const created = str(md.creationTimestamp);
    if (created && p.createdNs === null) p.createdNs = sane(nsFromIso(created));
    if (num(spec.terminationGracePeriodSeconds) !== null && p.graceSeconds === null) p.graceSeconds = num(spec.terminationGracePeriodSeconds);
    const dts = str(md.deletionTimestamp);
    if (dts && p.deletionSeenNs === null) {
      p.deletionSeenNs = ts;
      p.deletionTimestamp = dts;
      if (num(md.deletionGracePeriodSeconds) !== null) p.graceSeconds = num(md.deletionGracePeriodSeconds);
    }
    if (eventType === 'DELETED' && p.deletedNs === null) p.deletedNs = ts;
    const conds = Array.isArray(st.conditions) ? (st.conditions as Array<Record<string, unknown>>) : [];
    if (p.readyNs === null && conds.some((c) => c && c.type === 'Ready' && c.status === 'True')) p.readyNs = ts;
    for (const h of [st.hostIP, ...(Array.isArray(st.hostIPs) ? (st.hostIPs as Array<Record<string, unknown>>).map((x) => x?.ip) : [])]) {
      if (str(h) && !p.hostIps.includes(h as string)) p.hostIps.push(h as string);
    }
    const ips = new Set<string>();
    if (str(st.podIP)) ips.add(st.podIP as string);
    if (Array.isArray(st.podIPs)) for (const x of st.podIPs as Array<Record<string, unknown>>) if (x && str(x.ip)) ips.add(x.ip as string);
    for (const ip of ips) {
      if (!p.ips.includes(ip)) p.ips.push(ip);
      this.addInterval({ ip, podKey: uid, from: ts, to: ts, how: `Pod ${name} status.podIP in watch events` });
    }
  }

  /** Close intervals once every pod row is in: a pod holds its IP until DELETED (or forever if never deleted). */
  finishKube(endNs: number): void {
    for (const [ip, list] of this.intervals) {
      list.sort((a, b) => a.from - b.from);
      for (let i = 0; i < list.length; i++) {
        const iv = list[i]!;
        const p = this.pods.get(iv.podKey)!;
        const next = list[i + 1];
        iv.to = p.deletedNs ?? (next ? Math.max(iv.to, next.from - 1) : Math.max(iv.to, endNs, Number.MAX_SAFE_INTEGER));
        // the IP was assigned before the watch reported it: extend back to creation, never over the previous holder
        const prev = list[i - 1];
        const floor = prev ? prev.to + 1 : -Infinity;
        if (p.createdNs !== null && p.createdNs < iv.from) iv.from = Math.max(p.createdNs, floor);
      }
      this.intervals.set(ip, list);
    }
  }

  addProcessAttached(ts: number, a: Record<string, unknown>): void {
    const pid = num(a.pid);
    const addrs = (Array.isArray(a.addrs) ? a.addrs : []).filter((x): x is string => typeof x === 'string' && !BAD_ADDR.test(x));
    const uid = str(a.pod_uid);
    let key: string | null = null;
    if (uid) {
      key = uid;
      if (!this.pods.has(uid)) this.ensure(uid, { uid, name: addrs[0] ?? `pod-${uid.slice(0, 8)}`, from: 'process' });
    } else {
      for (const ip of addrs) {
        const hit = this.podAt(ip, ts);
        if (hit) { key = hit.pod.key; break; }
      }
      if (!key && addrs[0]) key = this.ensure(`ip:${addrs[0]}`, { name: addrs[0], from: 'process' }).key;
    }
    if (!key) return;
    const p = this.pods.get(key)!;
    for (const ip of addrs) {
      if (!p.ips.includes(ip)) p.ips.push(ip);
      if (!this.intervals.get(ip)?.some((iv) => iv.podKey === key)) {
        if (!(this.intervals.get(ip)?.length)) this.addInterval({ ip, podKey: key, from: -Infinity, to: Infinity, how: `process ${pid ?? '?'} network namespace addresses` });
      }
    }
    if (pid !== null) { p.pids.add(pid); this.pidPod.set(pid, key); }
    const ns = num(a.netns);
    if (ns !== null) { p.netns.add(ns); this.netnsPod.set(ns, key); }
  }

  /** An endpoint IP seen in rules or slices with no pod known for it: a pod named by its IP. */
  addEndpointIp(ip: string, how: string, podName?: string | null, podUid?: string | null, namespace?: string | null): void {
    if (!ip || BAD_ADDR.test(ip)) return;
    if (podUid && this.pods.has(podUid)) return;
    if (this.intervals.get(ip)?.length) return;
    const key = podUid ?? `ip:${ip}`;
    const p = this.ensure(key, { uid: podUid ?? null, name: podName ?? ip, namespace: podName ? namespace ?? null : null, from: 'rules' });
    if (!p.ips.includes(ip)) p.ips.push(ip);
    this.addInterval({ ip, podKey: key, from: -Infinity, to: Infinity, how });
  }

  linkPid(pid: number | null, netns: number | null, ip?: string | null, t?: number, podUid?: string | null): void {
    if (pid === null) return;
    if (this.pidPod.has(pid)) return;
    let key: string | null = null;
    // the pod's cgroup, read by the recorder (ebpf: a signal's target while it was alive)
    if (podUid && this.pods.has(podUid)) key = podUid;
    else if (netns !== null && this.netnsPod.has(netns)) key = this.netnsPod.get(netns)!;
    else if (ip && t !== undefined) key = this.podAt(ip, t)?.pod.key ?? null;
    if (key) { this.pidPod.set(pid, key); this.pods.get(key)!.pids.add(pid); }
  }
}

const PROC_KINDS = ['signal', 'listen', 'accept', 'listener-closed', 'process-exit'];

/** Build the identity model from a bundle (streams; keeps only per-pod facts). */
export function buildIdentity(reader: BundleReader, endNs: number): Identity {
  const id = new Identity();
  for (const r of reader.k8sObjects({ kinds: ['Pod'] })) {
    const ts = sane(r.ts_ns);
    if (ts === null) continue;
    id.addPodObject(ts, String(r.event_type), r.object);
  }
  id.finishKube(endNs);
  for (const e of reader.eventsParsed({ kinds: ['process-attached'] })) {
    const ts = sane(e.ts_ns);
    if (ts !== null) id.addProcessAttached(ts, e.a);
  }
  for (const e of reader.eventsParsed({ kinds: ['endpoint-rule-added', 'endpoint-rule-removed', 'endpoint-changed', 'pod-terminating', 'pod-created', 'pod-deleted', 'pod-ready'] })) {
    const a = e.a;
    const ip = str(a.ip);
    if (!ip) continue;
    if (e.kind.startsWith('endpoint-rule')) id.addEndpointIp(ip, `endpoint ${str(a.endpoint) ?? ip} in this node's rules (service ${str(a.service) ?? '?'})`);
    else if (e.kind === 'endpoint-changed') id.addEndpointIp(ip, `EndpointSlice ${str(a.slice) ?? '?'} endpoint`, str(a.pod), str(a.pod_uid), str(a.namespace));
    else id.addEndpointIp(ip, `${e.kind} event`, str(a.name), str(a.uid), str(a.namespace));
  }
  // PIDs seen only in process events (children, or traced without attach info): link via netns or listen address
  for (const e of reader.eventsParsed({ kinds: PROC_KINDS })) {
    const ts = sane(e.ts_ns);
    id.linkPid(num(e.a.pid), num(e.a.netns), str(e.a.addr), ts ?? undefined, str(e.a.pod_uid));
  }
  return id;
}
