/**
 * The real node: etcd, kube-apiserver, kube-controller-manager, kube-scheduler, containerd, kubelet and
 * kube-proxy, all inside the node network namespace `<prefix>-node` (entered with `nsenter --net=`, which
 * keeps the host's /sys and its cgroup mounts, unlike `ip netns exec`), all in the cgroup subtree
 * /<prefix>/lab of every hierarchy (kubelet's pods go under /<prefix>/kubepods). A client namespace
 * `<prefix>-client` is linked to the node's eth0 (NodePort and external paths). Nothing of the host's
 * network or firewall changes.
 *
 * Reaching the API server from the host: the node netns's 127.0.0.1:6443 is not the host's. A relay
 * carries it over a unix socket (unix sockets cross network namespaces): `socat` inside the node netns
 * listens on /run/rolltrace-real/<prefix>/apiserver.sock and connects to 127.0.0.1:6443; `socat` on the
 * host listens on 127.0.0.1:<free port> and connects to that socket. TLS is end to end (the API server's
 * certificate names 127.0.0.1), so the host kubeconfig is an ordinary one.
 */
import { spawn } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { run } from '../sys.js';
import {
  apiserverArgs, certKubeconfig, cniConflist, containerdToml, controllerManagerArgs, etcdArgs, KUBELET_SYSCTLS, kubeletArgs, kubeletConfig,
  kubeProxyArgs, kubeProxyConfig, NET, paths, schedulerArgs, type ProxyMode,
} from './config.js';
import { buildApp, buildKubernetes, k8sBin, missingComponents, type K8sComponent } from './build.js';
import { containerdBin, containerdDir, ensureContainerd } from './runtime.js';
import { cgroupProcsFiles, makeCgroup, RealState } from './state.js';
import { makePki, readPem } from './pki.js';
import { buildImageArchive } from './images.js';

export interface RealNode {
  prefix: string;
  nodeNs: string;
  clientNs: string;
  /** for the host (through the relay) */
  kubeconfig: string;
  /** for processes inside the node netns */
  kubeconfigNode: string;
  hostPort: number;
  logs: string;
  mode: ProxyMode;
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

async function waitFor(what: string, timeoutMs: number, check: () => boolean | Promise<boolean>, logHint?: string): Promise<void> {
  const t0 = Date.now();
  for (;;) {
    if (await check()) return;
    if (Date.now() - t0 > timeoutMs) {
      let tail = '';
      if (logHint && existsSync(logHint)) tail = ': ' + readFileSync(logHint, 'utf8').trim().split('\n').slice(-5).join(' | ');
      throw new Error(`real node: ${what} not ready after ${Math.round(timeoutMs / 1000)} s${tail}`);
    }
    await sleep(250);
  }
}

function freePort(): Promise<number> {
  return new Promise((res, rej) => {
    const s = createServer();
    s.on('error', rej);
    s.listen(0, '127.0.0.1', () => { const a = s.address(); const p = typeof a === 'object' && a ? a.port : 0; s.close(() => res(p)); });
  });
}

export class NodeProcs {
  readonly p;
  constructor(readonly st: RealState, readonly nodeNs: string) { this.p = paths(st.layout); }

  /** argv to run a command inside the node netns */
  inNode(cmd: string, args: string[]): string[] { return ['nsenter', `--net=/run/netns/${this.nodeNs}`, '--', cmd, ...args]; }

  /**
   * Start a daemon: joins /<prefix>/lab in every cgroup hierarchy, then execs (nsenter execs too: one
   * PID from start to end), detached from this process so that `lab up` can return.
   */
  daemon(name: string, cmd: string, args: string[], opts: { inNode?: boolean; env?: NodeJS.ProcessEnv } = {}): number {
    const log = openSync(join(this.p.logs, `${name}.log`), 'a');
    const procs = cgroupProcsFiles(`${this.st.prefix}/lab`);
    const script = `for f in ${procs.map((f) => `'${f}'`).join(' ')}; do echo $$ > "$f" || exit 97; done; exec "$@"`;
    const argv = opts.inNode === false ? [cmd, ...args] : this.inNode(cmd, args);
    const c = spawn('sh', ['-c', script, 'sh', ...argv], { detached: true, stdio: ['ignore', log, log], env: opts.env ?? process.env });
    closeSync(log);
    if (!c.pid) throw new Error(`real node: could not start ${name}`);
    this.st.pid(c.pid);
    c.unref();
    return c.pid;
  }

