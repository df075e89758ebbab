// Runs `nft -j monitor` and stamps each line on receipt, in a worker thread of its own: the recorder's
// main thread (SQLite batches, packet decoding) can stall for tens of ms, this event loop does nothing
// else, so the receipt stamp stays within a few hundred µs of nft's write. Plain JS: no loader needed.
import { parentPort, workerData } from 'node:worker_threads';
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';

const now = () => Math.round((performance.timeOrigin + performance.now()) * 1e6);
const [cmd, ...args] = workerData.argv;
const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
let batch = [];
let scheduled = false;
const flush = () => {
  scheduled = false;
  if (batch.length) parentPort.postMessage({ t: 'lines', lines: batch });
  batch = [];
};
createInterface({ input: child.stdout }).on('line', (line) => {
  batch.push([now(), line]);
  if (!scheduled) { scheduled = true; setImmediate(flush); }
});
let errTail = '';
child.stderr.on('data', (d) => { errTail = (errTail + d.toString()).slice(-500); });
child.once('error', (e) => parentPort.postMessage({ t: 'error', message: e.message }));
child.once('close', (code) => {
  flush();
  parentPort.postMessage({ t: 'close', code, errTail });
  parentPort.close();
});
parentPort.on('message', (m) => {
  if (m !== 'stop') return;
  child.kill('SIGTERM');
  setTimeout(() => child.kill('SIGKILL'), 2000).unref();
});
