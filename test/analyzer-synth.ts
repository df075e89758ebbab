/**
 * Synthetic bundles that mirror the lab scenarios, built with the real bundle writer (tests only).
 * Times are relative seconds from T0; everything else is what the recorder's sources would write.
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BundleWriter } from '../recorder/bundle-writer.js';
import { ev } from '../schemas/events.js';
import { TCP, type K8sObjectRow, type PacketRow } from '../schemas/rows.js';

export const T0 = 1_776_000_000_000_000_000;
export const at = (s: number) => T0 + Math.round(s * 1e9);
export const isoAt = (s: number) => new Date(Math.round(at(s) / 1e6)).toISOString();

export const VIP = '10.96.0.10';
export const CLIENT = '10.0.0.5';
export const OLD = { uid: 'uid-old-0001', name: 'web-7b685bbcdd-cktdt', ip: '10.42.0.97', pid: 4100, netns: 4026532001 };
/** node1's own address on the pod bridge: the kubelet's probes come from it (status.hostIP in the lab) */
export const NODE1_ADDR = '10.42.0.1';
export const NEW = { uid: 'uid-new-0002', name: 'web-54fcb567cc-4j6hk', ip: '10.42.0.98', pid: 4200, netns: 4026532002 };

export function tmpBundle(name: string): string {
  return join(mkdtempSync(join(tmpdir(), 'analyzer-test-')), `${name}.rtb`);
}

export function pod(p: { uid: string; name: string; ip: string }, o: { deletionAt?: number; grace?: number; ready?: boolean; createdAt?: number } = {}): string {
  return JSON.stringify({
    kind: 'Pod', metadata: {
      name: p.name, namespace: 'default', uid: p.uid, creationTimestamp: isoAt(o.createdAt ?? -60),
      ...(o.deletionAt !== undefined ? { deletionTimestamp: isoAt(o.deletionAt + (o.grace ?? 30)).replace(/\.\d+Z$/, 'Z'), deletionGracePeriodSeconds: o.grace ?? 30 } : {}),
    },
    spec: { nodeName: 'node1', terminationGracePeriodSeconds: o.grace ?? 30 },
    status: { phase: 'Running', hostIP: NODE1_ADDR, podIP: p.ip, podIPs: [{ ip: p.ip }], conditions: [{ type: 'Ready', status: o.ready === false ? 'False' : 'True' }] },
  });
}

export function slice(eps: Array<{ p: { uid: string; name: string; ip: string }; ready: boolean; terminating?: boolean }>): string {
  return JSON.stringify({
    kind: 'EndpointSlice', metadata: { name: 'web-gmfgw', namespace: 'default', labels: { 'kubernetes.io/service-name': 'web' } },
    ports: [{ name: 'http', port: 8080, protocol: 'TCP' }],
    endpoints: eps.map((e) => ({
      addresses: [e.p.ip], nodeName: 'node1', targetRef: { kind: 'Pod', name: e.p.name, uid: e.p.uid, namespace: 'default' },
      conditions: { ready: e.ready, serving: e.ready || !!e.terminating, terminating: !!e.terminating },
    })),
  });
}

export function pkt(ts: number, src: string, sport: number, dst: string, dport: number, flags: number, payload = 0, iface = 'cni0'): PacketRow {
  return {
    ts_ns: ts, iface, linktype: 1, caplen: 54 + payload, len: 54 + payload, l3: 'ip4', src, dst, proto: 'tcp', sport, dport,
    tcp_flags: flags, seq: 1, ack: 0, payload_len: payload, icmp_type: null, icmp_code: null,
    inner_src: null, inner_dst: null, inner_proto: null, inner_sport: null, inner_dport: null, data: null,
  };
}

export type Flow = 'ok' | 'refused' | 'killed' | 'icmp';

