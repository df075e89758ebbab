/**
 * `analyze --format html`: one self-contained file (no network: a CSP forbids every fetch) with the
 * verdict, the recommendation and an SVG swimlane timeline per terminated pod. Lanes: API (pod,
 * EndpointSlice), node rules, process (SIGTERM, listener close, exit), packets/probe. The exposure
 * window (listener closed → rule removed) is shaded; every failure is a red mark whose evidence shows
 * as an SVG <title> tooltip and, on click, in a details panel. A small inline script zooms and pans
 * (wheel, buttons) down to milliseconds by re-laying out marks from their data-t attribute; without
 * scripts the static timeline is complete. Every string from the bundle is escaped.
 */
import type { Analysis, AnalysisFailure, AnalysisPod } from '../../schemas/analysis.js';
import { nsFromIso } from '../../schemas/analysis.js';
import { failuresOfPod as failuresOf, podSpan } from '../model/excerpts.js';
import { escapeHtml as h, jsonForScript } from './escape.js';
import { fmtAt, overallVerdict, podLabel } from './markdown.js';

export const HTML_COLOURS = {
  laneApi: '#e8f0fe', laneRules: '#e6f4ea', laneProc: '#fef7e0', lanePkt: '#f3e8fd',
  api: '#1a73e8', rules: '#188038', proc: '#e37400', probeOk: '#9aa0a6', rst: '#a142f4', failure: '#d93025', exposure: '#fbbc04',
} as const;

const W = 1320;
const PLOT_X0 = 190;
const PLOT_X1 = W - 20;
const LANE_H = 52;
const TOP = 46;
const LANES = [
  { key: 'api', label: 'API (pod, EndpointSlice)', bg: HTML_COLOURS.laneApi },
  { key: 'rules', label: 'node rules', bg: HTML_COLOURS.laneRules },
  { key: 'proc', label: 'process', bg: HTML_COLOURS.laneProc },
  { key: 'pkt', label: 'packets / probe', bg: HTML_COLOURS.lanePkt },
] as const;
type LaneKey = (typeof LANES)[number]['key'];

interface Mark { lane: LaneKey; tMs: number; label: string; colour: string; title: string; shape: 'line' | 'tick' | 'diamond'; failure?: number }

interface PodView { pod: AnalysisPod; marks: Mark[]; exposure: [number, number] | null; t0Ms: number; t1Ms: number; originNs: number }

function relMs(iso: string | null | undefined, originNs: number): number | null {
  if (!iso) return null;
  const ns = nsFromIso(iso);
  return ns === null ? null : (ns - originNs) / 1e6;
}

