/** The `rolltrace analyze --format json` result: schema `rolltrace.analysis/v1` (see analysis.schema.json). */

export const ANALYSIS_SCHEMA_ID = 'rolltrace.analysis/v1' as const;

/**
 * `ignored-sigterm` (extension): the process neither exited nor closed its listener between SIGTERM and
 * the SIGKILL at the end of the grace period; connections cut at that SIGKILL are attributed to it.
 */
export type Verdict = 'listener-closed-before-rule-removed' | 'safe' | 'unknown' | 'ignored-sigterm';
export type FailureCause = 'listener-closed' | 'no-endpoint' | 'killed-in-flight' | 'not-ready' | 'unknown';

export interface AnalysisSource {
  name: string;
  status: string;
  events: number;
  dropped: number;
}

export interface AnalysisPod {
  namespace: string | null;
  name: string;
  ip: string | null;
  deletionAt: string | null;
  sigtermAt: string | null;
  listenerClosedAt: string | null;
  exitedAt: string | null;
  endpointTerminatingAt: string | null;
  endpointRemovedAt: string | null;
  ruleRemovedAt: string | null;
  exposureMs: number | null;
  verdict: Verdict;
  failedConnections: number;
  evidence: string[];
  /** extension: rule removal per node for merged bundles */
  ruleRemovedAtByNode?: Record<string, string | null>;
  /** extension: when the process was SIGKILLed (the end of the grace period), if it was */
  sigkillAt?: string | null;
  /** extension: failed connections cut by that SIGKILL */
  killedConnections?: number;
  /**
   * extension: per path (cluster IP, NodePort `*:PORT`, LB/external IP) when this node stopped routing to
   * the pod; `fallback` marks a Local path that kept it after the cluster IP path dropped it (terminating fallback)
   */
  routes?: Array<{ path: 'cluster-ip' | 'node-port' | 'external-ip' | string; addr: string; policy: 'Cluster' | 'Local' | string; service: string; node: string | null; stoppedAt: string | null; fallback: boolean }>;
  /**
   * extension: per node that routed to the pod. `recorded`: this bundle holds that node's rules (then
   * `ruleRemovedAt`/`exposureMs` are that node's); `node: null, recorded: false` stands for the nodes whose
   * rules are not in the bundle (connections already DNATed elsewhere): `exposureAtLeastMs` is the last
   * such connection refused after the listener closed, a lower bound. `failedConnections`: the failures
   * that node's routing sent here.
   */
  nodes?: Array<{ node: string | null; recorded: boolean; ruleRemovedAt: string | null; exposureMs: number | null; exposureAtLeastMs: number | null; failedConnections: number }>;
}

export interface AnalysisFailure {
  at: string;
  client: string;
  service: string | null;
  backend: { ip: string | null; port: number | null; pod: string | null };
  cause: FailureCause;
  evidence: string[];
  /** extension: where the failure was seen (probe, packets, conntrack) */
  via?: string[];
  /** extension: probe error text or packet summary */
  error?: string | null;
  /** extension: the path the connection took on this node (cluster IP, NodePort, LB/external IP), when the rules say */
  path?: { path: string; addr: string; policy: string } | null;
  /**
   * extension: the node whose rules DNATed (routed) this connection to the backend; null when it was
   * already DNATed on a node whose rules are not in this bundle (the evidence says so)
   */
  node?: string | null;
}

/** What the recording shows was in use (null: not recorded). */
export interface RecommendationCurrent {
  /** namespace/name of the Deployment */
  deployment: string | null;
  /** where the pod template was read: the Deployment, else a recorded Pod */
  from: 'deployment' | 'pod' | null;
  replicas: number | null;
  containers: string[];
  preStopSeconds: number | null;
  /** the preStop handler as written: `sleep 2s`, `exec: sleep 5`, `httpGet /drain` */
  preStop: string | null;
  terminationGracePeriodSeconds: number | null;
  readinessProbe: boolean | null;
  livenessProbe: boolean | null;
  startupProbe: boolean | null;
  strategy: { type: string | null; maxSurge: string | number | null; maxUnavailable: string | number | null; minReadySeconds: number | null } | null;
  /** PodDisruptionBudgets selecting the pods (namespace/name) */
  pdb: string[] | null;
  /** per Service (namespace/name): its externalTrafficPolicy, null for a ClusterIP service */
  externalTrafficPolicy: Record<string, string | null> | null;
  /** the API server's gitVersion */
  serverVersion: string | null;
}