/** One probe request and its packets on the bridge (post-DNAT) and conntrack. */
export function flow(w: BundleWriter, s: number, cport: number, backend: string | null, kind: Flow, o: { remote?: string; endS?: number } = {}): void {
  const t = at(s);
  const remote = o.remote ?? `${VIP}:80`;
  const [rip, rport] = remote.split(':');
  if (backend) {
    w.conntrack({ ts_ns: t + 50_000, type: 'NEW', proto: 'tcp', state: 'SYN_SENT', orig_src: CLIENT, orig_dst: rip!, orig_sport: cport, orig_dport: Number(rport), reply_src: backend, reply_dst: CLIENT, reply_sport: 8080, reply_dport: cport, flags: null, zone: null, raw: null });
    w.packet(pkt(t + 100_000, CLIENT, cport, backend, 8080, TCP.SYN));
  }
  if (kind === 'ok' && backend) {
    w.packet(pkt(t + 200_000, backend, 8080, CLIENT, cport, TCP.SYN | TCP.ACK));
    w.packet(pkt(t + 300_000, CLIENT, cport, backend, 8080, TCP.ACK | TCP.PSH, 80));
    w.packet(pkt(t + 1_500_000, backend, 8080, CLIENT, cport, TCP.ACK | TCP.PSH, 200));
    w.packet(pkt(t + 1_600_000, CLIENT, cport, backend, 8080, TCP.ACK | TCP.FIN));
    w.packet(pkt(t + 1_700_000, backend, 8080, CLIENT, cport, TCP.ACK | TCP.FIN));
    w.probeRequest({ start_ns: t, end_ns: t + 1_800_000, local_addr: CLIENT, local_port: cport, remote, outcome: 'ok', status: 200, error: null });
  } else if (kind === 'refused' && backend) {
    w.packet(pkt(t + 200_000, backend, 8080, CLIENT, cport, TCP.RST | TCP.ACK));
    w.probeRequest({ start_ns: t, end_ns: t + 400_000, local_addr: CLIENT, local_port: cport, remote, outcome: 'error', status: null, error: 'ECONNREFUSED' });
  } else if (kind === 'killed' && backend) {
    w.packet(pkt(t + 200_000, backend, 8080, CLIENT, cport, TCP.SYN | TCP.ACK));
    w.packet(pkt(t + 300_000, CLIENT, cport, backend, 8080, TCP.ACK | TCP.PSH, 80));
    const end = at(o.endS ?? s + 1);
    w.packet(pkt(end + 100_000, backend, 8080, CLIENT, cport, TCP.RST | TCP.ACK));
    w.probeRequest({ start_ns: t, end_ns: end + 300_000, local_addr: CLIENT, local_port: cport, remote, outcome: 'error', status: null, error: 'ECONNRESET' });
  } else if (kind === 'icmp') {
    w.packet(pkt(t + 100_000, CLIENT, cport, rip!, Number(rport), TCP.SYN, 0, 'eth0'));
    w.packet({
      ...pkt(t + 200_000, '10.0.0.1', 0, CLIENT, 0, 0, 0, 'eth0'), proto: 'icmp', sport: null, dport: null, tcp_flags: null,
      icmp_type: 3, icmp_code: 13, inner_src: CLIENT, inner_dst: rip!, inner_proto: 'tcp', inner_sport: cport, inner_dport: Number(rport),
    });
    w.probeRequest({ start_ns: t, end_ns: t + 300_000, local_addr: CLIENT, local_port: cport, remote, outcome: 'error', status: null, error: 'EHOSTUNREACH' });
  }
}

export interface ScenarioOpts {
  /** listener closes this many seconds after SIGTERM (0 = race; 10 = preStop sleep) */
  closeAfter?: number;
  mode?: 'nftables' | 'iptables';
  withKube?: boolean;
  /** probe seconds that reach the old pod after it closed */
  failAt?: number[];
  notReady?: boolean;
  killed?: boolean;
  blackhole?: boolean;
  /** the process ignores SIGTERM: SIGKILL at SIGTERM + 30 s, a connection open then is cut */
  ignoreSigterm?: boolean;
  /** record the Deployment, Service (and PDB) and the API server version as the kube source does */
  workload?: { preStopSleep?: number; grace?: number; pdb?: boolean; gitVersion?: string; maxUnavailable?: number | string; externalTrafficPolicy?: 'Local' | 'Cluster' };
  extra?: (w: BundleWriter) => void;
  /** the kube source's receipt stamps are this many seconds late (watch delivery / clock skew) */
  kubeSkew?: number;
}

