/**
 * `kubectl rolltrace` arguments (pure; test/kubectl-plugin-args.test.ts). kubectl hands a plugin every
 * argument after its name untouched, so the plugin reads the kubectl flags it needs itself
 * (--kubeconfig, --context, -n/--namespace, in `--flag value` and `--flag=value` forms).
 *
 *   kubectl rolltrace record deploy/NAME [-n NS] [--restart] [--probe auto|off|URL] [--rate HZ]
 *        [--nodes N,..] [--out FILE] [--image REF] [--settle S] [--timeout S]
 *        [--recorder-namespace NS] [--service-account SA] [--kubeconfig P] [--context C]
 *   kubectl rolltrace collect [--nodes N,..] [--out FILE] [--delete] [--image REF] ...
 */
import { InputError } from '../../schemas/errors.js';

export interface PluginOptions {
  command: 'record' | 'collect';
  /** collect: remove the bundles from the nodes once copied */
  delete: boolean;
  deployment: string;
  namespace: string | null;
  restart: boolean;
  /** 'auto': the Service selecting the Deployment's pods; 'off'; or a URL */
  probe: string;
  rate: number;
  nodes: string[];
  out: string | null;
  image: string | null;
  settle: number;
  /** with --restart: seconds recorded before the restart */
  preRoll: number;
  timeout: number;
  recorderNamespace: string;
  serviceAccount: string;
  kubeconfig: string | null;
  context: string | null;
}

export const USAGE = [
  'usage: kubectl rolltrace record deploy/NAME [-n NS] [--restart] [--probe auto|off|URL] [--rate HZ]',
  '         [--nodes N,..] [--out FILE] [--image REF] [--settle S] [--timeout S]',
  '         [--recorder-namespace NS] [--service-account SA] [--kubeconfig PATH] [--context NAME]',
  '       kubectl rolltrace collect [--nodes N,..] [--out FILE] [--delete] [--image REF] [--recorder-namespace NS]',
  '',
  'Starts a rolltrace recorder pod on every node that hosts the Deployment\'s pods (or the --nodes named),',
  'waits until each records, restarts the rollout (--restart; otherwise waits for one to happen), waits for',
  'it to complete plus --settle seconds, copies the bundles back, merges them into --out, prints the',
  'analysis and removes its pods (also on Ctrl-C and on failure). Exit 0: no failure; 1: the analysis',
  'found failures; 2: usage or cluster error (one line). See docs/kubectl-plugin.md.',
  '`collect` copies the newest closed bundle of every node (or --nodes) from /var/lib/rolltrace, where',
  'deploy/daemonset.yaml and deploy/job.yaml leave them, merges them into --out and analyzes it.',
  '',
  '  -n, --namespace NS          the Deployment\'s namespace (default: the kubeconfig context\'s, else default)',
  '  --restart                   restart the Deployment like `kubectl rollout restart` once every node records',
  '  --probe auto|off|URL        probe requests from every recording node (auto: the Service that selects the',
  '                              Deployment\'s pods, at its ClusterIP; default auto)',
  '  --rate HZ                   probe requests per second (default 20)',
  '  --nodes N,..                record on these nodes instead of those hosting the pods',
  '  --out FILE                  merged bundle (default rolltrace-NAME-<UTC time>.rtb)',
  '  --image REF                 recorder image (default rolltrace:VERSION, as `npm run image` names it)',
  '  --settle S                  seconds recorded after the rollout completed (default 5)',
  '  --pre-roll S                with --restart: seconds recorded before the restart (default 2), so requests in',
  '                              flight at a SIGKILL were seen from their start',
  '  --timeout S                 give up waiting for the rollout after S seconds (default 600)',
  '  --recorder-namespace NS     where the recorder pods run (default rolltrace, from deploy/rbac.yaml)',
  '  --service-account SA        their ServiceAccount (default rolltrace, from deploy/rbac.yaml)',
  '  --delete                    collect: remove the copied bundles from the nodes',
  '  --kubeconfig PATH, --context NAME   as for kubectl (default: $KUBECONFIG, ~/.kube/config)',
].join('\n');

const VALUE_FLAGS: Record<string, keyof PluginOptions> = {
  '-n': 'namespace', '--namespace': 'namespace', '--probe': 'probe', '--rate': 'rate', '--nodes': 'nodes', '--out': 'out',
  '--image': 'image', '--settle': 'settle', '--pre-roll': 'preRoll', '--timeout': 'timeout', '--recorder-namespace': 'recorderNamespace',
  '--service-account': 'serviceAccount', '--kubeconfig': 'kubeconfig', '--context': 'context',
};

/** A Kubernetes object name (DNS-1123 subdomain) or label value used as one. */
const NAME_RE = /^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$/;

