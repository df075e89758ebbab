/**
 * The lab's kubelet: watches pods bound to this node (binding unscheduled ones, as the only node),
 * creates each pod's netns/veth/cgroup, starts the backend inside it, reports status (podIP, Running,
 * ContainersReady/Ready from an HTTP or TCP readiness probe from the node ns; Ready at start without one), and
 * on deletionTimestamp runs the termination sequence: preStop (exec sleep N) -> SIGTERM -> wait up to
 * the grace period -> SIGKILL -> teardown -> DELETE with gracePeriodSeconds=0.
 */
import { connect } from 'node:net';
import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream, type WriteStream } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { randomBytes } from 'node:crypto';
import { informer, type KObj, type KubeClient } from '../kube.js';
import { nowNs, pidAlive, sleep } from '../sys.js';
import type { LabState } from '../state.js';
import { createPodNet, deleteNetns, POD_SUBNET, type NodeNet } from './netns.js';
import { relCgroup, cgroup2Root, createPodCgroup, podCgroupPaths, removePodCgroup, type PodCgroup } from './cgroup.js';

export interface KubeletEvent {
  ts_ns: number;
  pod: string; // ns/name
  uid: string;
  ip: string | null;
  /** kubelet actions, or `backend:<ev>` for the backend's own log lines (ts from the backend) */
  what: string;
  detail?: Record<string, unknown>;
}

export interface KubeletOptions {
  client: KubeClient;
  nodeName: string;
  node: NodeNet;
  state: LabState;
  /** absolute path of lab/backend/server.mjs */
  backendPath: string;
  logDir: string;
  /** between the container's exit and the sandbox teardown + API delete (the kubelet's pod worker and
   * status manager take about this long on a real node; the pod IP keeps answering with RSTs meanwhile) */
  podCleanupDelayMs?: number;
  /** default readiness probe period when the pod says none (ms) */
  defaultProbePeriodMs?: number;
}

interface PodRt {
  key: string; uid: string; name: string; namespace: string;
  ip: string; netns: string; veth: string; cg: PodCgroup;
  proc: ChildProcess | null; pid: number | null; exited: boolean; exitCode: number | null; exitSignal: string | null;
  exitPromise: Promise<void>;
  ready: boolean; terminating: boolean; probeTimer: NodeJS.Timeout | null; gone: boolean;
  log: WriteStream;
}

export class Kubelet {
  readonly events: KubeletEvent[] = [];
  private pods = new Map<string, PodRt>();
  private abort = new AbortController();
  private nextIp = 2;
  private runs: Promise<void>[] = [];
  private cgRoot = cgroup2Root();
  private tag = randomBytes(2).toString('hex');

  constructor(readonly o: KubeletOptions) {}

  private emit(pod: PodRt | { key: string; uid: string; ip: string | null }, what: string, detail?: Record<string, unknown>, ts = nowNs()) {
    const e: KubeletEvent = { ts_ns: ts, pod: pod.key, uid: pod.uid, ip: pod.ip, what, ...(detail ? { detail } : {}) };
    this.events.push(e);
  }

  async start(): Promise<void> {
    await new Promise<void>((resolve) => {
      this.runs.push(informer(this.o.client, '/api/v1/pods', (t, o) => { void this.onPod(t, o); }, this.abort.signal, resolve));
    });
  }

  private async onPod(type: string, pod: KObj): Promise<void> {
    const ns = pod.metadata.namespace ?? 'default';
    const key = `${ns}/${pod.metadata.name}`;
    const nodeName = pod.spec?.nodeName as string | undefined;
    if (nodeName && nodeName !== this.o.nodeName) return;
    const rt = this.pods.get(key);
    if (type === 'DELETED') {
      if (rt && rt.uid === pod.metadata.uid && !rt.gone) { rt.gone = true; await this.kill(rt, 'pod deleted from the API'); }
      return;
    }
    // not bound yet: the control plane's scheduler binds it, and its update comes back here
    if (!nodeName) return;
    if (!rt) {
      if (pod.metadata.deletionTimestamp) {
        await this.o.client.req('DELETE', `/api/v1/namespaces/${ns}/pods/${pod.metadata.name}?gracePeriodSeconds=0`, { apiVersion: 'v1', kind: 'DeleteOptions', gracePeriodSeconds: 0 }).catch(() => undefined);
        return;
      }
      if (pod.status?.phase === 'Succeeded' || pod.status?.phase === 'Failed') return;
      this.startPod(pod);
      return;
    }
    if (pod.metadata.deletionTimestamp && !rt.terminating) await this.terminate(rt, pod);
  }