/** The Deployment `web` and Service `web` the synthetic pods belong to. */
export function workloadRows(w: BundleWriter, o: NonNullable<ScenarioOpts['workload']>): void {
  const container: Record<string, unknown> = {
    name: 'app', image: 'registry.example/web:1', ports: [{ name: 'http', containerPort: 8080, protocol: 'TCP' }],
    readinessProbe: { httpGet: { path: '/healthz', port: 8080 }, periodSeconds: 1 },
    ...(o.preStopSleep ? { lifecycle: { preStop: { sleep: { seconds: o.preStopSleep } } } } : {}),
  };
  const dep = {
    kind: 'Deployment', apiVersion: 'apps/v1', metadata: { name: 'web', namespace: 'default', uid: 'dep-1' },
    spec: {
      replicas: 2, selector: { matchLabels: { app: 'web' } }, minReadySeconds: 0,
      strategy: { type: 'RollingUpdate', rollingUpdate: { maxSurge: 1, maxUnavailable: o.maxUnavailable ?? 0 } },
      template: { metadata: { labels: { app: 'web' } }, spec: { containers: [container], terminationGracePeriodSeconds: o.grace ?? 30 } },
    },
  };
  const svc = {
    kind: 'Service', apiVersion: 'v1', metadata: { name: 'web', namespace: 'default', uid: 'svc-1' },
    spec: { type: o.externalTrafficPolicy ? 'NodePort' : 'ClusterIP', clusterIP: VIP, selector: { app: 'web' }, ports: [{ name: 'http', port: 80, targetPort: 8080, protocol: 'TCP' }],
      ...(o.externalTrafficPolicy ? { externalTrafficPolicy: o.externalTrafficPolicy } : {}) },
  };
  w.k8sObject({ ts_ns: at(0.001), kind: 'Version', namespace: null, name: 'kube-apiserver', uid: null, resource_version: null, event_type: 'LIST', object: JSON.stringify({ kind: 'Version', major: '1', minor: (o.gitVersion ?? 'v1.31.2').split('.')[1], gitVersion: o.gitVersion ?? 'v1.31.2' }) });
  w.k8sObject({ ts_ns: at(0.03), kind: 'Deployment', namespace: 'default', name: 'web', uid: 'dep-1', resource_version: '5', event_type: 'LIST', object: JSON.stringify(dep) });
  w.k8sObject({ ts_ns: at(0.04), kind: 'Service', namespace: 'default', name: 'web', uid: 'svc-1', resource_version: '6', event_type: 'LIST', object: JSON.stringify(svc) });
  if (o.pdb) {
    w.k8sObject({ ts_ns: at(0.045), kind: 'PodDisruptionBudget', namespace: 'default', name: 'web', uid: 'pdb-1', resource_version: '7', event_type: 'LIST',
      object: JSON.stringify({ kind: 'PodDisruptionBudget', metadata: { name: 'web', namespace: 'default' }, spec: { maxUnavailable: 1, selector: { matchLabels: { app: 'web' } } } }) });
  }
}

