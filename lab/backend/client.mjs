#!/usr/bin/env node
// The lab's own traffic: one HTTP GET per interval to --url, a new connection each; logs a JSON line per
// request with realtime ns, the local address, and ok/error. Runs until SIGTERM or --duration-ms.
import http from 'node:http';

const args = process.argv.slice(2);
const opt = (k, d) => { const i = args.indexOf(`--${k}`); return i >= 0 ? args[i + 1] : d; };
const url = new URL(opt('url', 'http://127.0.0.1:80/'));
const intervalMs = Number(opt('interval-ms', '100'));
const timeoutMs = Number(opt('timeout-ms', '1000'));
const durationMs = Number(opt('duration-ms', '0'));
const base = { ms: Date.now(), hr: process.hrtime.bigint() };
const nowNs = () => base.ms * 1e6 + Number(process.hrtime.bigint() - base.hr);
const out = (o) => process.stdout.write(JSON.stringify(o) + '\n');

function once() {
  const start = nowNs();
  let client;
  let done = false;
  const fin = (ok, error) => { if (done) return; done = true; out({ ts_ns: nowNs(), start_ns: start, ok, error, client, target: `${url.hostname}:${url.port || 80}` }); };
  const req = http.get({ host: url.hostname, port: url.port || 80, path: url.pathname + url.search, agent: false, timeout: timeoutMs }, (res) => {
    res.resume();
    res.on('end', () => fin(res.statusCode >= 200 && res.statusCode < 500, res.statusCode >= 500 ? `status ${res.statusCode}` : undefined));
    res.on('error', (e) => fin(false, e.code ?? e.message));
  });
  req.on('socket', (s) => s.on('connect', () => { client = `${s.localAddress}:${s.localPort}`; }));
  req.on('timeout', () => { req.destroy(new Error('timeout')); });
  req.on('error', (e) => fin(false, e.code ?? e.message));
}
const t = setInterval(once, intervalMs);
if (durationMs > 0) setTimeout(() => { clearInterval(t); setTimeout(() => process.exit(0), timeoutMs + 100); }, durationMs);
process.on('SIGTERM', () => { clearInterval(t); setTimeout(() => process.exit(0), Math.min(timeoutMs, 500)); });
