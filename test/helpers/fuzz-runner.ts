/**
 * Child process of test/hostile-fuzz.test.ts: runs many CLI invocations in one process through the
 * CLI's own entry, `main(argv)` of cli/main.ts — what bin/rolltrace.mjs runs, minus tsx's start-up
 * (~0.7 s per spawn). Per case it records the exit code, stdout/stderr, a throw out of main (what the
 * real binary would print as a stack trace), uncaught exceptions, the peak RSS of the case (VmHWM,
 * reset before each case through /proc/self/clear_refs) and the files left in $TMPDIR and the case's
 * output directory. Usage: node --expose-gc --import tsx fuzz-runner.ts CASES.json RESULTS.jsonl
 */
import { appendFileSync, existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { main } from '../../cli/main.js';

export interface FuzzCase {
  id: string;
  args: string[];
  /** files the case reads: the exit-2 line must name one of them */
  inputs: string[];
  /** where the case may write; after an exit 2 it must be empty */
  outDir: string;
  /** run after this case when it exited 0 (e.g. export of the bundle an import produced) */
  then?: FuzzCase[];
}

export interface FuzzResult {
  id: string; args: string[]; inputs: string[];
  code: number | null; stdout: string; stderr: string;
  threw: string | null; uncaught: string | null;
  peakRssKb: number; ms: number; tmpLeft: string[]; outLeft: string[];
}

const peak = (): number => Number(/VmHWM:\s+(\d+)/.exec(readFileSync('/proc/self/status', 'utf8'))?.[1] ?? -1);
const resetPeak = (): void => { try { writeFileSync('/proc/self/clear_refs', '5'); } catch { /* older kernels: peak stays cumulative (stricter) */ } };

let uncaught: string | null = null;
process.on('uncaughtException', (e) => { uncaught = String((e as Error)?.stack ?? e); });
process.on('unhandledRejection', (e) => { uncaught = String((e as Error)?.stack ?? e); });

async function runOne(c: FuzzCase, resultsFile: string): Promise<void> {
  const out: string[] = [];
  const err: string[] = [];
  let outLen = 0;
  const ow = process.stdout.write.bind(process.stdout);
  const ew = process.stderr.write.bind(process.stderr);
  const cap = (sink: string[], isOut: boolean) => ((chunk: unknown, ...rest: unknown[]) => {
    const s = typeof chunk === 'string' ? chunk : Buffer.from(chunk as Uint8Array).toString('utf8');
    if (isOut) { outLen += s.length; if (outLen < 8192) sink.push(s); } else sink.push(s);
    const cb = rest.find((x) => typeof x === 'function') as (() => void) | undefined;
    if (cb) cb();
    return true;
  }) as typeof process.stdout.write;
  (globalThis as { gc?: () => void }).gc?.();
  resetPeak();
  uncaught = null;
  const t = Date.now();
  let code: number | null = null;
  let threw: string | null = null;
  process.stdout.write = cap(out, true);
  process.stderr.write = cap(err, false);
  try {
    code = await main(['node', 'rolltrace', ...c.args]);
  } catch (e) {
    threw = String((e as Error)?.stack ?? e);
  } finally {
    process.stdout.write = ow;
    process.stderr.write = ew;
  }
  await new Promise((r) => setImmediate(r));
  const r: FuzzResult = {
    id: c.id, args: c.args, inputs: c.inputs, code, stdout: out.join('').slice(0, 4096), stderr: err.join('').slice(0, 4096), threw, uncaught,
    peakRssKb: peak(), ms: Date.now() - t, tmpLeft: readdirSync(tmpdir()).filter((n) => !tmpBaseline.has(n)), outLeft: existsSync(c.outDir) ? readdirSync(c.outDir) : [],
  };
  appendFileSync(resultsFile, JSON.stringify(r) + '\n');
  if (code === 0) for (const n of c.then ?? []) await runOne(n, resultsFile);
}

// what $TMPDIR holds before the first case (tsx's compile cache, tsx-UID) is the runner's own
const tmpBaseline = new Set(readdirSync(tmpdir()));
const [casesFile, resultsFile] = process.argv.slice(2) as [string, string];
const cases = JSON.parse(readFileSync(casesFile, 'utf8')) as FuzzCase[];
writeFileSync(resultsFile, '');
for (const c of cases) await runOne(c, resultsFile);
