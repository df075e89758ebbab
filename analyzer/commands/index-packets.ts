/**
 * `rolltrace index FILE`: write a recorded bundle's packet index into the file. `record` stores the
 * frames only (meta packets_index = deferred) and every reader of rolltrace builds the index for itself;
 * this makes `packets` and the views that read it (timeline, tcp_resets) complete for plain SQL too.
 */
import { existsSync } from 'node:fs';
import Database from 'better-sqlite3';
import { InputError } from '../../schemas/errors.js';
import { META_KEYS } from '../../schemas/rows.js';
import { asInputError } from '../analyze.js';
import { BundleReader } from '../bundle-reader.js';
import { insertChunkIndex } from '../chunk-sink.js';
import { clean } from '../util.js';

export async function runIndex(file: string): Promise<number> {
  const r = await BundleReader.open(file).catch((e: unknown) => { throw asInputError(e, file); });
  let deferred: boolean;
  try {
    deferred = r.metaValue(META_KEYS.packetsIndex) === 'deferred';
    if (deferred && r.isCopy) {
      throw new InputError(`${file}: compressed or of an older schema, cannot be indexed in place; gunzip it (or analyze it as it is: the analysis builds the index itself)`);
    }
  } finally {
    r.close();
  }
  if (!deferred) {
    process.stdout.write(`${clean(file, 200)}: its packet index is already in the file\n`);
    return 0;
  }
  if (existsSync(`${file}-wal`)) throw new InputError(`${file}: still being written (a -wal file is beside it); index it once the recorder has closed it`);
  let db: InstanceType<typeof Database>;
  try {
    db = new Database(file, { fileMustExist: true });
  } catch (e) {
    throw new InputError(`${file}: cannot open for writing (${clean((e as Error).message, 200)})`);
  }
  try {
    const n = db.transaction(() => {
      const rows = insertChunkIndex(db, 'main.packets');
      db.exec('CREATE INDEX IF NOT EXISTS packets_ports ON packets(sport, dport)');
      db.prepare('DELETE FROM meta WHERE key = ?').run(META_KEYS.packetsIndex);
      return rows;
    })();
    process.stdout.write(`${clean(file, 200)}: ${n} packet index rows written\n`);
    return 0;
  } catch (e) {
    throw asInputError(e, file);
  } finally {
    db.close();
  }
}
