/**
 * `rolltrace demo` (what `npm run demo` runs): record the `race` scenario in the lab with the real
 * recorder, then print its analysis and write the HTML report beside the bundle.
 */
import { existsSync, rmSync } from 'node:fs';
import { resolve } from 'node:path';
import { InputError } from '../schemas/errors.js';

export async function runDemo(opts: { out: string }): Promise<number> {
  if (typeof process.getuid === 'function' && process.getuid() !== 0) {
    throw new InputError('the demo builds network namespaces and records with strace/bpftrace/libpcap: run it as root (sudo npm run demo)');
  }
  const out = resolve(opts.out);
  const truth = out.replace(/(\.rtb)?$/, '.truth.json');
  const html = out.replace(/(\.rtb)?$/, '.html');
  for (const f of [out, truth, html]) if (existsSync(f)) rmSync(f);
  process.stderr.write(`rolltrace demo: recording the 'race' scenario in the lab -> ${out}\n`);
  const { runLabRun } = await import('../lab/cli.js');
  const rc = await runLabRun({ scenario: 'race', out, truth, onLine: demoLine });
  if (rc !== 0 || !existsSync(out)) {
    process.stderr.write(`rolltrace demo: the lab run failed (exit ${rc})\n`);
    return rc || 1;
  }
  const { runAnalyze } = await import('../analyzer/commands/analyze.js');
  process.stdout.write('\n');
  const code = await runAnalyze(out, { format: 'text' });
  try {
    await runAnalyze(out, { format: 'html', out: html });
    process.stdout.write(`\nHTML report: ${html}\n`);
  } catch (e) {
    process.stderr.write(`rolltrace demo: no HTML report (${(e as Error).message})\n`);
  }
  process.stdout.write(`Bundle: ${out}   (try: npx rolltrace timeline ${out} | less)\n`);
  // exit 1 would mean "failures found" — that is the point of the race demo, not an error of the demo
  return code === 2 ? 2 : 0;
}

/** The lab's machine-readable progress lines, as a person wants to read them. */
function demoLine(l: string): void {
  if (!l.startsWith('LAB ')) { process.stderr.write(l + '\n'); return; }
  let o: Record<string, unknown>;
  try { o = JSON.parse(l.slice(4)); } catch { return; }
  const say = (s: string) => process.stderr.write(`lab: ${s}\n`);
  switch (o.kind) {
    case 'ready': say(`node ${o.nodeNs} is up; Service VIP ${o.vip}; recording with: rolltrace record ${String(o.record).split(' record ')[1] ?? ''}`); break;
    case 'done': say(`recorder finished (${JSON.stringify(o.recorder)})`); break;
    case 'truth': say(`ground truth from the lab's own clocks: ${o.pods} terminated pod(s), ${o.failures} failed connection(s) -> ${o.path}`); break;
    case 'error': say(`error: ${String(o.message ?? JSON.stringify(o))}`); break;
    case 'conntrack-enobufs': say('conntrack could not keep up (ENOBUFS): the truth may miss connections'); break;
    default: break;
  }
}
