/**
 * `lab run --real --patch JSON|FILE`: the fix applied on the real node the way a user applies it — the
 * real kubectl, `kubectl patch deployment web --type strategic -p …` against the real API server — then
 * that rollout completes before the recorded one starts: the Deployment rolled out, no old pod left (a
 * preStop keeps a terminating pod for seconds after `rollout status` returns) and kube-proxy's own rules
 * (its nftables table or its iptables nat chains) DNAT to every new pod and to no old one.
 */
import { InputError } from '../../schemas/errors.js';
import { BACKEND_PORT } from '../scenarios/index.js';
import { sleep } from '../sys.js';
import type { NodeProcs } from './node.js';

interface PodRow { name: string; ip: string; terminating: boolean }

function pods(np: NodeProcs): PodRow[] {
  const r = np.kubectl(['get', 'pods', '-n', 'default', '-l', 'app=web', '-o',
    'jsonpath={range .items[*]}{.metadata.name} {.status.podIP} {.metadata.deletionTimestamp}{"\\n"}{end}'], { allowFail: true });
  if (r.code !== 0) return [];
  return r.stdout.split('\n').filter((l) => l.trim()).map((l) => {
    const [name = '', ip = '', del = ''] = l.trim().split(/\s+/);
    return { name, ip, terminating: !!del };
  });
}

/** The endpoints kube-proxy's rules DNAT to, from its own tables (either mode). */
export function dnatTargets(rules: string): Set<string> {
  const out = new Set<string>();
  for (const m of rules.matchAll(/(?:dnat(?: ip)? to|--to-destination) (\d+\.\d+\.\d+\.\d+:\d+)/g)) out.add(m[1]!);
  return out;
}

function kubeProxyRules(np: NodeProcs): string {
  return [np.exec('nft', ['list', 'table', 'ip', 'kube-proxy'], { allowFail: true }).stdout,
    np.exec('iptables-save', ['-t', 'nat'], { allowFail: true }).stdout].join('\n');
}

/**
 * Apply the patch and wait for its rollout (old pods gone, kube-proxy routing only the new ones).
 * A patch the API server rejects is the user's input: InputError (one line, exit 2).
 */
export async function applyRealPatch(np: NodeProcs, patch: Record<string, unknown>, replicas: number, say: (kind: string, o?: Record<string, unknown>) => void): Promise<void> {
  const before = new Set(pods(np).map((p) => p.ip).filter(Boolean));
  const r = np.kubectl(['patch', 'deployment', 'web', '-n', 'default', '--type', 'strategic', '-p', JSON.stringify(patch)], { allowFail: true });
  if (r.code !== 0) {
    const line = (r.stderr.trim() || r.stdout.trim()).split('\n')[0]!.replace(/^error:\s*/i, '');
    throw new InputError(`--patch: the API server rejected it: ${line}`);
  }
  say('patched', { patch, kubectl: r.stdout.trim() });
  const st = np.kubectl(['rollout', 'status', 'deploy/web', '-n', 'default', '--timeout=120s'], { allowFail: true });
  if (st.code !== 0) throw new Error(`real node: the patched Deployment did not roll out: ${st.stderr.trim() || st.stdout.trim()}`);
  const t0 = Date.now();
  for (;;) {
    const now = pods(np);
    const live = now.filter((p) => !p.terminating && p.ip);
    const dnat = dnatTargets(kubeProxyRules(np));
    const oldRouted = [...before].filter((ip) => !live.some((p) => p.ip === ip) && dnat.has(`${ip}:${BACKEND_PORT}`));
    if (now.length === replicas && live.length === replicas && live.every((p) => dnat.has(`${p.ip}:${BACKEND_PORT}`)) && !oldRouted.length) {
      say('patch-rolled-out', { pods: live.map((p) => p.name), seconds: Math.round((Date.now() - t0) / 100) / 10 });
      return;
    }
    if (Date.now() - t0 > 90_000) {
      throw new Error(`real node: 90 s after the patched rollout: ${now.length} pod(s) (${now.filter((p) => p.terminating).length} terminating), kube-proxy still routing to ${oldRouted.join(', ') || 'no old pod'}`);
    }
    await sleep(250);
  }
}
