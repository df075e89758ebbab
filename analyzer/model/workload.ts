/**
 * What was rolled, as recorded: the Deployment (pod template, strategy), the Services and
 * PodDisruptionBudgets selecting its pods, the API server's version and the recorder's command line.
 * Read once from k8s_objects and meta; the recommendation compares these with what was measured.
 */
import { META_KEYS } from '../../schemas/rows.js';
import type { BundleReader } from '../bundle-reader.js';
import { num, parseJson, str } from '../util.js';

type J = Record<string, unknown>;
const obj = (v: unknown): J | null => (v && typeof v === 'object' && !Array.isArray(v) ? v as J : null);
const arr = (v: unknown): unknown[] => (Array.isArray(v) ? v : []);

export interface ContainerInfo {
  name: string;
  image: string | null;
  ports: number[];
  /** seconds of a native sleep or an exec `sleep N`; null when none or unknown length */
  preStopSeconds: number | null;
  /** how the preStop hook is written: `sleep 2s`, `exec: sleep 5`, `httpGet /x`, or null */
  preStop: string | null;
  readiness: J | null;
  liveness: J | null;
  startup: J | null;
}

export interface WorkloadService { namespace: string; name: string; type: string; externalTrafficPolicy: string | null; internalTrafficPolicy: string | null; selector: Record<string, string> }
export interface WorkloadPdb { namespace: string; name: string; minAvailable: string | number | null; maxUnavailable: string | number | null }

export interface Workload {
  deployment: {
    namespace: string; name: string; replicas: number | null; strategyType: string | null;
    maxSurge: string | number | null; maxUnavailable: string | number | null; minReadySeconds: number | null;
    labels: Record<string, string>;
  } | null;
  /** from the Deployment's template, else from a recorded pod */
  podSpecFrom: 'deployment' | 'pod' | null;
  terminationGracePeriodSeconds: number | null;
  containers: ContainerInfo[];
  services: WorkloadService[];
  pdbs: WorkloadPdb[];
  server: { gitVersion: string; major: number; minor: number } | null;
  /** the recorder's command line (meta argv) when this bundle was written by `rolltrace record` */
  argv: string[] | null;
  createdBy: string | null;
  /** per pod uid: the receipt of the last status update still showing Ready=True after the deletion row */
  readyAfterDeletion: Map<string, number>;
}

function labelsOf(v: unknown): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, x] of Object.entries(obj(v) ?? {})) if (typeof x === 'string') out[k] = x;
  return out;
}

function preStopOf(c: J): { seconds: number | null; text: string | null } {
  const ps = obj(obj(c.lifecycle)?.preStop);
  if (!ps) return { seconds: null, text: null };
  const sl = obj(ps.sleep);
  if (sl && num(sl.seconds) !== null) return { seconds: num(sl.seconds), text: `sleep ${num(sl.seconds)}s` };
  const cmd = arr(obj(ps.exec)?.command).map(String);
  if (cmd.length) {
    const m = /(?:^|[\s/])sleep\s+(\d+(?:\.\d+)?)\b/.exec(cmd.join(' '));
    return { seconds: m ? Number(m[1]) : null, text: `exec: ${cmd.join(' ').slice(0, 120)}` };
  }
  const hg = obj(ps.httpGet);
  if (hg) return { seconds: null, text: `httpGet ${str(hg.path) ?? '/'}` };
  return { seconds: null, text: 'unrecognized preStop handler' };
}

export function containersOf(podSpec: J | null): ContainerInfo[] {
  return arr(podSpec?.containers).map(obj).filter((c): c is J => !!c).map((c) => {
    const ps = preStopOf(c);
    return {
      name: str(c.name) ?? '?', image: str(c.image),
      ports: arr(c.ports).map((p) => num(obj(p)?.containerPort)).filter((p): p is number => p !== null),
      preStopSeconds: ps.seconds, preStop: ps.text,
      readiness: obj(c.readinessProbe), liveness: obj(c.livenessProbe), startup: obj(c.startupProbe),
    };
  });
}

