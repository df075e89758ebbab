/**
 * `rolltrace lab build --real`, `lab up --real`, `lab down [--real]` and `lab run --real`: the real node
 * (lab/real/node.ts) from the host side. `lab up --real` leaves the node running with Deployment `web`
 * (2 replicas, the app closes its listener at SIGTERM) behind Service `web` in `default`, and prints
 * `KUBECONFIG=<path>` on a line of its own.
 */
import { randomBytes } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { InputError } from '../../schemas/errors.js';
import { getScenario, SCENARIOS, SERVICE_PORT, VIP, type Scenario } from '../scenarios/index.js';
import { buildKubernetes, K8S_VERSION } from './build.js';
import { NET, parseProxyMode, paths, realLayout, type ProxyMode } from './config.js';
import { run } from '../sys.js';
import { NodeProcs, prepareReal, startRealNode, type RealNode } from './node.js';
import { containerdVersion, ensureContainerd } from './runtime.js';
import { cleanupRealLab, RealState, sweepRealLabs, type RealCleanup } from './state.js';
import { realManifests, type RealPreStop } from './workload.js';
import { importRolltraceImage } from './rolltrace-image.js';

const say = (s: string) => process.stderr.write(`[lab --real] ${s}\n`);

export const newRealPrefix = () => `rtr${randomBytes(3).toString('hex')}`;

function checkRoot(): void {
  if (process.getuid?.() !== 0) throw new InputError('the real node needs root (namespaces, cgroups, containerd)');
}

export async function runRealBuild(opts: { force?: boolean } = {}): Promise<number> {
  checkRoot();
  const r = await buildKubernetes({ say, force: opts.force });
  ensureContainerd(say);
  await prepareReal(say);
  process.stdout.write(r.cached
    ? `Kubernetes ${K8S_VERSION}: cached in ${r.binDir}\n`
    : `Kubernetes ${K8S_VERSION}: built ${r.built.join(', ')} in ${r.seconds} s into ${r.binDir}\n`);
  process.stdout.write(`containerd ${containerdVersion()} (Debian trixie package), etcd, runc, CNI plugins from Debian\n`);
  return 0;
}

export interface RealSession { node: RealNode; np: NodeProcs; stamps: string; scenario: Scenario }

/** A node with the scenario's Deployment and Service, rolled out. The caller owns cleanup. */
export async function realSession(opts: { prefix: string; scenario: Scenario; mode?: ProxyMode; preStop?: RealPreStop }): Promise<RealSession> {
  const node = await startRealNode({ prefix: opts.prefix, mode: opts.mode ?? opts.scenario.mode, say });
  const st = new RealState(opts.prefix);
  const np = new NodeProcs(st, node.nodeNs);
  const stamps = join(realLayout(opts.prefix).state, 'stamps');
  mkdirSync(stamps, { recursive: true });
  const manifests = join(realLayout(opts.prefix).state, 'web.json');
  writeFileSync(manifests, JSON.stringify({ apiVersion: 'v1', kind: 'List', items: realManifests(opts.scenario, stamps, opts.preStop) }, null, 2));
  // the API server admits pods only once the controller manager has made the default ServiceAccount
  const t0 = Date.now();
  while (np.kubectl(['get', 'serviceaccount', 'default'], { allowFail: true }).code !== 0) {
    if (Date.now() - t0 > 30000) throw new Error('real node: ServiceAccount default not created in 30 s');
    await new Promise((r) => setTimeout(r, 250));
  }
  np.kubectl(['apply', '-f', manifests]);
  const r = np.kubectl(['rollout', 'status', 'deploy/web', '--timeout=120s'], { allowFail: true });
  if (r.code !== 0) throw new Error(`real node: Deployment web did not roll out: ${r.stderr.trim() || r.stdout.trim()}`);
  // ready pods are not yet routed: wait for kube-proxy's rules (VIP from the node, NodePort from the client)
  const sc = opts.scenario;
  const routed = (ns: string, url: string) => run('nsenter', [`--net=/run/netns/${ns}`, '--', 'curl', '-s', '-o', '/dev/null', '-w', '%{http_code}', '--max-time', '1', url], { allowFail: true }).stdout === '200';
  for (const t1 = Date.now(); ;) {
    if (routed(node.nodeNs, `http://${VIP}:${SERVICE_PORT}/healthz`) && (!sc.nodePort || routed(node.clientNs, `http://${NET.nodeIp}:${sc.nodePort}/healthz`))) break;
    if (Date.now() - t1 > 30000) throw new Error('real node: Service web not routed by kube-proxy 30 s after the rollout');
    await new Promise((res) => setTimeout(res, 200));
  }
  say('Deployment web rolled out and routed');
  return { node, np, stamps, scenario: opts.scenario };
}

export async function runRealUp(opts: { scenario?: string; proxyMode?: string }): Promise<number> {
  const mode = parseProxyMode(opts.proxyMode);
  checkRoot();
  const sc = getScenario(opts.scenario ?? 'race');
  if (!sc) throw new InputError(`unknown scenario "${opts.scenario}" (one of: ${Object.keys(SCENARIOS).join(', ')})`);
  const prefix = newRealPrefix();
  try {
    const s = await realSession({ prefix, scenario: sc, mode });
    const p = paths(realLayout(prefix));
    // the rolltrace node image, for deploy/ and `kubectl rolltrace` (when `npm run image` has built it)
    const img = importRolltraceImage(prefix);
    process.stdout.write([
      `lab up --real: Kubernetes ${K8S_VERSION} node ${prefix} (kube-proxy ${s.node.mode} mode), Deployment web and Service web in default`,
      `KUBECONFIG=${s.node.kubeconfig}`,
      `  kubectl: KUBECONFIG=${s.node.kubeconfig} kubectl get nodes -o wide`,
      `  node netns: ${s.node.nodeNs} (enter with: nsenter --net=/run/netns/${s.node.nodeNs})`,
      `  component logs: ${s.node.logs}`,
      `  ${img.line}`,
      `  record with:`,
      `    nsenter --net=/run/netns/${s.node.nodeNs} node bin/rolltrace.mjs record --out web.rtb --kubeconfig ${p.kubeconfigNode} --deployment web --restart --probe http://10.96.0.10/ --rate 20 --until-rollout-complete`,
      `  stop with: rolltrace lab down --real`,
      '',
    ].join('\n'));
    return 0;
  } catch (e) {
    say(`failed: ${(e as Error).message}; removing ${prefix}`);
    cleanupRealLab(prefix);
    throw e;
  }
}

export function describeCleanup(rs: RealCleanup[]): string {
  const sum = (f: (r: RealCleanup) => number) => rs.reduce((a, r) => a + f(r), 0);
  return `${rs.filter((r) => r.dirs.length || r.cgroups).length} real lab(s), ${sum((r) => r.netns.length)} netns, ${sum((r) => r.killed)} process(es), ${sum((r) => r.mounts)} mount(s), ${sum((r) => r.sysctls)} sysctl(s) restored`;
}

export function runRealDown(): number {
  checkRoot();
  process.stdout.write(`lab down --real: ${describeCleanup(sweepRealLabs())} removed\n`);
  return 0;
}
