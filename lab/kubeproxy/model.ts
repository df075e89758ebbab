/**
 * kube-proxy's view of the world, reduced to what the lab needs: Services + EndpointSlices in,
 * one ServicePort per (service, port) with its endpoints categorized out (pure, no I/O).
 * Endpoint selection follows kube-proxy's CategorizeEndpoints with ProxyTerminatingEndpoints:
 * use ready endpoints; when none is ready, fall back to serving && terminating ones.
 */
import { createHash } from 'node:crypto';

export interface K8sServicePort { name?: string; port: number; protocol?: string; targetPort?: number | string; nodePort?: number }
export interface K8sService {
  metadata: { namespace?: string; name: string; uid?: string };
  spec: {
    clusterIP?: string; type?: string; externalTrafficPolicy?: string;
    ports?: K8sServicePort[]; selector?: Record<string, string>;
  };
}
export interface K8sEndpoint {
  addresses: string[];
  conditions?: { ready?: boolean | null; serving?: boolean | null; terminating?: boolean | null };
  nodeName?: string;
  targetRef?: { kind?: string; namespace?: string; name?: string; uid?: string };
}
export interface K8sEndpointSlice {
  metadata: { namespace?: string; name: string; labels?: Record<string, string> };
  addressType?: string;
  endpoints?: K8sEndpoint[] | null;
  ports?: Array<{ name?: string | null; port?: number | null; protocol?: string | null }> | null;
}

export interface Endpoint {
  ip: string;
  port: number;
  ready: boolean;
  serving: boolean;
  terminating: boolean;
  local: boolean;
  pod: string | null;
}

export interface ServicePort {
  namespace: string;
  name: string;
  /** port name ("" when unnamed) */
  portName: string;
  protocol: 'tcp' | 'udp' | 'sctp';
  clusterIP: string;
  port: number;
  nodePort: number | null;
  externalLocal: boolean;
  /** all endpoints known for this port, sorted by ip */
  endpoints: Endpoint[];
}

/** "ns/name:port" (kube-proxy's ServicePortName.String()) */
export function servicePortNameString(sp: Pick<ServicePort, 'namespace' | 'name' | 'portName'>): string {
  return `${sp.namespace}/${sp.name}${sp.portName ? ':' + sp.portName : ''}`;
}

/** RFC 4648 base32 with padding, as Go's base32.StdEncoding. */
export function base32(buf: Uint8Array): string {
  const A = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
  let bits = 0, v = 0, out = '';
  for (const x of buf) {
    v = ((v << 8) | x) & 0xffff;
    bits += 8;
    while (bits >= 5) { out += A[(v >>> (bits - 5)) & 31]; bits -= 5; }
  }
  if (bits > 0) out += A[(v << (5 - bits)) & 31];
  while (out.length % 8) out += '=';
  return out;
}

export function sha256b32(s: string): string {
  return base32(createHash('sha256').update(s).digest());
}

/**
 * Build the service ports from the API objects (deterministic order: namespace, name, port name).
 * Slices are matched to services by the kubernetes.io/service-name label.
 */
export function buildServicePorts(services: K8sService[], slices: K8sEndpointSlice[], nodeName: string): ServicePort[] {
  const out: ServicePort[] = [];
  for (const svc of services) {
    const ns = svc.metadata.namespace ?? 'default';
    const ip = svc.spec.clusterIP;
    if (!ip || ip === 'None') continue;
    const mySlices = slices.filter((s) => (s.metadata.namespace ?? 'default') === ns
      && s.metadata.labels?.['kubernetes.io/service-name'] === svc.metadata.name
      && (s.addressType ?? 'IPv4') === 'IPv4');
    for (const p of svc.spec.ports ?? []) {
      const portName = p.name ?? '';
      const protocol = (p.protocol ?? 'TCP').toLowerCase() as ServicePort['protocol'];
      const eps = new Map<string, Endpoint>();
      for (const sl of mySlices) {
        const sp = (sl.ports ?? []).find((x) => (x.name ?? '') === portName && (x.protocol ?? 'TCP').toLowerCase() === protocol);
        if (!sp || sp.port == null) continue;
        for (const e of sl.endpoints ?? []) {
          const addr = e.addresses?.[0];
          if (!addr) continue;
          const c = e.conditions ?? {};
          // nil ready means ready; nil serving means = ready; nil terminating means false (discovery/v1 semantics)
          const ready = c.ready == null ? true : c.ready;
          const serving = c.serving == null ? ready : c.serving;
          const terminating = c.terminating == null ? false : c.terminating;
          const key = `${addr}:${sp.port}`;
          eps.set(key, {
            ip: addr, port: sp.port, ready, serving, terminating,
            local: e.nodeName === nodeName,
            pod: e.targetRef?.name ? `${e.targetRef.namespace ?? ns}/${e.targetRef.name}` : null,
          });
        }
      }
      out.push({
        namespace: ns, name: svc.metadata.name, portName, protocol, clusterIP: ip, port: p.port,
        nodePort: (svc.spec.type === 'NodePort' || svc.spec.type === 'LoadBalancer') && p.nodePort ? p.nodePort : null,
        externalLocal: svc.spec.externalTrafficPolicy === 'Local',
        endpoints: [...eps.values()].sort((a, b) => cmpIp(a.ip, b.ip) || a.port - b.port),
      });
    }
  }
  return out.sort((a, b) => a.namespace.localeCompare(b.namespace) || a.name.localeCompare(b.name)
    || a.portName.localeCompare(b.portName) || a.protocol.localeCompare(b.protocol));
}

function cmpIp(a: string, b: string): number {
  const pa = a.split('.').map(Number), pb = b.split('.').map(Number);
  for (let i = 0; i < 4; i++) if (pa[i] !== pb[i]) return (pa[i] ?? 0) - (pb[i] ?? 0);
  return 0;
}

/** kube-proxy's CategorizeEndpoints (ProxyTerminatingEndpoints on, no topology hints). */
export function categorize(sp: ServicePort): { cluster: Endpoint[]; local: Endpoint[] } {
  const pick = (eps: Endpoint[]) => {
    const ready = eps.filter((e) => e.ready);
    if (ready.length) return ready;
    return eps.filter((e) => e.serving && e.terminating);
  };
  return { cluster: pick(sp.endpoints), local: pick(sp.endpoints.filter((e) => e.local)) };
}

/** One endpoint as "ip:port" */
export const epKey = (e: Pick<Endpoint, 'ip' | 'port'>): string => `${e.ip}:${e.port}`;

/** The endpoints each service port routes to (cluster + local paths), for sync diffs: "svc|ip:port". */
export function routedEndpoints(sps: ServicePort[]): Set<string> {
  const s = new Set<string>();
  for (const sp of sps) {
    const { cluster, local } = categorize(sp);
    for (const e of cluster) s.add(`${servicePortNameString(sp)}|${epKey(e)}`);
    if (sp.externalLocal) for (const e of local) s.add(`${servicePortNameString(sp)}|${epKey(e)}`);
  }
  return s;
}
