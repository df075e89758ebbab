/** Runs `rolltrace <args>` in this process and reports its peak RSS on stderr as `MAXRSS_KB=<n>` (bench helper). */
import { main } from '../cli/main.js';

const code = await main(['node', 'rolltrace', ...process.argv.slice(2)]);
process.stderr.write(`MAXRSS_KB=${process.resourceUsage().maxRSS}\n`);
process.exitCode = code;
