/**
 * The walls `kubectl rolltrace` hits, as one line each (pure; tested on API answers captured from the
 * real node in fixtures/kubectl-plugin/): RBAC (a 403 naming user, verb, resource and namespace, or a
 * SelfSubjectAccessReview that says no), PodSecurity admission refusing the privileged recorder pod
 * (also a 403, "violates PodSecurity"), the recorder image absent on a node (ErrImageNeverPull,
 * ErrImagePull, ImagePullBackOff on the pod), credentials refused (401).
 */

export interface KubeStatus { kind?: string; message?: string; reason?: string; code?: number; details?: { name?: string; group?: string; kind?: string } }

/** One SelfSubjectAccessReview the plugin needs to pass. */
export interface AccessCheck { verb: string; resource: string; subresource?: string; group: string; namespace?: string; allowed?: boolean; reason?: string }

export const resourceName = (c: Pick<AccessCheck, 'resource' | 'subresource' | 'group'>) =>
  `${c.resource}${c.subresource ? `/${c.subresource}` : ''}${c.group ? `.${c.group}` : ''}`;

const canI = (c: AccessCheck) => `kubectl auth can-i ${c.verb} ${resourceName(c)}${c.namespace ? ` -n ${c.namespace}` : ''}`;

/** The denied checks of a batch, as one line (null when everything is allowed). */
export function accessDeniedLine(checks: AccessCheck[], who = 'you'): string | null {
  const denied = checks.filter((c) => c.allowed === false);
  if (!denied.length) return null;
  const byNs = new Map<string, string[]>();
  for (const c of denied) byNs.set(c.namespace ?? '', [...(byNs.get(c.namespace ?? '') ?? []), `${c.verb} ${resourceName(c)}`]);
  const what = [...byNs].map(([ns, v]) => `${v.join(', ')}${ns ? ` in namespace ${ns}` : ''}`);
  return `RBAC: ${who} cannot ${what.join('; ')} (\`${canI(denied[0]!)}\` says no); ask your cluster admin for these (docs/kubectl-plugin.md lists them)`;
}

const FORBIDDEN_RE = /User "([^"]*)" cannot (\S+) resource "([^"]+)"(?: in API group "([^"]*)")?(?: in the namespace "([^"]+)")?/;
const PODSEC_RE = /violates PodSecurity "([^"]+)": (.*)$/;

/** A 403 from the API: PodSecurity admission or RBAC; null when the body is neither. */
export function forbiddenLine(st: KubeStatus, ctx: { namespace?: string } = {}): string | null {
  const msg = st.message ?? '';
  const ps = PODSEC_RE.exec(msg);
  if (ps) {
    const ns = ctx.namespace ?? '?';
    const what = [...ps[2]!.matchAll(/(?:^|\), )([^(),]+?) \(/g)].map((x) => x[1]!);
    return `PodSecurity refuses the privileged recorder pod in namespace ${ns} (level ${ps[1]} forbids its ${what.length ? what.join(', ') : ps[2]}); `
      + `the recorder needs the privileged level: \`kubectl label ns ${ns} pod-security.kubernetes.io/enforce=privileged --overwrite\` (deploy/rbac.yaml's namespace has it) or --recorder-namespace NS`;
  }
  const m = FORBIDDEN_RE.exec(msg);
  if (m) {
    const [, user, verb, resource, group, ns] = m;
    const [res, sub] = resource!.split('/');
    const c: AccessCheck = { verb: verb!, resource: res!, subresource: sub, group: group ?? '', namespace: ns };
    return `RBAC: ${user} cannot ${verb} ${resourceName(c)}${ns ? ` in namespace ${ns}` : ''} (\`${canI(c)}\` says no); ask your cluster admin for it (docs/kubectl-plugin.md lists what the plugin needs)`;
  }
  return null;
}

/** Any non-2xx API answer as one line; `action` says what the plugin was doing. */
export function apiErrorLine(status: number, body: unknown, action: string, ctx: { namespace?: string } = {}): string {
  const st: KubeStatus = body && typeof body === 'object' ? body as KubeStatus : { message: typeof body === 'string' ? body.trim().slice(0, 200) : '' };
  if (status === 403) { const l = forbiddenLine(st, ctx); if (l) return l; }
  if (status === 401) return `the API server refused the credentials (401 ${st.message || 'Unauthorized'}) while trying to ${action}: check the kubeconfig/context or log in again`;
  if (status === 404 && st.details?.kind) {
    const kind = st.details.kind.replace(/s$/, '');
    return `${kind} ${st.details.name ?? ''} not found${ctx.namespace ? ` in namespace ${ctx.namespace}` : ''} (while trying to ${action})`.replace(/  +/g, ' ');
  }
  return `cannot ${action}: HTTP ${status}${st.message ? `: ${st.message}` : ''}`;
}

interface PodLike {
  metadata?: { name?: string };
  spec?: { nodeName?: string; containers?: Array<{ name: string; image?: string }> };
  status?: {
    phase?: string;
    containerStatuses?: Array<{ name: string; image?: string; state?: { waiting?: { reason?: string; message?: string }; terminated?: { exitCode?: number; reason?: string; message?: string } } }>;
  };
}

const IMAGE_REASONS = new Set(['ErrImageNeverPull', 'ErrImagePull', 'ImagePullBackOff', 'InvalidImageName', 'ErrImageInspect']);
const START_REASONS = new Set(['CreateContainerConfigError', 'CreateContainerError', 'RunContainerError', 'PreStartHookError', 'CrashLoopBackOff']);

/** What keeps a recorder pod from starting, as one line; null while it is fine (or still starting). */
export function podStartProblem(pod: PodLike, howToLoad: string): string | null {
  const node = pod.spec?.nodeName ?? '?';
  for (const cs of pod.status?.containerStatuses ?? []) {
    const w = cs.state?.waiting;
    if (!w?.reason) continue;
    const image = cs.image ?? pod.spec?.containers?.find((c) => c.name === cs.name)?.image ?? '?';
    const detail = (w.message ?? '').split('\n')[0]!.slice(0, 160);
    if (IMAGE_REASONS.has(w.reason)) {
      return `image ${image} is not on node ${node} (${w.reason}${detail ? `: ${detail}` : ''}); ${howToLoad}`;
    }
    if (START_REASONS.has(w.reason)) return `the recorder pod ${pod.metadata?.name ?? ''} on node ${node} cannot start (${w.reason}${detail ? `: ${detail}` : ''})`;
  }
  return null;
}

/** How to get the default image onto nodes, per cluster type (docs/kubectl-plugin.md). */
export const LOAD_IMAGE_HINT = 'build it with `npm run image` and load out/rolltrace-image.tar into every node (kind load image-archive, k3d image import, or ctr -n k8s.io images import), or pass --image REF of a registry';
