/**
 * The lab's own view of failed connections, from the kernel's conntrack table (`conntrack -E` in the
 * node namespace, read with the recorder's CONNTRACK_ARGS and parsed with the recorder's
 * parseConntrackLine into ConntrackRow). This file is the flow tracker only.
 */
import type { ConntrackRow } from '../schemas/rows.js';

export interface CtFailure {
  atNs: number;
  client: string;
  service: string;
  backendIp: string | null;
  backendPort: number | null;
  /**
   * refused: SYN answered by RST (never established); closed-at-kill: cut by the SIGKILL of its backend;
   * reset-at-close: handshake done and reset as the backend shut down its listener: in the accept queue at
   * the close, or accepted and aborted when the process exited with it unserved (conntrack cannot tell which)
   */
  kind: 'refused' | 'closed-at-kill' | 'reset-at-close';
}

interface Flow { established: boolean; establishedAt: number | null; finishing: boolean; closed: boolean }

const FINISHING = new Set(['FIN_WAIT', 'CLOSE_WAIT', 'LAST_ACK', 'TIME_WAIT', 'CLOSE']);

/**
 * Flows to a service (VIP or NodePort) that failed: SYN_SENT -> CLOSE without ever being answered
 * with a SYN-ACK is a refused connection, attributed to the reply-direction source (the DNAT backend).
 * `kills` (backend ip -> SIGKILL instant): flows established before the kill whose first closing
 * transition (FIN or RST) comes within killWindowNs after it were cut by the kill.
 * `closes` (backend ip -> listener close window [atNs, afterNs], from the backend's stamps around its
 * close(2)): established flows whose first closing transition is a reset (straight to CLOSE, no FIN)
 * inside that window or up to closeWindowNs after it were reset as the backend shut its listener
 * (conntrack stamps on receipt, so the handshake itself may be stamped inside the window too).
 */
export function conntrackFailures(events: ConntrackRow[], isService: (ip: string, port: number) => boolean,
  kills: Array<{ ip: string; atNs: number; untilNs?: number | null }> = [], killWindowNs = 300e6,
  closes: Array<{ ip: string; atNs: number; afterNs?: number | null }> = [], closeWindowNs = 50e6): CtFailure[] {
  const flows = new Map<string, Flow>();
  const out: CtFailure[] = [];
  for (const e of events) {
    if (e.proto !== 'tcp' || e.orig_dst == null || e.orig_dport == null || !isService(e.orig_dst, e.orig_dport)) continue;
    const k = `${e.orig_src}:${e.orig_sport}>${e.orig_dst}:${e.orig_dport}`;
    let f = flows.get(k);
    if (!f || e.type === 'NEW') { f = { established: false, establishedAt: null, finishing: false, closed: false }; flows.set(k, f); }
    if (f.closed) continue;
    if ((e.state === 'SYN_RECV' || e.state === 'ESTABLISHED') && !f.established) { f.established = true; f.establishedAt = e.ts_ns; }
    const backendIp = e.reply_src || null;
    const base = { client: `${e.orig_src}:${e.orig_sport}`, service: `${e.orig_dst}:${e.orig_dport}`, backendIp, backendPort: e.reply_sport || null };
    const finishing = e.type === 'DESTROY' || (e.state != null && FINISHING.has(e.state));
    if (!f.established && finishing) {
      f.closed = true;
      // reply tuple unchanged from the original means no DNAT happened (no endpoint): backend unknown
      const dnat = !(e.reply_src === e.orig_dst && e.reply_sport === e.orig_dport);
      out.push({ atNs: e.ts_ns, ...base, backendIp: dnat ? backendIp : null, backendPort: dnat ? base.backendPort : null, kind: 'refused' });
      continue;
    }
    if (f.established && finishing && !f.finishing) {
      f.finishing = true;
      // the kill is effective when the process dies (`untilNs`: its exit, when known), which on a loaded
      // node can be hundreds of ms after the runtime logged it (real node: containerd's "Kill container" 283 ms
      // before the signal was generated)
      if (kills.some((x) => x.ip === backendIp && f!.establishedAt! < x.atNs && e.ts_ns >= x.atNs && e.ts_ns <= Math.max(x.atNs + killWindowNs, x.untilNs ?? -Infinity))) {
        out.push({ atNs: e.ts_ns, ...base, kind: 'closed-at-kill' });
      } else if (e.state === 'CLOSE' && closes.some((x) => x.ip === backendIp && e.ts_ns >= x.atNs && e.ts_ns <= Math.max(x.atNs, x.afterNs ?? x.atNs) + closeWindowNs)) {
        out.push({ atNs: e.ts_ns, ...base, kind: 'reset-at-close' });
      }
    }
    if (e.type === 'DESTROY') f.closed = true;
  }
  return out;
}
