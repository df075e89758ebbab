#!/usr/bin/env node
// The lab's backend: a small HTTP server with a selectable shutdown. Plain .mjs (no tsx) to start fast.
// Logs JSON lines to stdout with realtime ns: listening, sigterm, listener-closed, exit (the truth).
//   --port N            listen port (default 8080)
//   --shutdown MODE     close  : close the listener at SIGTERM, exit when idle (the race)
//                       drain  : keep serving for --drain-ms after SIGTERM, then close and exit
//                       ignore : ignore SIGTERM (killed at the grace period)
//   --drain-ms N        drain time (default 5000)
//   --start-delay-ms N  listen only after N ms (slow start)
//   --work-ms N         each request takes N ms (default 0; /?work=N per request)
//   --name S            pod name for the logs
import http from 'node:http';

const args = process.argv.slice(2);
const opt = (k, d) => { const i = args.indexOf(`--${k}`); return i >= 0 ? args[i + 1] : d; };
const port = Number(opt('port', '8080'));
const mode = opt('shutdown', 'close');
const drainMs = Number(opt('drain-ms', '5000'));
const startDelayMs = Number(opt('start-delay-ms', '0'));
const workMs = Number(opt('work-ms', '0'));
const name = opt('name', 'backend');

// realtime with sub-ms resolution (timeOrigin is realtime, now() monotonic since it)
const nowNs = () => Math.round((performance.timeOrigin + performance.now()) * 1e6);
const log = (ev, extra = {}) => process.stdout.write(JSON.stringify({ ev, ts_ns: nowNs(), pid: process.pid, name, port, ...extra }) + '\n');

let inflight = 0;
let requests = 0;
let closing = false;
const server = http.createServer((req, res) => {
  inflight++; requests++;
  const done = () => {
    res.setHeader('content-type', 'text/plain');
    if (closing) res.setHeader('connection', 'close');
    res.end(`${name} ${requests}\n`);
    inflight--;
    maybeExit();
  };
  if (req.url?.startsWith('/healthz')) { inflight--; res.end('ok\n'); return; }
  // per-request work: /?work=MS (slow requests, for SIGKILL-in-flight scenarios)
  const w = Number(new URL(req.url ?? '/', 'http://x').searchParams.get('work') ?? workMs) || 0;
  if (w > 0) setTimeout(done, w); else done();
});
server.keepAliveTimeout = 1000;

let listenerClosed = false;
function closeListener() {
  if (listenerClosed) return;
  listenerClosed = true;
  // server.close() closes the listening socket synchronously (close(2)), then waits for connections
  // stamped right before the close(2): a stamp taken after it lags whenever this process is descheduled
  const before = nowNs();
  server.close();
  log('listener-closed', { ts_ns: before, after_ns: nowNs() });
  server.closeIdleConnections?.();
}
function maybeExit() {
  if (closing && listenerClosed && inflight === 0) { log('exit', { code: 0, requests }); process.exit(0); }
}

function start() {
  server.listen(port, '0.0.0.0', () => log('listening', { start_delay_ms: startDelayMs }));
}
log('started', { mode });
if (startDelayMs > 0) setTimeout(start, startDelayMs); else start();

process.on('SIGTERM', () => {
  log('sigterm', { mode, inflight });
  if (mode === 'ignore') return;
  closing = true;
  if (mode === 'drain') {
    setTimeout(() => { closeListener(); maybeExit(); setTimeout(() => { log('exit', { code: 0, requests, forced: true }); process.exit(0); }, 2000).unref(); }, drainMs);
    return;
  }
  closeListener();
  maybeExit();
  setTimeout(() => { log('exit', { code: 0, requests, forced: true }); process.exit(0); }, 2000).unref();
});
process.on('SIGINT', () => { log('exit', { code: 130, requests }); process.exit(130); });
