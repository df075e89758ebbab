/** `rolltrace timeline FILE [--source S]... [--since T] [--until T] [--pod P] [--packets]`. */
import { InputError } from '../../schemas/errors.js';
import { META_KEYS } from '../../schemas/rows.js';
import { asInputError } from '../analyze.js';
import { BundleReader } from '../bundle-reader.js';
import { buildIdentity } from '../model/identity.js';
import { formatTimelineLine, parseInstant, timelineItems } from '../timeline.js';
import { sane } from '../util.js';

export interface TimelineCliOptions { source?: string[]; since?: string; until?: string; pod?: string; packets?: boolean }

export async function runTimeline(file: string, opts: TimelineCliOptions): Promise<number> {
  const reader = await BundleReader.open(file).catch((e: unknown) => { throw asInputError(e, file); });
  try {
    const range = reader.timeRange();
    const startNs = sane(reader.metaNumber(META_KEYS.startedNs)) ?? sane(range?.start) ?? 0;
    const at = (name: string, v: string | undefined): number | undefined => {
      if (v === undefined) return undefined;
      const n = parseInstant(v, startNs);
      if (!Number.isFinite(n)) throw new InputError(`--${name} ${JSON.stringify(v)} is neither an ISO instant nor seconds from the start (+12.5)`);
      return n;
    };
    const since = at('since', opts.since);
    const until = at('until', opts.until);
    let podTerms: string[] | undefined;
    if (opts.pod) {
      const id = buildIdentity(reader, sane(range?.end) ?? Number.MAX_SAFE_INTEGER);
      const pods = id.find(opts.pod);
      podTerms = pods.flatMap((p) => [...p.ips, p.name, ...(p.uid ? [p.uid] : []), ...[...p.pids].map((x) => `"pid":${x}`)]);
    }
    let buf = '';
    for (const it of timelineItems(reader, { since, until, sources: opts.source, pod: opts.pod, podTerms, allPackets: !!opts.packets })) {
      buf += formatTimelineLine(it, startNs) + '\n';
      if (buf.length > 65536) { if (!process.stdout.write(buf)) await new Promise((r) => process.stdout.once('drain', r)); buf = ''; }
    }
    process.stdout.write(buf);
    return 0;
  } catch (e) {
    throw asInputError(e, file);
  } finally {
    reader.close();
  }
}