export interface AnalysisCheck {
  knob: 'preStop' | 'grace' | 'pdb' | 'strategy' | 'probes' | 'trafficPolicy';
  status: 'ok' | 'warn' | 'fail';
  evidence: string[];
}

export interface AnalysisRecommendation {
  preStopSeconds: number | null;
  terminationGracePeriodSeconds: number | null;
  why: string;
  /** extension: further advice (traffic policy, readiness probe) */
  notes?: string[];
  /** extension: what was in use */
  current?: RecommendationCurrent;
  /** extension: strategic merge patch of the Deployment; null when nothing to change or no template recorded */
  patch?: Record<string, unknown> | null;
  /** extension: the `kubectl patch deployment … --type strategic -p '…'` line that applies `patch` */
  kubectl?: string | null;
  /** extension: one check per knob, with its evidence from this recording */
  checks?: AnalysisCheck[];
  /** extension: the commands that prove the fix (exit 0) */
  verify?: string[];
}

/** One line of a timeline excerpt (the renderers' only view of the bundle's raw streams). */
export interface ExcerptLine { at: string; source: string; kind: string; text: string }

export interface Analysis {
  schema: typeof ANALYSIS_SCHEMA_ID;
  bundle: {
    node: string | null;
    start: string | null;
    end: string | null;
    sources: AnalysisSource[];
    /** extension */
    nodes?: string[];
    closedCleanly?: boolean;
  };
  pods: AnalysisPod[];
  failures: AnalysisFailure[];
  recommendation: AnalysisRecommendation;
  /** extension: per EndpointSlice change, how long until this node's rules reflected it */
  programmingLatency?: Array<{
    at: string; endpoint: string; change: 'removed' | 'added'; node: string | null; latencyMs: number | null; evidence: string[];
  }>;
  /** extension: what the bundle lacks, degrading the analysis; one line per kind of screened-out signal */
  warnings?: string[];
  /** extension: each signal screened out as not a failure of the rollout (health checks, reset artifacts), and why */
  ignored?: Array<{ group: 'health-check' | 'reset-artifact' | 'outside-tenure' | 'before-capture' | 'after-capture' | string; why: string }>;
  /**
   * extension: excerpts of the bundle's timeline the reports show, taken at analysis time so rendering
   * does no I/O: the merged timeline ±1 s around failures, and per pod the probe results and RSTs
   * around its termination.
   */
  excerpts?: {
    failureWindows: Array<{ since: string; until: string; lines: ExcerptLine[]; truncated: boolean }>;
    windowsTotal: number;
    /** why the timeline could not be read, if it could not */
    error?: string;
    traffic: Array<{ pod: string; marks: Array<{ at: string; kind: 'probe-ok' | 'probe-failed' | 'rst'; title: string }>; truncated: boolean }>;
  };
}

/** ns → ISO-8601 UTC with microseconds, e.g. 2026-04-17T10:30:28.825123Z */
export function isoFromNs(ns: number | null | undefined): string | null {
  if (ns === null || ns === undefined || !Number.isFinite(ns)) return null;
  const ms = Math.floor(ns / 1e6);
  const d = new Date(ms);
  if (Number.isNaN(d.getTime())) return null;
  const micros = Math.floor((ns - ms * 1e6) / 1e3);
  return d.toISOString().replace(/\.(\d{3})Z$/, (_m, m3: string) => `.${m3}${String(micros).padStart(3, '0')}Z`);
}

/** ISO-8601 (any precision up to ns) → ns */
export function nsFromIso(iso: string): number | null {
  const m = /^(.*?)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)$/.exec(iso.trim());
  if (!m) return null;
  const base = Date.parse(`${m[1]}${m[3]}`);
  if (Number.isNaN(base)) return null;
  const frac = (m[2] ?? '').padEnd(9, '0').slice(0, 9);
  return base * 1e6 + Number(frac);
}