/** The race scenario and its variants: deletion at +2.0 s, rule removal at +2.731 s. */
export function scenario(path: string, o: ScenarioOpts = {}): string {
  const w = new BundleWriter(path, { createdBy: 'test', overwrite: true });
  const mode = o.mode ?? 'nftables';
  const withKube = o.withKube ?? true;
  const closeAfter = o.closeAfter ?? 0;
  const k8s = (r: K8sObjectRow) => w.k8sObject({ ...r, ts_ns: r.ts_ns + Math.round((o.kubeSkew ?? 0) * 1e9) });
  const failAt = o.failAt ?? (closeAfter > 0 || o.ignoreSigterm ? [] : [2.1, 2.4]);
  w.setMeta('started_ns', String(at(0)));
  w.setMeta('node', 'node1');
  w.setMeta('hostname', 'node1');
  for (const [n, c] of [['packets', 'kernel'], ['strace', 'kernel'], ['ebpf', 'converted-monotonic'], ['nftables', 'receipt'], ['conntrack', 'kernel'], ['kube', 'receipt'], ['probe', 'kernel']] as const) {
    w.setSource(n, { status: withKube || n !== 'kube' ? 'ok' : 'disabled', clock: c });
  }
  if (withKube && o.workload) workloadRows(w, o.workload);
  if (withKube) {
    k8s({ ts_ns: at(0.05), kind: 'Pod', namespace: 'default', name: OLD.name, uid: OLD.uid, resource_version: '10', event_type: 'LIST', object: pod(OLD) });
    k8s({ ts_ns: at(0.06), kind: 'EndpointSlice', namespace: 'default', name: 'web-gmfgw', uid: 's1', resource_version: '11', event_type: 'LIST', object: slice([{ p: OLD, ready: true }]) });
    k8s({ ts_ns: at(1.0), kind: 'Pod', namespace: 'default', name: NEW.name, uid: NEW.uid, resource_version: '12', event_type: 'ADDED', object: pod(NEW, { createdAt: 0.9, ready: false }) });
    k8s({ ts_ns: at(1.45), kind: 'Pod', namespace: 'default', name: NEW.name, uid: NEW.uid, resource_version: '13', event_type: 'MODIFIED', object: pod(NEW, { createdAt: 0.9 }) });
    k8s({ ts_ns: at(1.46), kind: 'EndpointSlice', namespace: 'default', name: 'web-gmfgw', uid: 's1', resource_version: '14', event_type: 'MODIFIED', object: slice([{ p: OLD, ready: true }, { p: NEW, ready: true }]) });
    k8s({ ts_ns: at(2.0), kind: 'Pod', namespace: 'default', name: OLD.name, uid: OLD.uid, resource_version: '15', event_type: 'MODIFIED', object: pod(OLD, { deletionAt: 2.0 }) });
    k8s({ ts_ns: at(2.02), kind: 'EndpointSlice', namespace: 'default', name: 'web-gmfgw', uid: 's1', resource_version: '16', event_type: 'MODIFIED', object: slice([{ p: OLD, ready: false, terminating: true }, { p: NEW, ready: true }]) });
    k8s({ ts_ns: at(2.2), kind: 'EndpointSlice', namespace: 'default', name: 'web-gmfgw', uid: 's1', resource_version: '17', event_type: 'MODIFIED', object: slice([{ p: NEW, ready: true }]) });
    k8s({ ts_ns: at(o.ignoreSigterm ? 32.6 : 2.6 + closeAfter), kind: 'Pod', namespace: 'default', name: OLD.name, uid: OLD.uid, resource_version: '18', event_type: 'DELETED', object: pod(OLD, { deletionAt: 2.0 }) });
  }
  w.event(ev('process-attached', at(0.01), 'strace', `pid:${OLD.pid}`, { pid: OLD.pid, comm: 'web', pod_uid: withKube ? OLD.uid : null, netns: OLD.netns, addrs: ['127.0.0.1', OLD.ip], listeners: [{ fd: 3, addr: '0.0.0.0', port: 8080 }] }));
  w.event(ev('process-attached', at(1.05), 'strace', `pid:${NEW.pid}`, { pid: NEW.pid, comm: 'web', pod_uid: withKube ? NEW.uid : null, netns: NEW.netns, addrs: ['127.0.0.1', NEW.ip] }));
  w.event(ev('listen', at(o.notReady ? 1.8 : 1.1), 'strace', `pid:${NEW.pid}`, { pid: NEW.pid, fd: 3, addr: '0.0.0.0', port: 8080, how: 'syscall' }));
  const chainOf = (ip: string) => (mode === 'nftables' ? `endpoint-${ip === OLD.ip ? 'ABCD1234' : 'EF567890'}-default/web/tcp/http__${ip}/8080` : `KUBE-SEP-${ip === OLD.ip ? 'ABCDEFGH12345678' : 'IJKLMNOP12345678'}`);
  const rule = (ip: string) => ({ service: 'default/web:http', vip: `${VIP}:80`, endpoint: `${ip}:8080`, ip, port: 8080, chain: chainOf(ip), mode, clock: 'receipt' as const });
  w.event(ev('endpoint-rule-added', at(0.02), 'nftables', `${OLD.ip}:8080`, rule(OLD.ip)));
  w.event(ev('endpoint-rule-added', at(1.5), 'nftables', `${NEW.ip}:8080`, rule(NEW.ip)));
  // SIGTERM at +2.030: ebpf (kernel, generated) and strace (delivered) both see it
  w.event(ev('signal', at(2.03), 'ebpf', `pid:${OLD.pid}`, { pid: OLD.pid, signo: 15, signame: 'SIGTERM', phase: 'generated', sender_comm: 'containerd-shim' }));
  w.event(ev('signal', at(2.0302), 'strace', `pid:${OLD.pid}`, { pid: OLD.pid, signo: 15, signame: 'SIGTERM', phase: 'delivered' }));
  // ignoring SIGTERM: the kernel closes the listener when SIGKILL ends the process, 30 s later
  const closeS = o.ignoreSigterm ? 32.0302 : 2.0305 + closeAfter;
  w.event(ev('listener-closed', at(closeS), 'ebpf', `${OLD.ip}:8080`, { addr: '0.0.0.0', port: 8080, how: 'tcp-state', netns: OLD.netns }));
  if (!o.ignoreSigterm) w.event(ev('listener-closed', at(closeS + 0.0005), 'strace', `pid:${OLD.pid}`, { pid: OLD.pid, fd: 3, addr: '0.0.0.0', port: 8080, how: 'close' }));
  if (o.ignoreSigterm) {
    w.event(ev('signal', at(32.03), 'ebpf', `pid:${OLD.pid}`, { pid: OLD.pid, signo: 9, signame: 'SIGKILL', phase: 'generated', sender_comm: 'kubelet' }));
    w.event(ev('process-exit', at(32.0301), 'strace', `pid:${OLD.pid}`, { pid: OLD.pid, code: null, signal: 'SIGKILL' }));
    // a slow request on a connection the old pod accepted before its rule went away, cut by the SIGKILL
    flow(w, 2.5, 45000, OLD.ip, 'killed', { endS: 32.0301 });
  } else if (o.killed) {
    w.event(ev('signal', at(2.5), 'ebpf', `pid:${OLD.pid}`, { pid: OLD.pid, signo: 9, signame: 'SIGKILL', phase: 'generated', sender_comm: 'kubelet' }));
    w.event(ev('process-exit', at(2.5001), 'strace', `pid:${OLD.pid}`, { pid: OLD.pid, code: null, signal: 'SIGKILL' }));
  } else {
    w.event(ev('process-exit', at(closeS + 0.2), 'strace', `pid:${OLD.pid}`, { pid: OLD.pid, code: 0, signal: null }));
  }
  w.event(ev('endpoint-rule-removed', at(2.731), 'nftables', `${OLD.ip}:8080`, rule(OLD.ip)));
  // a stale endpoint chain deleted much later must not count as the removal
  w.event(ev('endpoint-rule-removed', at(3.9), 'nftables', `${OLD.ip}:8080`, { ...rule(OLD.ip), service: 'default/web:http (stale chain)' }));
  if (o.blackhole) {
    w.event(ev('no-endpoint-rule-added', at(2.55), 'nftables', 'default/web-local:http', { service: 'default/web-local:http', vip: '10.0.0.1:30080', node_port: 30080, action: 'reject', mode }));
  }
  // probes every 100 ms from +0.0 to +3.5
  let cport = 40000;
  for (let i = 0; i <= 35; i++) {
    const s = Math.round(i * 100) / 1000;
    cport++;
    if (failAt.some((f) => Math.abs(f - s) < 1e-9)) { flow(w, s, cport, OLD.ip, 'refused'); continue; }
    if (o.notReady && Math.abs(s - 1.6) < 1e-9) { flow(w, s, cport, NEW.ip, 'refused'); continue; }
    if (o.killed && Math.abs(s - 2.0) < 1e-9) { flow(w, s, cport, OLD.ip, 'killed', { endS: 2.5001 }); continue; }
    if (o.blackhole && Math.abs(s - 2.6) < 1e-9) { flow(w, s, cport, null, 'icmp', { remote: '10.0.0.1:30080' }); continue; }
    const useOld = s < 1.5 || (closeAfter > 0 && s < 2.731 && i % 2 === 0);
    flow(w, s, cport, useOld ? OLD.ip : NEW.ip, 'ok');
  }
  o.extra?.(w);
  w.close();
  return path;
}