function positiveNumber(flag: string, v: string, allowZero: boolean): number {
  const n = Number(v);
  if (v.trim() === '' || !Number.isFinite(n) || n < 0 || (!allowZero && n === 0)) throw new InputError(`${flag} ${v}: expected a ${allowZero ? 'non-negative' : 'positive'} number of ${flag === '--rate' ? 'requests per second' : 'seconds'}`);
  return n;
}

/** `deploy/web`, `deployment/web`, `deployments.apps/web` -> web. */
export function parseDeploymentRef(ref: string): string {
  const m = /^(deploy|deployment|deployments|deployment\.apps|deployments\.apps)\/(.+)$/.exec(ref);
  if (!m) throw new InputError(`${ref}: expected deploy/NAME (only Deployments are recorded)`);
  if (!NAME_RE.test(m[2]!)) throw new InputError(`${ref}: "${m[2]}" is not a valid Deployment name`);
  return m[2]!;
}

/** argv after the plugin name -> options, or 'help'. Throws InputError (one line) on bad usage. */
export function parsePluginArgs(argv: string[]): PluginOptions | 'help' {
  if (argv.length === 0 || argv[0] === '-h' || argv[0] === '--help' || argv[0] === 'help') return 'help';
  const [cmd, ...rest] = argv;
  if (cmd !== 'record' && cmd !== 'collect') throw new InputError(`unknown command "${cmd}" (kubectl rolltrace record deploy/NAME ... | collect; --help)`);
  const o: PluginOptions = {
    command: cmd, delete: false, deployment: '', namespace: null, restart: false, probe: 'auto', rate: 20, nodes: [], out: null, image: null,
    settle: 5, preRoll: 2, timeout: 600, recorderNamespace: 'rolltrace', serviceAccount: 'rolltrace', kubeconfig: null, context: null,
  };
  const positional: string[] = [];
  for (let i = 0; i < rest.length; i++) {
    const a = rest[i]!;
    if (a === '-h' || a === '--help') return 'help';
    if (a === '--restart' && cmd === 'record') { o.restart = true; continue; }
    if (a === '--delete' && cmd === 'collect') { o.delete = true; continue; }
    if (a === '--') { positional.push(...rest.slice(i + 1)); break; }
    if (!a.startsWith('-')) { positional.push(a); continue; }
    const eq = a.indexOf('=');
    const flag = a.startsWith('--') && eq > 0 ? a.slice(0, eq) : a;
    const key = VALUE_FLAGS[flag] ?? (a.startsWith('-n') && a.length > 2 && !a.startsWith('--') ? 'namespace' : undefined);
    if (!key) throw new InputError(`unknown option ${flag} (kubectl rolltrace --help)`);
    let v: string | undefined;
    if (flag !== a && a.startsWith('--')) v = a.slice(eq + 1);
    else if (flag === a && a.startsWith('-n') && a.length > 2 && !a.startsWith('--')) v = a.slice(2); // -nshop
    else { v = rest[++i]; if (v === undefined) throw new InputError(`${flag} needs a value`); }
    switch (key) {
      case 'rate': o.rate = positiveNumber(flag, v, false); break;
      case 'settle': o.settle = positiveNumber(flag, v, true); break;
      case 'preRoll': o.preRoll = positiveNumber(flag, v, true); break;
      case 'timeout': o.timeout = positiveNumber(flag, v, false); break;
      case 'nodes': {
        const nodes = v.split(',').map((s) => s.trim()).filter(Boolean);
        if (!nodes.length) throw new InputError(`--nodes ${JSON.stringify(v)}: no node named`);
        for (const n of nodes) if (!NAME_RE.test(n)) throw new InputError(`--nodes: "${n}" is not a valid node name`);
        o.nodes = [...new Set([...o.nodes, ...nodes])];
        break;
      }
      case 'probe': {
        if (v !== 'auto' && v !== 'off') {
          let u: URL;
          try { u = new URL(v); } catch { throw new InputError(`--probe ${v}: expected auto, off or an http(s) URL`); }
          if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new InputError(`--probe ${v}: expected auto, off or an http(s) URL`);
        }
        o.probe = v;
        break;
      }
      case 'namespace': case 'recorderNamespace': case 'serviceAccount':
        if (!NAME_RE.test(v)) throw new InputError(`${flag} ${v}: not a valid name`);
        o[key] = v;
        break;
      case 'out': case 'image': case 'kubeconfig': case 'context':
        if (!v) throw new InputError(`${flag} needs a value`);
        o[key] = v;
        break;
      default: break;
    }
  }
  if (cmd === 'collect') {
    if (positional.length) throw new InputError(`collect takes no ${positional[0]} (it collects from every node, or --nodes)`);
    return o;
  }
  if (positional.length === 0) throw new InputError('record needs the Deployment: kubectl rolltrace record deploy/NAME');
  if (positional.length > 1) throw new InputError(`one Deployment at a time: got ${positional.join(' ')}`);
  o.deployment = parseDeploymentRef(positional[0]!);
  return o;
}