function buildView(a: Analysis, p: AnalysisPod, originNs: number): PodView {
  const marks: Mark[] = [];
  const add = (lane: LaneKey, iso: string | null, label: string, colour: string) => {
    const t = relMs(iso, originNs);
    if (t !== null) marks.push({ lane, tMs: t, label, colour, title: `${label} at ${fmtAt(iso, originNs)}`, shape: 'line' });
  };
  add('api', p.deletionAt, 'deletion', HTML_COLOURS.api);
  add('api', p.endpointTerminatingAt, 'slice: terminating', HTML_COLOURS.api);
  add('api', p.endpointRemovedAt, 'slice: removed', HTML_COLOURS.api);
  const byNode = Object.entries(p.ruleRemovedAtByNode ?? {});
  if (byNode.length) for (const [node, at] of byNode) add('rules', at, `rule removed (${node})`, HTML_COLOURS.rules);
  else add('rules', p.ruleRemovedAt, 'rule removed', HTML_COLOURS.rules);
  for (const r of p.routes ?? []) if (r.stoppedAt && r.stoppedAt !== p.ruleRemovedAt) add('rules', r.stoppedAt, `${r.path} ${r.addr} stopped`, HTML_COLOURS.rules);
  add('proc', p.sigtermAt, 'SIGTERM', HTML_COLOURS.proc);
  add('proc', p.listenerClosedAt, 'listener closed', HTML_COLOURS.proc);
  add('proc', p.exitedAt, 'exit', HTML_COLOURS.proc);
  if (p.sigkillAt) add('proc', p.sigkillAt, 'SIGKILL', HTML_COLOURS.failure);
  for (const [f, i] of failuresOf(a, p)) {
    const t = relMs(f.at, originNs);
    if (t === null) continue;
    marks.push({ lane: 'pkt', tMs: t, label: '', colour: HTML_COLOURS.failure, shape: 'diamond', failure: i,
      title: `failure ${f.cause}: ${f.client} → ${f.service ?? '?'} → ${f.backend.ip ?? '?'}:${f.backend.port ?? '?'}\n${f.evidence.join('\n')}` });
  }
  const span = podSpan(a, p, failuresOf);
  const t0 = span ? (span[0] - originNs) / 1e6 : 0;
  const t1 = span ? (span[1] - originNs) / 1e6 : 1000;
  const label = podLabel(p);
  for (const x of a.excerpts?.traffic.find((t) => t.pod === label)?.marks ?? []) {
    const t = relMs(x.at, originNs);
    if (t === null) continue;
    marks.push({ lane: 'pkt', tMs: t, label: '', colour: x.kind === 'probe-ok' ? HTML_COLOURS.probeOk : HTML_COLOURS.rst, shape: 'tick', title: x.title });
  }
  const lc = relMs(p.listenerClosedAt, originNs);
  const rr = relMs(p.ruleRemovedAt, originNs);
  const exposure: [number, number] | null = lc !== null && rr !== null && rr > lc ? [lc, rr] : null;
  // failures and key marks drawn last so they sit on top
  marks.sort((x, y) => (x.shape === 'diamond' ? 2 : x.shape === 'line' ? 1 : 0) - (y.shape === 'diamond' ? 2 : y.shape === 'line' ? 1 : 0));
  return { pod: p, marks, exposure, t0Ms: t0, t1Ms: t1, originNs };
}

function xOf(t: number, v: PodView): number {
  return PLOT_X0 + ((t - v.t0Ms) / (v.t1Ms - v.t0Ms)) * (PLOT_X1 - PLOT_X0);
}

function niceStep(spanMs: number): number {
  const raw = spanMs / 8;
  const p = 10 ** Math.floor(Math.log10(raw));
  for (const m of [1, 2, 5, 10]) if (m * p >= raw) return m * p;
  return 10 * p;
}

function fmtMs(t: number, step: number): string {
  const dec = step >= 1 ? 0 : Math.min(6, Math.ceil(-Math.log10(step)));
  return `${t >= 0 ? '+' : ''}${t.toFixed(dec)} ms`;
}

function axis(v: PodView): string {
  const step = niceStep(v.t1Ms - v.t0Ms);
  const out: string[] = [];
  for (let t = Math.ceil(v.t0Ms / step) * step; t <= v.t1Ms; t += step) {
    const x = xOf(t, v).toFixed(1);
    out.push(`<line x1="${x}" x2="${x}" y1="${TOP - 6}" y2="${TOP + LANES.length * LANE_H}" stroke="#dadce0" stroke-width="1"/><text x="${x}" y="${TOP - 10}" font-size="11" text-anchor="middle" fill="#5f6368">${h(fmtMs(t, step))}</text>`);
  }
  return out.join('');
}

