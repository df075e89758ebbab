/**
 * `kubectl-rolltrace` (a kubectl plugin: `kubectl rolltrace ...` runs it with the arguments after its
 * name). Exit codes as rolltrace's: 0 ok; 1 the analysis found failures; 2 usage or cluster error, one
 * line; 130 aborted by the user (its pods removed).
 */
import { isInputError } from '../../schemas/errors.js';
import { rolltraceVersion } from '../../schemas/version.js';
import { oneLine } from '../main.js';
import { parsePluginArgs, USAGE } from './args.js';

export async function pluginMain(argv: string[]): Promise<number> {
  try {
    if (argv[0] === '--version' || argv[0] === 'version') { process.stdout.write(`${rolltraceVersion()}\n`); return 0; }
    const o = parsePluginArgs(argv);
    if (o === 'help') { process.stdout.write(`${USAGE}\n`); return 0; }
    const { runPluginCollect, runPluginRecord } = await import('./record.js');
    return await (o.command === 'collect' ? runPluginCollect(o) : runPluginRecord(o));
  } catch (e) {
    if (isInputError(e)) {
      process.stderr.write(`kubectl rolltrace: ${oneLine((e as Error).message)}\n`);
      return 2;
    }
    if (process.env.ROLLTRACE_DEBUG) throw e;
    const msg = e instanceof Error ? `${e.name}: ${e.message}` : String(e);
    process.stderr.write(`kubectl rolltrace: ${oneLine(`internal error (${msg}); please report it, ROLLTRACE_DEBUG=1 shows the stack`)}\n`);
    return 2;
  }
}