  /** Run to completion inside the node netns. */
  exec(cmd: string, args: string[], opts: { allowFail?: boolean; input?: string } = {}) {
    const [c, ...a] = this.inNode(cmd, args);
    return run(c!, a, opts);
  }

  kubectl(args: string[], opts: { allowFail?: boolean; input?: string } = {}) {
    return this.exec(k8sBin('kubectl'), ['--kubeconfig', this.p.kubeconfigNode, ...args], opts);
  }

  curlOk(url: string): boolean {
    const k = this.p.pki;
    const r = this.exec('curl', ['-s', '-o', '/dev/null', '-w', '%{http_code}', '--max-time', '2', '--cacert', join(k, 'ca.crt'),
      '--cert', join(k, 'admin.crt'), '--key', join(k, 'admin.key'), url], { allowFail: true });
    return r.stdout.trim() === '200';
  }
}

function makeNetns(st: RealState, prefix: string): { nodeNs: string; clientNs: string } {
  const nodeNs = `${prefix}-node`, clientNs = `${prefix}-client`;
  st.netns(nodeNs);
  run('ip', ['netns', 'add', nodeNs]);
  st.netns(clientNs);
  run('ip', ['netns', 'add', clientNs]);
  const n = (args: string[]) => run('ip', ['-n', nodeNs, ...args]);
  const c = (args: string[]) => run('ip', ['-n', clientNs, ...args]);
  n(['link', 'set', 'lo', 'up']);
  n(['link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', 'cl0', 'netns', clientNs]);
  n(['addr', 'add', `${NET.nodeIp}/24`, 'dev', 'eth0']);
  n(['link', 'set', 'eth0', 'up']);
  c(['link', 'set', 'lo', 'up']);
  c(['addr', 'add', `${NET.clientIp}/24`, 'dev', 'cl0']);
  c(['link', 'set', 'cl0', 'up']);
  // a default route (into the client netns, which routes nowhere): kubelet and kube-proxy want one, and
  // the node's own connections to a service VIP need a route before the NAT hook rewrites them
  n(['route', 'add', 'default', 'via', NET.clientIp]);
  c(['route', 'add', '10.96.0.0/16', 'via', NET.nodeIp]);
  run('ip', ['netns', 'exec', nodeNs, 'sysctl', '-q', '-w', 'net.ipv4.ip_forward=1']);
  return { nodeNs, clientNs };
}

/** Everything the real node needs that is built or fetched once per machine (cached; fast when present). */
export async function prepareReal(say: (s: string) => void): Promise<{ app: string }> {
  const missing = ['etcd', 'runc', 'socat', 'nsenter', 'openssl', 'curl', 'nft', 'iptables-restore', 'conntrack'].filter((c) => run('sh', ['-c', `command -v ${c}`], { allowFail: true }).code !== 0);
  if (missing.length) throw new Error(`the real node needs ${missing.join(', ')} (run \`npm run setup\` as root: scripts/setup.mjs installs them)`);
  for (const f of ['/usr/lib/cni/bridge', '/usr/lib/cni/host-local', '/usr/lib/cni/loopback', '/bin/busybox']) {
    if (!existsSync(f)) throw new Error(`the real node needs ${f} (containernetworking-plugins, busybox-static: run \`npm run setup\` as root)`);
  }
  if (missingComponents().length) await buildKubernetes({ say });
  ensureContainerd(say);
  return { app: await buildApp(say) };
}

/** Bring a real node up; returns when the node is Ready. The processes outlive this call. */
export async function startRealNode(opts: { prefix: string; mode: ProxyMode; say: (s: string) => void }): Promise<RealNode> {
  const { prefix, mode, say } = opts;
  const { app } = await prepareReal(say);
  const st = new RealState(prefix);
  const l = st.layout;
  const p = paths(l);
  st.dir(l.data);
  st.info('mode', mode);
  for (const d of [p.logs, p.cniConfDir, p.podLogs, p.kubeletRoot, p.containerdRoot, p.images]) mkdirSync(d, { recursive: true });
  const t0 = Date.now();
  const lap = (what: string) => say(`${what} (${((Date.now() - t0) / 1000).toFixed(1)} s)`);

  // cgroups first: everything started below lives under /<prefix>
  st.cgroup(prefix);
  makeCgroup(`${prefix}/lab`);
  const { nodeNs, clientNs } = makeNetns(st, prefix);
  const np = new NodeProcs(st, nodeNs);

  makePki(p.pki);
  const admin = readPem(p.pki, 'admin');
  writeFileSync(p.kubeconfigNode, certKubeconfig(`https://127.0.0.1:${NET.apiPort}`, admin.ca, admin.cert, admin.key), { mode: 0o600 });
  writeFileSync(p.containerdConfig, containerdToml(l));
  writeFileSync(join(p.cniConfDir, '10-rolltrace.conflist'), cniConflist(l));
  writeFileSync(p.kubeletConfig, JSON.stringify(kubeletConfig(l), null, 2));
  writeFileSync(p.kubeProxyConfig, JSON.stringify(kubeProxyConfig(l, mode), null, 2));
  writeFileSync(p.resolvConf, 'nameserver 127.0.0.1\noptions ndots:1\n');
  lap('namespaces, cgroups, certificates and configs ready');

  const bin = (c: K8sComponent) => k8sBin(c);
  np.daemon('etcd', 'etcd', etcdArgs(l));
  await waitFor('etcd', 20000, () => np.exec('curl', ['-s', '--max-time', '1', `http://127.0.0.1:${NET.etcdPort}/health`], { allowFail: true }).stdout.includes('true'), join(p.logs, 'etcd.log'));
  np.daemon('kube-apiserver', bin('kube-apiserver'), apiserverArgs(l));
  // containerd starts meanwhile (the image import waits for it)
  const env = { ...process.env, PATH: `${join(containerdDir(), 'usr/bin')}:${process.env.PATH}` };
  np.daemon('containerd', containerdBin('containerd'), ['--config', p.containerdConfig], { env });
  await waitFor('kube-apiserver', 90000, () => np.curlOk(`https://127.0.0.1:${NET.apiPort}/readyz`), join(p.logs, 'kube-apiserver.log'));
  lap('etcd and kube-apiserver ready');
  np.daemon('kube-controller-manager', bin('kube-controller-manager'), controllerManagerArgs(l));
  np.daemon('kube-scheduler', bin('kube-scheduler'), schedulerArgs(l));

  // images: the app and the pause image, never pulled
  await waitFor('containerd', 30000, () => existsSync(p.containerdSock), join(p.logs, 'containerd.log'));
  const archive = buildImageArchive(p.images, app);
  run(containerdBin('ctr'), ['--address', p.containerdSock, '-n', 'k8s.io', 'images', 'import', '--no-unpack=false', archive]);
  lap('images imported');

  // kubelet writes these at start; `lab down` puts them back
  for (const k of KUBELET_SYSCTLS) {
    try { st.sysctl(k, readFileSync(join('/proc/sys', k), 'utf8').trim()); } catch { /* absent */ }
  }
  np.daemon('kubelet', bin('kubelet'), kubeletArgs(l), { env });
  np.daemon('kube-proxy', bin('kube-proxy'), kubeProxyArgs(l));

  // the relay for the host
  const hostPort = await freePort();
  np.daemon('relay-node', 'socat', [`UNIX-LISTEN:${p.apiSock},fork,mode=600`, `TCP:127.0.0.1:${NET.apiPort}`]);
  await waitFor('relay socket', 10000, () => existsSync(p.apiSock));
  np.daemon('relay-host', 'socat', [`TCP-LISTEN:${hostPort},bind=127.0.0.1,fork,reuseaddr`, `UNIX-CONNECT:${p.apiSock}`], { inNode: false });
  writeFileSync(p.kubeconfigHost, certKubeconfig(`https://127.0.0.1:${hostPort}`, admin.ca, admin.cert, admin.key), { mode: 0o600 });

  await waitFor('node Ready', 120000, () => {
    const r = np.kubectl(['get', 'node', 'lab-node', '-o', 'jsonpath={.status.conditions[?(@.type=="Ready")].status}'], { allowFail: true });
    return r.stdout.trim() === 'True';
  }, join(p.logs, 'kubelet.log'));
  lap('node Ready');
  return { prefix, nodeNs, clientNs, kubeconfig: p.kubeconfigHost, kubeconfigNode: p.kubeconfigNode, hostPort, logs: p.logs, mode };
}
