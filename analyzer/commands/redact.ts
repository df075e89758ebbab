/** `rolltrace redact BUNDLE --out FILE [--pseudonymize]`: a copy that is safe to share; prints what it removed. */
import { InputError } from '../../schemas/errors.js';
import { asInputError, copyError } from '../analyze.js';
import { BundleReader } from '../bundle-reader.js';
import { redactBundle, type RedactCounts } from '../redact/redact.js';
import { resolve } from 'node:path';

const LABELS: Record<keyof RedactCounts, string> = {
  packets: 'packets cut to headers',
  payloadBytesDropped: 'payload bytes dropped',
  secretsDropped: 'Secret objects dropped',
  managedFields: 'managedFields removed',
  annotations: 'annotations removed (last-applied-configuration, secret-looking)',
  envValues: 'env values masked',
  secretFields: 'secret-looking fields masked',
  dataValues: 'data/stringData values masked',
  commandArgs: 'command-line argument values masked',
  urlQueries: 'URL query strings removed',
  ipsPseudonymized: 'IP addresses pseudonymized (occurrences)',
  namesPseudonymized: 'names pseudonymized (distinct)',
};

export async function runRedact(file: string, opts: { out?: string; pseudonymize?: boolean }): Promise<number> {
  if (!opts.out) throw new InputError('redact needs --out FILE');
  if (resolve(opts.out) === resolve(file)) throw new InputError('--out must differ from the input bundle (redact never rewrites its input)');
  const reader = await BundleReader.open(file).catch((e: unknown) => { throw asInputError(e, file); });
  let c: RedactCounts;
  try {
    // on failure redactBundle removes the partial --out; a damaged input is a one-line error (exit 2)
    c = redactBundle(reader, opts.out, { pseudonymize: !!opts.pseudonymize });
  } catch (e) {
    throw copyError(e, [reader], opts.out);
  } finally {
    reader.close();
  }
  const lines = [`redacted ${file} -> ${opts.out}${opts.pseudonymize ? ' (pseudonymized)' : ''}`];
  for (const k of Object.keys(LABELS) as Array<keyof RedactCounts>) {
    if (!opts.pseudonymize && (k === 'ipsPseudonymized' || k === 'namesPseudonymized')) continue;
    lines.push(`  ${String(c[k]).padStart(8)}  ${LABELS[k]}`);
  }
  process.stdout.write(lines.join('\n') + '\n');
  return 0;
}