function markSvg(m: Mark, v: PodView, laneIdx: number, row = 0): string {
  const x = xOf(m.tMs, v).toFixed(2);
  const y0 = TOP + laneIdx * LANE_H;
  const title = `<title>${h(m.title)}</title>`;
  if (m.shape === 'diamond') {
    const cy = y0 + LANE_H / 2;
    return `<g class="mark fail" data-t="${m.tMs}" data-fail="${m.failure}" transform="translate(${x},0)" tabindex="0" role="button">${title}<path d="M0 ${cy - 11} L9 ${cy} L0 ${cy + 11} L-9 ${cy} Z" fill="${HTML_COLOURS.failure}" stroke="#fff" stroke-width="1.5"/></g>`;
  }
  if (m.shape === 'tick') {
    return `<g class="mark" data-t="${m.tMs}" transform="translate(${x},0)">${title}<rect x="-1" y="${y0 + 8}" width="2.5" height="${LANE_H - 16}" fill="${m.colour}"/></g>`;
  }
  return `<g class="mark" data-t="${m.tMs}" transform="translate(${x},0)">${title}<rect x="-1.5" y="${y0 + 4}" width="3" height="${LANE_H - 8}" fill="${m.colour}"/><text x="5" y="${y0 + 16 + row * 13}" font-size="11" fill="${m.colour}">${h(m.label)}</text></g>`;
}

function podSvg(v: PodView, idx: number): string {
  const H = TOP + LANES.length * LANE_H + 8;
  const parts: string[] = [];
  parts.push(`<svg class="lanes" id="tl${idx}" data-t0="${v.t0Ms}" data-t1="${v.t1Ms}" data-x0="${PLOT_X0}" data-x1="${PLOT_X1}" viewBox="0 0 ${W} ${H}" width="${W}" height="${H}" xmlns="http://www.w3.org/2000/svg" role="img" aria-label="${h(`timeline of ${podLabel(v.pod)}`)}">`);
  parts.push(`<defs><clipPath id="clip${idx}"><rect x="${PLOT_X0}" y="0" width="${PLOT_X1 - PLOT_X0}" height="${H}"/></clipPath></defs>`);
  LANES.forEach((l, i) => {
    parts.push(`<rect x="${PLOT_X0}" y="${TOP + i * LANE_H + 1}" width="${PLOT_X1 - PLOT_X0}" height="${LANE_H - 2}" fill="${l.bg}"/>`);
    parts.push(`<text x="${PLOT_X0 - 8}" y="${TOP + i * LANE_H + LANE_H / 2 + 4}" font-size="12" text-anchor="end" fill="#202124">${h(l.label)}</text>`);
  });
  parts.push(`<g clip-path="url(#clip${idx})">`);
  parts.push(`<g class="axis">${axis(v)}</g>`);
  if (v.exposure) {
    const [a, b] = v.exposure;
    const xa = xOf(a, v), xb = xOf(b, v);
    parts.push(`<rect class="span exposure" data-t="${a}" data-t2="${b}" x="${xa.toFixed(2)}" y="${TOP - 4}" width="${(xb - xa).toFixed(2)}" height="${LANES.length * LANE_H + 4}" fill="${HTML_COLOURS.exposure}" fill-opacity="0.28"><title>${h(`exposure window: ${(b - a).toFixed(1)} ms between listener close and rule removal`)}</title></rect>`);
    parts.push(`<rect class="span exposure-band" data-t="${a}" data-t2="${b}" x="${xa.toFixed(2)}" y="${TOP - 4}" width="${(xb - xa).toFixed(2)}" height="6" fill="${HTML_COLOURS.exposure}"/>`);
  }
  // labelled marks of one lane alternate between three label rows so neighbours do not overlap
  const rowOf = new Map<Mark, number>();
  for (const l of LANES) v.marks.filter((m) => m.lane === l.key && m.shape === 'line').sort((x, y) => x.tMs - y.tMs).forEach((m, i) => rowOf.set(m, i % 3));
  for (const m of v.marks) parts.push(markSvg(m, v, LANES.findIndex((l) => l.key === m.lane), rowOf.get(m) ?? 0));
  parts.push('</g></svg>');
  return parts.join('');
}

