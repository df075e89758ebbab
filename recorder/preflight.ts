/**
 * The record command's planning step: which sources are enabled, which can be loaded, which can run
 * here (each source's own preflight), and the one-line-per-source report printed before recording.
 * A source whose module is missing or throws on import is "unavailable" with the reason.
 */
import { readFileSync } from 'node:fs';
import type { Clock } from '../schemas/events.js';
import type { Preflight, RecordContext, RecordOptions, Source } from './source.js';
import { resolveStraceMode, straceModeCost } from './sources/strace/attach.js';

/** Every recorder source, in start order (rollout last: it patches the Deployment once all others run). */
export const RECORD_SOURCES = ['packets', 'strace', 'ebpf', 'nftables', 'conntrack', 'kube', 'probe', 'rollout'] as const;
export type RecordSourceName = (typeof RECORD_SOURCES)[number];

/** Sources that need root or capabilities. */
export const PRIVILEGED: ReadonlySet<RecordSourceName> = new Set(['packets', 'strace', 'ebpf', 'nftables', 'conntrack']);

/** How each source stamps time when it cannot say itself (unavailable/disabled rows). */
export const DEFAULT_CLOCK: Record<RecordSourceName, Clock> = {
  packets: 'kernel', strace: 'kernel', ebpf: 'converted-monotonic', nftables: 'receipt', conntrack: 'kernel',
  kube: 'receipt', probe: 'receipt', rollout: 'receipt',
};

/** Why a source is disabled by the command line, or null when it is enabled. */
export function disabledReason(name: RecordSourceName, o: RecordOptions): string | null {
  switch (name) {
    case 'packets': return o.packets === false ? '--no-packets' : null;
    case 'strace': return o.strace === false ? '--no-strace' : null;
    case 'ebpf': return o.ebpf === false ? '--no-ebpf' : null;
    case 'nftables': return o.nft === false ? '--no-nft' : null;
    case 'conntrack': return o.conntrack === false ? '--no-conntrack' : null;
    case 'kube': return o.kube === false ? '--no-kube' : null;
    case 'probe': return o.probe ? null : 'no --probe URL given';
    case 'rollout': return o.restart || o.untilRolloutComplete ? null : 'neither --restart nor --until-rollout-complete given';
  }
}

const CAPS: Array<[number, string]> = [[12, 'CAP_NET_ADMIN'], [13, 'CAP_NET_RAW'], [19, 'CAP_SYS_PTRACE'], [21, 'CAP_SYS_ADMIN']];

/** Effective capabilities of this process (from /proc/self/status), by name. */
export function effectiveCaps(statusText?: string): Set<string> {
  let text = statusText;
  if (text === undefined) {
    try { text = readFileSync('/proc/self/status', 'utf8'); } catch { return new Set(); }
  }
  const m = text.match(/^CapEff:\s*([0-9a-f]+)/m);
  const out = new Set<string>();
  if (!m) return out;
  const v = BigInt(`0x${m[1]}`);
  for (const [bit, name] of CAPS) if ((v >> BigInt(bit)) & 1n) out.add(name);
  if ((v >> 39n) & 1n) out.add('CAP_BPF');
  return out;
}

/** null when this process may run the privileged sources, else what it needs (one line). */
export function privilegeProblem(enabled: RecordSourceName[], uid: number = process.getuid?.() ?? 0, caps: Set<string> = effectiveCaps()): string | null {
  const priv = enabled.filter((n) => PRIVILEGED.has(n));
  if (priv.length === 0 || uid === 0) return null;
  const need = ['CAP_NET_ADMIN', 'CAP_NET_RAW', 'CAP_SYS_PTRACE'];
  if (need.every((c) => caps.has(c))) return null;
  const flags = priv.map((n) => (n === 'nftables' ? '--no-nft' : `--no-${n}`)).join(' ');
  return `record needs root (or CAP_NET_ADMIN, CAP_NET_RAW, CAP_SYS_PTRACE and CAP_BPF) for ${priv.join(', ')}: run it with sudo, or pass ${flags} to record only the Kubernetes API and the probe`;
}

