/** `rolltrace merge A.rtb B.rtb... --out FILE`: one bundle from several nodes, clocks aligned on shared API events. */
import { InputError } from '../../schemas/errors.js';
import { mergeBundles } from '../merge/merge.js';

export async function runMerge(files: string[], opts: { out?: string }): Promise<number> {
  if (!opts.out) throw new InputError('merge needs --out FILE');
  const r = await mergeBundles(files, opts.out);
  const lines = [`merged ${files.length} bundles -> ${opts.out} (reference node ${r.nodes[0]})`];
  for (const n of r.nodes) {
    const s = r.stats[n]!;
    const spread = s.min_ns !== null && s.max_ns !== null ? `, spread ${((s.max_ns - s.min_ns) / 1e6).toFixed(3)} ms` : '';
    lines.push(`  ${n.padEnd(20)} offset ${(s.offset_ns / 1e6).toFixed(3)} ms from ${s.samples} shared API event(s)${spread}${s.note && n !== r.nodes[0] ? ` — ${s.note}` : ''}`);
  }
  lines.push(`  rows: ${Object.entries(r.rows).map(([k, v]) => `${k}=${v}`).join(' ')}; ${r.deduplicated} duplicate API rows kept once`);
  process.stdout.write(lines.join('\n') + '\n');
  return 0;
}