  private startPod(pod: KObj): void {
    const ns = pod.metadata.namespace ?? 'default';
    const key = `${ns}/${pod.metadata.name}`;
    const uid = pod.metadata.uid ?? randomBytes(8).toString('hex');
    const n = this.nextIp++;
    if (n > 254) throw new Error('lab node out of pod IPs');
    const ip = `${POD_SUBNET}.${n}`;
    const netns = `${this.o.node.prefix}-pod${n}`;
    const veth = `v${this.o.node.prefix.slice(3, 9)}p${n}`;
    const cg = podCgroupPaths(this.cgRoot, uid);
    const c = pod.spec?.containers?.[0] ?? {};
    const args: string[] = (c.args ?? []).map(String);
    const port = Number(c.ports?.[0]?.containerPort ?? 8080);
    const log = createWriteStream(join(this.o.logDir, `${pod.metadata.name}.log`));
    let resolveExit!: () => void;
    const rt: PodRt = {
      key, uid, name: pod.metadata.name, namespace: ns, ip, netns, veth, cg, proc: null, pid: null,
      exited: false, exitCode: null, exitSignal: null, exitPromise: new Promise<void>((r) => { resolveExit = r; }),
      ready: false, terminating: false, probeTimer: null, gone: false, log,
    };
    this.pods.set(key, rt);
    this.o.state.netns(netns);
    this.o.state.cgroup(relCgroup(this.cgRoot, cg.podDir), relCgroup(this.cgRoot, cg.scopeDir));
    createPodNet(this.o.node, netns, ip, veth);
    createPodCgroup(cg);
    // the shell puts itself in the pod's cgroup, then execs into the netns and the backend: one PID
    const script = `echo $$ > '${join(cg.scopeDir, 'cgroup.procs')}' && exec ip netns exec '${netns}' node '${this.o.backendPath}' "$@"`;
    const proc = spawn('sh', ['-c', script, 'sh', '--port', String(port), '--name', pod.metadata.name, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    rt.proc = proc; rt.pid = proc.pid ?? null;
    if (rt.pid) this.o.state.pid(rt.pid);
    this.emit(rt, 'container-started', { pid: rt.pid, netns, cgroup: cg.scopeDir, containerId: cg.containerId });
    proc.stdout!.on('data', (d: Buffer) => log.write(d));
    createInterface({ input: proc.stdout! }).on('line', (line) => {
      try {
        const j = JSON.parse(line);
        if (j && typeof j.ev === 'string') this.emit(rt, `backend:${j.ev}`, j, Number(j.ts_ns));
      } catch { /* not ours */ }
    });
    proc.stderr!.on('data', (d: Buffer) => log.write(d));
    proc.on('exit', (code, signal) => {
      rt.exited = true; rt.exitCode = code; rt.exitSignal = signal;
      this.emit(rt, 'container-exited', { code, signal });
      resolveExit();
    });
    void this.patchStatus(rt, pod, false);
    const probe = c.readinessProbe?.httpGet ?? c.readinessProbe?.tcpSocket;
    if (probe) {
      const period = Number(c.readinessProbe.periodSeconds ?? 0) * 1000 || this.o.defaultProbePeriodMs || 1000;
      const path = probe.path ?? '/';
      const pport = Number(probe.port ?? port);
      const tcp = !c.readinessProbe.httpGet;
      const tick = async () => {
        if (rt.terminating || rt.exited || this.abort.signal.aborted) return;
        let ok = false;
        try {
          if (tcp) ok = await tcpConnects(ip, pport, Math.min(period, 1000));
          else {
            const r = await fetch(`http://${ip}:${pport}${path}`, { signal: AbortSignal.timeout(Math.min(period, 1000)) });
            ok = r.status >= 200 && r.status < 400;
            await r.text();
          }
        } catch { ok = false; }
        if (ok !== rt.ready && !rt.terminating) {
          rt.ready = ok;
          this.emit(rt, ok ? 'probe-ready' : 'probe-not-ready');
          await this.patchStatus(rt, pod, ok);
        }
        if (!rt.terminating && !rt.exited) rt.probeTimer = setTimeout(() => void tick(), period);
      };
      rt.probeTimer = setTimeout(() => void tick(), Number(c.readinessProbe.initialDelaySeconds ?? 0) * 1000 || 200);
    } else {
      rt.ready = true;
      this.emit(rt, 'ready-without-probe');
      void this.patchStatus(rt, pod, true);
    }
  }

  private async patchStatus(rt: PodRt, pod: KObj, ready: boolean, phase = 'Running', terminated?: { exitCode: number; signal?: string | null }): Promise<void> {
    const t = new Date().toISOString().replace(/\.\d+Z$/, 'Z');
    const c = pod.spec?.containers?.[0] ?? {};
    const cond = (type: string, s: boolean) => ({ type, status: s ? 'True' : 'False', lastProbeTime: null, lastTransitionTime: t });
    const status = {
      phase, podIP: rt.ip, podIPs: [{ ip: rt.ip }], hostIP: this.o.node.bridgeIp, hostIPs: [{ ip: this.o.node.bridgeIp }],
      startTime: pod.status?.startTime ?? t, qosClass: 'BestEffort',
      conditions: [cond('PodReadyToStartContainers', true), cond('Initialized', true), cond('Ready', ready), cond('ContainersReady', ready), cond('PodScheduled', true)],
      containerStatuses: [{
        name: c.name ?? 'app', image: c.image ?? 'rolltrace-lab/backend', imageID: '', containerID: `containerd://${rt.cg.containerId}`,
        ready, restartCount: 0, started: !terminated,
        state: terminated ? { terminated: { exitCode: terminated.exitCode, reason: terminated.signal ? 'Error' : 'Completed', signal: undefined, finishedAt: t } } : { running: { startedAt: t } },
      }],
    };
    const path = `/api/v1/namespaces/${rt.namespace}/pods/${rt.name}/status`;
    try {
      const r = await this.o.client.req('PATCH', path, { status }, 'application/merge-patch+json');
      if (r.status >= 300 && r.status !== 404) {
        const cur = await this.o.client.req('GET', `/api/v1/namespaces/${rt.namespace}/pods/${rt.name}`);
        if (cur.status < 300) await this.o.client.req('PUT', path, { ...cur.json, status });
      }
    } catch { /* API gone: teardown in progress */ }
  }

  private async terminate(rt: PodRt, pod: KObj): Promise<void> {
    rt.terminating = true;
    if (rt.probeTimer) clearTimeout(rt.probeTimer);
    const start = Date.now();
    const graceS = Number(pod.metadata.deletionGracePeriodSeconds ?? pod.spec?.terminationGracePeriodSeconds ?? 30);
    const deadline = start + graceS * 1000;
    this.emit(rt, 'deletion-seen', { deletionTimestamp: pod.metadata.deletionTimestamp, graceSeconds: graceS });
    const c = pod.spec?.containers?.[0] ?? {};
    const preStop = c.lifecycle?.preStop;
    const cmd: string[] | undefined = preStop?.exec?.command ?? (preStop?.sleep?.seconds != null ? ['sleep', String(preStop.sleep.seconds)] : undefined);
    if (cmd?.length && !rt.exited) {
      this.emit(rt, 'prestop-start', { command: cmd });
      const pre = spawn('ip', ['netns', 'exec', rt.netns, ...cmd.map(String)], { stdio: 'ignore' });
      if (pre.pid) this.o.state.pid(pre.pid);
      const done = new Promise<void>((r) => pre.on('exit', () => r()));
      await Promise.race([done, sleep(Math.max(0, deadline - Date.now()))]);
      try { pre.kill('SIGKILL'); } catch { /* done */ }
      this.emit(rt, 'prestop-end');
    }
    let killed = false;
    if (!rt.exited && rt.pid) {
      const ts = nowNs();
      try { process.kill(rt.pid, 'SIGTERM'); } catch { /* gone */ }
      this.emit(rt, 'sigterm-sent', { pid: rt.pid }, ts);
      await Promise.race([rt.exitPromise, sleep(Math.max(0, deadline - Date.now()))]);
      if (!rt.exited && pidAlive(rt.pid)) {
        const kts = nowNs();
        try { process.kill(rt.pid, 'SIGKILL'); } catch { /* gone */ }
        killed = true;
        this.emit(rt, 'sigkill-sent', { pid: rt.pid }, kts);
        await Promise.race([rt.exitPromise, sleep(2000)]);
      }
    }
    await this.patchStatus(rt, pod, false, killed || (rt.exitCode ?? 0) !== 0 ? 'Failed' : 'Succeeded', { exitCode: killed ? 137 : rt.exitCode ?? 0, signal: rt.exitSignal });
    await sleep(this.o.podCleanupDelayMs ?? 1000);
    if (rt.gone) return;
    rt.gone = true;
    this.teardown(rt);
    const r = await this.o.client.req('DELETE', `/api/v1/namespaces/${rt.namespace}/pods/${rt.name}?gracePeriodSeconds=0`,
      { apiVersion: 'v1', kind: 'DeleteOptions', gracePeriodSeconds: 0, preconditions: { uid: rt.uid } }).catch(() => null);
    this.emit(rt, 'pod-deleted', { status: r?.status ?? null, killed });
    this.pods.delete(rt.key);
  }

  private async kill(rt: PodRt, why: string): Promise<void> {
    rt.terminating = true;
    if (rt.probeTimer) clearTimeout(rt.probeTimer);
    if (!rt.exited && rt.pid) { try { process.kill(rt.pid, 'SIGKILL'); } catch { /* gone */ } await Promise.race([rt.exitPromise, sleep(2000)]); }
    this.emit(rt, 'killed', { why });
    this.teardown(rt);
    this.pods.delete(rt.key);
  }

  private teardown(rt: PodRt): void {
    deleteNetns(rt.netns);
    removePodCgroup(rt.cg);
    rt.log.end();
    this.emit(rt, 'sandbox-removed');
  }

  /** Stop watching and remove every pod (kill, netns, cgroup), without touching the API. */
  async stop(): Promise<void> {
    this.abort.abort();
    for (const rt of [...this.pods.values()]) await this.kill(rt, 'kubelet stopping');
    await Promise.allSettled(this.runs);
  }
}

/** A tcpSocket probe: does a TCP connection to ip:port open within timeoutMs? */
function tcpConnects(ip: string, port: number, timeoutMs: number): Promise<boolean> {
  return new Promise((resolve) => {
    const sock = connect({ host: ip, port });
    const done = (ok: boolean) => { sock.destroy(); resolve(ok); };
    sock.setTimeout(timeoutMs, () => done(false));
    sock.once('connect', () => done(true));
    sock.once('error', () => done(false));
  });
}