const CSS = `
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#202124;margin:24px;max-width:1360px}
h1{font-size:22px;margin:0 0 8px} h2{font-size:18px;margin:28px 0 8px} h3{font-size:15px;margin:18px 0 6px}
.verdict{padding:12px 16px;border-radius:8px;font-weight:600;font-size:16px}
.verdict.fail{background:#fce8e6;color:#a50e0e}.verdict.ok{background:#e6f4ea;color:#137333}.verdict.unknown{background:#f1f3f4;color:#3c4043}
.rec{background:#f8f9fa;border-left:4px solid #1a73e8;padding:8px 14px;margin:12px 0}
table{border-collapse:collapse;margin:6px 0}td,th{border:1px solid #dadce0;padding:3px 8px;text-align:left;font-size:13px;vertical-align:top}
.muted{color:#5f6368;font-size:12px}.ctl button{font:inherit;margin-right:4px;padding:2px 10px}
.mark.fail{cursor:pointer}.mark.fail:focus path,.mark.fail:hover path{stroke:#202124;stroke-width:2}
#details{position:sticky;bottom:0;background:#fff;border:2px solid #d93025;border-radius:8px;padding:10px 14px;margin-top:12px;white-space:pre-wrap;font-family:ui-monospace,monospace;font-size:12px}
#details[hidden]{display:none}
svg.lanes{display:block;max-width:100%;height:auto}
tr.check.fail td:nth-child(2){color:#a50e0e;font-weight:600}tr.check.warn td:nth-child(2){color:#b06000}tr.check.ok td:nth-child(2){color:#137333}
pre{background:#fff;border:1px solid #dadce0;padding:6px 10px;white-space:pre-wrap;word-break:break-all;font-size:12px}`;

/** The inline script: zoom/pan by re-laying out [data-t] marks; click a failure to show its evidence. */
const SCRIPT = `(function(){
document.body.setAttribute('data-scripted','1');
var data=JSON.parse(document.getElementById('rt-failures').textContent);
var det=document.getElementById('details');
function show(i){var f=data[i];if(!f)return;det.hidden=false;det.textContent='';var b=document.createElement('b');b.textContent='failure '+(i+1)+': '+f.cause;det.appendChild(b);
det.appendChild(document.createTextNode('\\nat '+f.at+'\\nclient '+f.client+'\\nservice '+(f.service||'-')+'\\nbackend '+(f.backend.ip||'?')+':'+(f.backend.port==null?'?':f.backend.port)+' '+(f.backend.pod||'')+'\\n\\n'+f.evidence.join('\\n')));}
document.querySelectorAll('.mark.fail').forEach(function(g){g.addEventListener('click',function(){show(+g.getAttribute('data-fail'));});g.addEventListener('keydown',function(e){if(e.key==='Enter')show(+g.getAttribute('data-fail'));});});
function step(span){var r=span/8,p=Math.pow(10,Math.floor(Math.log10(r)));var ms=[1,2,5,10];for(var i=0;i<ms.length;i++)if(ms[i]*p>=r)return ms[i]*p;return 10*p;}
function layout(svg){var t0=+svg.dataset.v0,t1=+svg.dataset.v1,x0=+svg.dataset.x0,x1=+svg.dataset.x1;var k=(x1-x0)/(t1-t0);function X(t){return x0+(t-t0)*k;}
svg.querySelectorAll('g.mark').forEach(function(g){g.setAttribute('transform','translate('+X(+g.dataset.t).toFixed(2)+',0)');});
svg.querySelectorAll('rect.span').forEach(function(r){var a=X(+r.dataset.t),b=X(+r.dataset.t2);r.setAttribute('x',a.toFixed(2));r.setAttribute('width',Math.max(0,b-a).toFixed(2));});
var ax=svg.querySelector('g.axis');while(ax.firstChild)ax.removeChild(ax.firstChild);var s=step(t1-t0),dec=s>=1?0:Math.min(6,Math.ceil(-Math.log10(s)));var NS='http://www.w3.org/2000/svg';
var y0=+svg.dataset.top,y1=+svg.dataset.bottom;
for(var t=Math.ceil(t0/s)*s;t<=t1;t+=s){var x=X(t);var l=document.createElementNS(NS,'line');l.setAttribute('x1',x);l.setAttribute('x2',x);l.setAttribute('y1',y0-6);l.setAttribute('y2',y1);l.setAttribute('stroke','#dadce0');ax.appendChild(l);
var tx=document.createElementNS(NS,'text');tx.setAttribute('x',x);tx.setAttribute('y',y0-10);tx.setAttribute('font-size','11');tx.setAttribute('text-anchor','middle');tx.setAttribute('fill','#5f6368');tx.textContent=(t>=0?'+':'')+t.toFixed(dec)+' ms';ax.appendChild(tx);}
var lab=document.querySelector('[data-range-for="'+svg.id+'"]');if(lab)lab.textContent=(t1-t0).toFixed(dec+1)+' ms shown';}
function zoom(svg,f,c){var t0=+svg.dataset.v0,t1=+svg.dataset.v1;if(c===undefined)c=(t0+t1)/2;var n0=c-(c-t0)*f,n1=c+(t1-c)*f;if(n1-n0<0.05)return;svg.dataset.v0=n0;svg.dataset.v1=n1;layout(svg);}
function pan(svg,f){var t0=+svg.dataset.v0,t1=+svg.dataset.v1,d=(t1-t0)*f;svg.dataset.v0=t0+d;svg.dataset.v1=t1+d;layout(svg);}
document.querySelectorAll('svg.lanes').forEach(function(svg){svg.dataset.v0=svg.dataset.t0;svg.dataset.v1=svg.dataset.t1;layout(svg);
svg.addEventListener('wheel',function(e){e.preventDefault();var r=svg.getBoundingClientRect(),sx=1320/r.width,px=(e.clientX-r.left)*sx;var t0=+svg.dataset.v0,t1=+svg.dataset.v1,x0=+svg.dataset.x0,x1=+svg.dataset.x1;
var c=t0+(px-x0)/(x1-x0)*(t1-t0);zoom(svg,e.deltaY<0?0.8:1.25,c);},{passive:false});});
document.querySelectorAll('.ctl button').forEach(function(b){b.addEventListener('click',function(){var svg=document.getElementById(b.dataset.for);var a=b.dataset.act;
if(a==='in')zoom(svg,0.5);else if(a==='out')zoom(svg,2);else if(a==='left')pan(svg,-0.25);else if(a==='right')pan(svg,0.25);else{svg.dataset.v0=svg.dataset.t0;svg.dataset.v1=svg.dataset.t1;layout(svg);}});});
})();`;

