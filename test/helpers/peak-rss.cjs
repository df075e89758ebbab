// Preloaded with `node --require` into a CLI child by test/helpers/cli.ts (`peakRss: true`): at exit,
// the process's peak resident set (VmHWM, kB) goes to the file named by RT_PEAK_RSS_FILE. A child
// killed before it exits (out of memory, SIGKILL) writes nothing, which the caller treats as a failure.
const fs = require('node:fs');
process.on('exit', () => {
  const out = process.env.RT_PEAK_RSS_FILE;
  if (!out) return;
  try {
    const m = /VmHWM:\s+(\d+) kB/.exec(fs.readFileSync('/proc/self/status', 'utf8'));
    if (m) fs.writeFileSync(out, m[1]);
  } catch { /* the caller sees no file */ }
});