function selectorMatches(sel: J | null, labels: Record<string, string>): boolean {
  if (!sel) return false;
  const ml = labelsOf(sel.matchLabels);
  const exprs = arr(sel.matchExpressions).map(obj).filter((e): e is J => !!e);
  if (!Object.keys(ml).length && !exprs.length) return false;
  for (const [k, v] of Object.entries(ml)) if (labels[k] !== v) return false;
  for (const e of exprs) {
    const k = str(e.key) ?? '';
    const vals = arr(e.values).map(String);
    const has = Object.prototype.hasOwnProperty.call(labels, k);
    const op = str(e.operator);
    if (op === 'In' && !(has && vals.includes(labels[k]!))) return false;
    if (op === 'NotIn' && has && vals.includes(labels[k]!)) return false;
    if (op === 'Exists' && !has) return false;
    if (op === 'DoesNotExist' && has) return false;
  }
  return true;
}

/** `v1.31.0-rolltrace-lab` / {major:"1", minor:"31+"} → numbers */
export function parseServerVersion(o: J | null, fallback: string | null): Workload['server'] {
  const git = str(o?.gitVersion) ?? fallback;
  let major = Number(String(o?.major ?? '').replace(/\D+$/, ''));
  let minor = Number(String(o?.minor ?? '').replace(/\D+$/, ''));
  if ((!Number.isInteger(major) || !Number.isInteger(minor) || !major) && git) {
    const m = /^v?(\d+)\.(\d+)/.exec(git);
    if (m) { major = Number(m[1]); minor = Number(m[2]); }
  }
  if (!Number.isInteger(major) || !Number.isInteger(minor) || !major) return null;
  return { gitVersion: git ?? `v${major}.${minor}`, major, minor };
}

/** the recorded API server's version: its /version object, else the recorder's tool versions (null: unknown) */
export function serverVersionOf(reader: BundleReader): Workload['server'] {
  let versionObj: J | null = null;
  for (const r of reader.k8sObjects({ kinds: ['Version'] })) {
    const j = parseJson(r.object);
    if (j.ok) versionObj = j.v;
  }
  const tools = reader.metaJson<Record<string, string>>(META_KEYS.toolVersions) ?? {};
  return parseServerVersion(versionObj, typeof tools['kube-apiserver'] === 'string' ? tools['kube-apiserver'] : null);
}

