/** The `rolltrace analyze --format json` result: schema `rolltrace.analysis/v1` (see analysis.schema.json). */

export const ANALYSIS_SCHEMA_ID = 'rolltrace.analysis/v1' as const;

export type Verdict = 'listener-closed-before-rule-removed' | 'safe' | 'unknown';
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
}

export interface AnalysisRecommendation {
  preStopSeconds: number | null;
  terminationGracePeriodSeconds: number | null;
  why: string;
  /** extension: further advice (traffic policy, readiness probe) */
  notes?: string[];
}

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
  ignored?: Array<{ group: 'health-check' | 'reset-artifact' | 'outside-tenure' | string; why: string }>;
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