export interface PlannedSource {
  name: RecordSourceName;
  /** disabled by the command line; unavailable (cannot load / cannot run here); ready to start */
  state: 'disabled' | 'unavailable' | 'ready';
  detail: string;
  clock: Clock;
  source?: Source;
  preflight?: Preflight;
}

export type SourceLoader = (name: RecordSourceName) => Promise<{ create(opts: RecordOptions): Source }>;

export const defaultLoader: SourceLoader = async (name) => {
  const mod = await import(new URL(`./sources/${name}/index.js`, import.meta.url).href) as { create?: unknown };
  if (typeof mod.create !== 'function') throw new Error('module has no create() export');
  return mod as { create(opts: RecordOptions): Source };
};

export function firstLine(e: unknown): string {
  const m = e instanceof Error ? e.message : String(e);
  return m.split('\n')[0]!.slice(0, 300);
}

export async function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let t: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([p, new Promise<T>((_, rej) => { t = setTimeout(() => rej(new Error(`${what} timed out after ${ms / 1000} s`)), ms); })]);
  } finally {
    if (t) clearTimeout(t);
  }
}

/** Load and preflight every enabled source (sequentially: preflights may run tools). */
export async function planSources(opts: RecordOptions, ctx: RecordContext, loader: SourceLoader = defaultLoader, timeoutMs = 15000): Promise<PlannedSource[]> {
  const plan: PlannedSource[] = [];
  for (const name of RECORD_SOURCES) {
    const off = disabledReason(name, opts);
    if (off) { plan.push({ name, state: 'disabled', detail: off, clock: DEFAULT_CLOCK[name] }); continue; }
    let source: Source;
    try {
      const mod = await loader(name);
      source = mod.create(opts);
    } catch (e) {
      const code = (e as { code?: string }).code;
      const why = code === 'ERR_MODULE_NOT_FOUND' && /sources\/[a-z]+\/index/.test(firstLine(e))
        ? 'not built into this rolltrace (module missing)' : `cannot load: ${firstLine(e)}`;
      plan.push({ name, state: 'unavailable', detail: why, clock: DEFAULT_CLOCK[name] });
      continue;
    }
    try {
      const pf = await withTimeout(source.preflight(ctx), timeoutMs, 'preflight');
      plan.push({ name, state: pf.ok ? 'ready' : 'unavailable', detail: pf.detail, clock: pf.clock ?? DEFAULT_CLOCK[name], source, preflight: pf });
    } catch (e) {
      plan.push({ name, state: 'unavailable', detail: `preflight failed: ${firstLine(e)}`, clock: DEFAULT_CLOCK[name], source });
    }
  }
  applyStraceMode(plan, opts, ctx);
  return plan;
}

/**
 * Once every source is planned: lazy strace needs ebpf (resolveStraceMode); the strace line of the
 * preflight starts with the mode that will run and its cost, and ctx.straceMode tells the source.
 */
export function applyStraceMode(plan: PlannedSource[], opts: RecordOptions, ctx: RecordContext): void {
  const st = plan.find((p) => p.name === 'strace');
  if (!st || st.state !== 'ready') return;
  const eb = plan.find((p) => p.name === 'ebpf');
  const decision = resolveStraceMode(opts.straceMode ?? 'lazy', { ready: eb?.state === 'ready', why: eb ? `${eb.state}: ${eb.detail}` : 'not planned' });
  ctx.straceMode = decision;
  st.detail = `${straceModeCost(decision.mode)}${decision.reason ? ` (WARNING: ${decision.reason})` : ''}; ${st.detail}`;
}

/** The report printed before recording starts: one line per source. */
export function formatPlan(plan: PlannedSource[]): string[] {
  const label = { ready: 'record', unavailable: 'CANNOT', disabled: 'off' } as const;
  return plan.map((p) => `  ${p.name.padEnd(10)} ${label[p.state].padEnd(7)} ${p.detail}`);
}
