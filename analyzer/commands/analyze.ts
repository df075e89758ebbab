/** `rolltrace analyze FILE [--format text|json|markdown|html] [--out PATH]`. Exit 1 when failures were found. */
import { writeFileSync } from 'node:fs';
import type { Analysis } from '../../schemas/analysis.js';
import { InputError } from '../../schemas/errors.js';
import { analyzeBundle, asInputError, hasFailures } from '../analyze.js';
import { BundleReader } from '../bundle-reader.js';
import { renderText } from '../render/text.js';

type Renderer = (a: Analysis) => string | Promise<string>;

async function loadRenderer(format: string): Promise<Renderer> {
  try {
    if (format === 'markdown') return (await import('../render/markdown.js' as string)).renderMarkdown as Renderer;
    if (format === 'html') return (await import('../render/html.js' as string)).renderHtml as Renderer;
  } catch {
    // fall through
  }
  throw new InputError(`format ${format} not available in this build`);
}

export async function runAnalyze(file: string, opts: { format?: string; out?: string }): Promise<number> {
  const format = opts.format ?? 'text';
  if (!['text', 'json', 'markdown', 'html'].includes(format)) throw new InputError(`unknown format ${format} (text, json, markdown, html)`);
  const reader = await BundleReader.open(file).catch((e: unknown) => { throw asInputError(e, file); });
  try {
    const analysis = await analyzeBundle(reader);
    let out: string;
    if (format === 'json') out = JSON.stringify(analysis, null, 2) + '\n';
    else if (format === 'text') out = renderText(analysis, file);
    else {
      const render = await loadRenderer(format);
      if (typeof render !== 'function') throw new InputError(`format ${format} not available in this build`);
      out = await render(analysis);
    }
    if (opts.out) {
      try { writeFileSync(opts.out, out); } catch (e) { throw new InputError(`cannot write ${opts.out}: ${(e as Error).message}`); }
    } else process.stdout.write(out);
    return hasFailures(analysis) ? 1 : 0;
  } catch (e) {
    throw asInputError(e, file);
  } finally {
    reader.close();
  }
}