export function loadWorkload(reader: BundleReader): Workload {
  const last = new Map<string, { kind: string; o: J; deleted: boolean }>();
  let podSpec: J | null = null;
  const podLabels: Array<Record<string, string>> = [];
  const readyAfterDeletion = new Map<string, number>();
  const deletionSeen = new Set<string>();
  for (const r of reader.k8sObjects({ kinds: ['Deployment', 'Service', 'PodDisruptionBudget', 'Pod'] })) {
    const j = parseJson(r.object);
    if (!j.ok) continue;
    if (r.kind === 'Pod') {
      const spec = obj(j.v.spec);
      if (!podSpec && spec) podSpec = spec;
      const pmd = obj(j.v.metadata);
      if (podLabels.length < 50) podLabels.push(labelsOf(pmd?.labels));
      const ready = arr(obj(j.v.status)?.conditions).some((c) => obj(c)?.type === 'Ready' && obj(c)?.status === 'True');
      const uid = str(pmd?.uid);
      // a status update after the deletion row that still says Ready (the deletion row itself always does)
      if (uid && str(pmd?.deletionTimestamp) && r.event_type !== 'DELETED') {
        if (!deletionSeen.has(uid)) deletionSeen.add(uid);
        else if (ready) readyAfterDeletion.set(uid, r.ts_ns);
      }
      continue;
    }
    const key = `${r.kind}|${r.namespace ?? ''}/${r.name ?? ''}`;
    const prev = last.get(key);
    // a DELETED row keeps the object as it was: the last state before deletion is still what ran
    last.set(key, { kind: r.kind, o: r.event_type === 'DELETED' && prev ? prev.o : j.v, deleted: r.event_type === 'DELETED' });
  }
  const server = serverVersionOf(reader);
  const deps = [...last.values()].filter((x) => x.kind === 'Deployment').map((x) => x.o);
  const d = deps[0] ?? null;
  let deployment: Workload['deployment'] = null;
  let templateLabels: Record<string, string> = {};
  let spec: J | null = null;
  let from: Workload['podSpecFrom'] = null;
  if (d) {
    const md = obj(d.metadata) ?? {};
    const ds = obj(d.spec) ?? {};
    const st = obj(ds.strategy) ?? {};
    const ru = obj(st.rollingUpdate) ?? {};
    const tmpl = obj(ds.template) ?? {};
    templateLabels = labelsOf(obj(tmpl.metadata)?.labels);
    spec = obj(tmpl.spec);
    from = spec ? 'deployment' : null;
    const intOrStr = (v: unknown) => (typeof v === 'number' || typeof v === 'string' ? v : null);
    deployment = {
      namespace: str(md.namespace) ?? 'default', name: str(md.name) ?? '?', replicas: num(ds.replicas),
      strategyType: str(st.type), maxSurge: intOrStr(ru.maxSurge), maxUnavailable: intOrStr(ru.maxUnavailable),
      // a real API server omits a zero minReadySeconds (int32, omitempty): recorded without it means 0, the
      // default (kube-apiserver v1.33 on the real node; only the fast lab's own API server wrote the 0)
      minReadySeconds: num(ds.minReadySeconds) ?? 0, labels: templateLabels,
    };
  }
  if (!spec && podSpec) { spec = podSpec; from = 'pod'; }
  const labelSets = Object.keys(templateLabels).length ? [templateLabels] : podLabels;
  const services: WorkloadService[] = [];
  const pdbs: WorkloadPdb[] = [];
  for (const { kind, o } of last.values()) {
    const md = obj(o.metadata) ?? {};
    const sp = obj(o.spec) ?? {};
    if (kind === 'Service') {
      const sel = labelsOf(sp.selector);
      if (!Object.keys(sel).length || !labelSets.some((l) => Object.entries(sel).every(([k, v]) => l[k] === v))) continue;
      services.push({ namespace: str(md.namespace) ?? 'default', name: str(md.name) ?? '?', type: str(sp.type) ?? 'ClusterIP',
        externalTrafficPolicy: str(sp.externalTrafficPolicy), internalTrafficPolicy: str(sp.internalTrafficPolicy), selector: sel });
    } else if (kind === 'PodDisruptionBudget') {
      if (!labelSets.some((l) => selectorMatches(obj(sp.selector), l))) continue;
      const io = (v: unknown) => (typeof v === 'number' || typeof v === 'string' ? v : null);
      pdbs.push({ namespace: str(md.namespace) ?? 'default', name: str(md.name) ?? '?', minAvailable: io(sp.minAvailable), maxUnavailable: io(sp.maxUnavailable) });
    }
  }
  const argv = reader.metaJson<unknown>(META_KEYS.argv);
  return {
    deployment, podSpecFrom: from, terminationGracePeriodSeconds: spec ? num(spec.terminationGracePeriodSeconds) : null,
    containers: containersOf(spec), services, pdbs, server,
    argv: Array.isArray(argv) && argv.every((x) => typeof x === 'string') ? argv as string[] : null,
    createdBy: reader.metaValue(META_KEYS.createdBy) ?? null, readyAfterDeletion,
  };
}

/** An intOrString against a replica count (rounding as the Deployment controller: surge up, unavailable down). */
export function resolveIntOrPercent(v: string | number | null, replicas: number, roundUp: boolean): number | null {
  if (v === null) return null;
  if (typeof v === 'number') return v;
  const m = /^(\d+)%$/.exec(v.trim());
  if (m) { const x = (Number(m[1]) * replicas) / 100; return roundUp ? Math.ceil(x) : Math.floor(x); }
  return /^\d+$/.test(v.trim()) ? Number(v) : null;
}