/** Renders the analysis only (traffic marks come from `a.excerpts`): no I/O. */
export async function renderHtml(a: Analysis): Promise<string> {
  const startNs = (a.bundle.start ? nsFromIso(a.bundle.start) : null) ?? 0;
  const v = overallVerdict(a);
  const r = a.recommendation;
  const body: string[] = [];
  body.push(`<h1>rolltrace report${a.bundle.node ? ` — node ${h(a.bundle.node)}` : ''}</h1>`);
  body.push(`<p class="muted">recorded ${h(a.bundle.start ?? '?')} → ${h(a.bundle.end ?? '?')}${a.bundle.nodes?.length ? ` on nodes ${h(a.bundle.nodes.join(', '))}` : ''}; sources: ${a.bundle.sources.map((s) => `${h(s.name)} ${h(s.status)} (${s.events}${s.dropped ? `, ${s.dropped} dropped` : ''})`).join(' · ')}</p>`);
  body.push(`<div class="verdict ${v.level}" id="verdict">${h(v.text)}</div>`);
  for (const w of a.warnings ?? []) body.push(`<p class="muted">⚠ ${h(w)}</p>`);
  if (a.ignored?.length) {
    body.push(`<details class="muted" id="ignored"><summary>${a.ignored.length} signal(s) screened out as not failures of the rollout</summary><ul>`);
    for (const x of a.ignored.slice(0, 200)) body.push(`<li>[${h(x.group)}] ${h(x.why)}</li>`);
    body.push('</ul></details>');
  }
  body.push('<div class="rec" id="recommendation"><b>Recommendation:</b> ');
  const rp: string[] = [];
  if (r.preStopSeconds !== null) rp.push(`preStop sleep <b>${h(r.preStopSeconds)} s</b>`);
  if (r.terminationGracePeriodSeconds !== null) rp.push(`terminationGracePeriodSeconds <b>${h(r.terminationGracePeriodSeconds)}</b>`);
  body.push(`${rp.join(', ')}${rp.length ? '. ' : ''}${h(r.why)}${(r.notes ?? []).map((n) => `<br>${h(n)}`).join('')}`);
  // the command to apply stays in view; what backs it folds away so the timelines stay near the top
  if (r.kubectl) body.push(`<p>Apply it:</p><pre id="kubectl">${h(r.kubectl)}</pre>`);
  const c = r.current;
  const nFail = (r.checks ?? []).filter((k) => k.status === 'fail').length;
  const nWarn = (r.checks ?? []).filter((k) => k.status === 'warn').length;
  if (c || r.checks?.length || r.patch || r.verify?.length) {
    body.push(`<details id="fix"><summary>checks (${nFail} fail, ${nWarn} warn), what was in use, the patch, how to verify</summary>`);
    if (c) {
      body.push(`<p class="muted">in use${c.deployment ? ` (${h(c.deployment)})` : ''}: preStop ${h(c.preStop ?? 'none')}, terminationGracePeriodSeconds ${h(c.terminationGracePeriodSeconds ?? '—')}, readinessProbe ${h(c.readinessProbe === null ? '—' : c.readinessProbe ? 'yes' : 'no')}, strategy ${c.strategy ? h(`maxSurge ${c.strategy.maxSurge ?? '?'}, maxUnavailable ${c.strategy.maxUnavailable ?? '?'}, minReadySeconds ${c.strategy.minReadySeconds ?? 0}`) : '—'}, PDB ${h(c.pdb === null ? '—' : c.pdb.join(', ') || 'none')}, server ${h(c.serverVersion ?? '—')}</p>`);
    }
    if (r.checks?.length) {
      body.push('<table id="checks"><tr><th>check</th><th>status</th><th>evidence from this recording</th></tr>');
      for (const k of r.checks) body.push(`<tr class="check ${h(k.status)}"><td>${h(k.knob)}</td><td>${h(k.status)}</td><td>${k.evidence.map(h).join('<br>')}</td></tr>`);
      body.push('</table>');
    }
    if (r.patch) body.push(`<p>Strategic merge patch:</p><pre id="patch">${h(JSON.stringify(r.patch, null, 2))}</pre>`);
    if (r.verify?.length) body.push(`<p>Verify (exit 0 when the fix holds):</p><pre id="verify">${r.verify.map(h).join('\n')}</pre>`);
    body.push('</details>');
  }
  body.push('</div>');

  body.push(`<h2>Terminated pods (${a.pods.length})</h2>`);
  body.push(`<p class="muted">Lanes share one clock (ms from the bundle start). Shaded: the exposure window, from the listener closing to this node's rule removal. Red diamonds: failures (hover or click for evidence). Purple: RSTs and failed probes; grey: successful probes. Zoom with the mouse wheel or the buttons.</p>`);
  a.pods.forEach((p, i) => {
    const view = buildView(a, p, startNs);
    body.push(`<section class="pod" id="pod${i}"><h3>${h(podLabel(p))}${p.ip ? ` (${h(p.ip)})` : ''} — ${h(p.verdict)}${p.exposureMs !== null ? `, exposure ${h(p.exposureMs.toFixed(1))} ms` : ''}, ${p.failedConnections} failed</h3>`);
    body.push(`<div class="ctl"><button data-for="tl${i}" data-act="in">zoom +</button><button data-for="tl${i}" data-act="out">zoom −</button><button data-for="tl${i}" data-act="left">◀</button><button data-for="tl${i}" data-act="right">▶</button><button data-for="tl${i}" data-act="reset">reset</button> <span class="muted" data-range-for="tl${i}"></span></div>`);
    body.push(podSvg(view, i).replace('<svg class="lanes"', `<svg class="lanes" data-top="${TOP}" data-bottom="${TOP + LANES.length * LANE_H}"`));
    body.push('<table><tr><th>step</th><th>when</th></tr>');
    const rows: Array<[string, string | null]> = [['deletion requested', p.deletionAt], ['SIGTERM', p.sigtermAt], ['listener closed', p.listenerClosedAt],
      ['endpoint terminating', p.endpointTerminatingAt], ['endpoint removed', p.endpointRemovedAt], [(a.bundle.nodes?.length ?? 0) > 1 ? 'rule removed (the last recorded node)' : 'rule removed (this node)', p.ruleRemovedAt], ['process exited', p.exitedAt], ...(p.sigkillAt ? [['SIGKILL', p.sigkillAt] as [string, string | null]] : [])];
    for (const [k, at] of rows) body.push(`<tr><td>${k}</td><td>${h(fmtAt(at, startNs))}</td></tr>`);
    for (const [node, at] of Object.entries(p.ruleRemovedAtByNode ?? {})) body.push(`<tr><td>rule removed on ${h(node)}</td><td>${h(fmtAt(at, startNs))}</td></tr>`);
    for (const n of (p.nodes ?? []).filter((x) => !x.recorded)) body.push(`<tr><td>${h(n.node ?? 'other node(s)')}: rules not in this bundle, ${n.failedConnections} failed connection(s) routed from there</td><td>${h(n.exposureAtLeastMs !== null ? `exposure at least ${n.exposureAtLeastMs} ms` : '?')}</td></tr>`);
    for (const r of p.routes ?? []) body.push(`<tr class="route"><td>${h(r.path)} path ${h(r.addr)} (${h(r.policy)}) stopped routing${r.fallback ? ' — terminating fallback' : ''}</td><td>${h(r.stoppedAt ? fmtAt(r.stoppedAt, startNs) : 'not before the end')}</td></tr>`);
    body.push('</table>');
    if (p.evidence.length) body.push(`<details><summary>evidence</summary><ul>${p.evidence.map((e) => `<li>${h(e)}</li>`).join('')}</ul></details>`);
    body.push('</section>');
  });
  body.push('<div id="details" hidden></div>');
  body.push(`<h2>Failures (${a.failures.length})</h2>`);
  if (!a.failures.length) body.push('<p>No failed request or connection was seen.</p>');
  else {
    body.push('<table id="failures"><tr><th>#</th><th>at</th><th>client</th><th>service</th><th>backend</th><th>pod</th><th>cause</th><th>evidence</th></tr>');
    a.failures.slice(0, 1000).forEach((f, i) => body.push(`<tr><td>${i + 1}</td><td>${h(fmtAt(f.at, startNs))}</td><td>${h(f.client)}</td><td>${h(f.service ?? '—')}${f.path ? ` (${h(f.path.path)})` : ''}</td><td>${h(f.backend.ip ?? '?')}:${h(f.backend.port ?? '?')}</td><td>${h(f.backend.pod ?? '—')}</td><td>${h(f.cause)}</td><td>${f.evidence.map(h).join('<br>')}</td></tr>`));
    body.push('</table>');
  }
  const failuresJson = jsonForScript(a.failures.slice(0, 5000).map((f) => ({ at: f.at, client: f.client, service: f.service, backend: f.backend, cause: f.cause, evidence: f.evidence })));
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${h(`rolltrace: ${v.text}`)}</title><style>${CSS}</style></head>
<body>
${body.join('\n')}
<p class="muted">made by rolltrace; every instant is on the recording node's clock.</p>
<script type="application/json" id="rt-failures">${failuresJson}</script>
<script>${SCRIPT}</script>
</body></html>
`;
}
