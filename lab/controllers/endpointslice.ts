/**
 * The EndpointSlice controller (discovery.k8s.io/v1, KEP-1672 conditions): for every Service with a
 * selector, one slice <svc>-<5 random> labelled kubernetes.io/service-name and
 * endpointslice.kubernetes.io/managed-by, with an endpoint per selected pod that has an IP:
 * ready = Ready and not terminating, serving = Ready, terminating = deletionTimestamp set. A pod whose
 * object is gone loses its endpoint. Changes are applied `delayMs` after the first pod/service change,
 * batching every change that arrives meanwhile; the slice carries
 * endpoints.kubernetes.io/last-change-trigger-time like the real controller.
 */
import type { Store } from '../apiserver/store.js';
import { matchLabels, selectorFromMap } from '../apiserver/selectors.js';
import { deepEqual, type Obj } from '../apiserver/util.js';
import { Debouncer, isPodReady, isTerminal, ownerRef, type Controller } from './common.js';

export const MANAGED_BY = 'endpointslice-controller.k8s.io';
const TRIGGER = 'endpoints.kubernetes.io/last-change-trigger-time';

function resolveTargetPort(port: Obj, pods: Obj[]): number | undefined {
  const tp = port.targetPort ?? port.port;
  if (typeof tp === 'number') return tp;
  if (/^\d+$/.test(String(tp))) return Number(tp);
  for (const p of pods) {
    for (const c of p.spec?.containers ?? []) {
      const hit = (c.ports ?? []).find((cp: Obj) => cp.name === tp && (cp.protocol ?? 'TCP') === (port.protocol ?? 'TCP'));
      if (hit) return hit.containerPort;
    }
  }
  return undefined;
}

/** The desired endpoints and ports of a Service's slice (pure). */
export function desiredSlice(svc: Obj, podsInNamespace: Obj[]): { endpoints: Obj[]; ports: Obj[] } {
  const sel = selectorFromMap(svc.spec?.selector);
  const pods = podsInNamespace
    .filter((p) => matchLabels(sel, p.metadata.labels) && p.status?.podIP && !isTerminal(p))
    .sort((a, b) => a.metadata.name.localeCompare(b.metadata.name));
  const endpoints = pods.map((p) => {
    const ready = isPodReady(p);
    const terminating = !!p.metadata.deletionTimestamp;
    return {
      addresses: [p.status.podIP],
      conditions: { ready: ready && !terminating, serving: ready, terminating },
      ...(p.spec?.nodeName ? { nodeName: p.spec.nodeName } : {}),
      targetRef: { kind: 'Pod', namespace: p.metadata.namespace, name: p.metadata.name, uid: p.metadata.uid },
    };
  });
  const ports: Obj[] = [];
  for (const sp of svc.spec?.ports ?? []) {
    const port = resolveTargetPort(sp, pods);
    if (port === undefined) continue;
    ports.push({ name: sp.name ?? '', port, protocol: sp.protocol ?? 'TCP', ...(sp.appProtocol ? { appProtocol: sp.appProtocol } : {}) });
  }
  return { endpoints, ports };
}

export function startEndpointSliceController(store: Store, opts: { delayMs?: number } = {}): Controller {
  const dirty = new Set<string>(); // namespaces
  let firstTrigger: number | undefined;
  const run = () => {
    const namespaces = [...dirty];
    dirty.clear();
    const triggerAt = firstTrigger ?? Date.now();
    firstTrigger = undefined;
    for (const ns of namespaces) {
      const pods = store.list('pods', { namespace: ns }).items;
      const services = store.list('services', { namespace: ns }).items;
      const slices = store.list('endpointslices', { namespace: ns }).items.filter((s) => s.metadata.labels?.['endpointslice.kubernetes.io/managed-by'] === MANAGED_BY);
      for (const svc of services) {
        if (!svc.spec?.selector || Object.keys(svc.spec.selector).length === 0) continue;
        const mine = slices.filter((s) => s.metadata.labels?.['kubernetes.io/service-name'] === svc.metadata.name);
        const want = desiredSlice(svc, pods);
        const labels = { ...(svc.metadata.labels ?? {}), 'kubernetes.io/service-name': svc.metadata.name, 'endpointslice.kubernetes.io/managed-by': MANAGED_BY };
        const trigger = new Date(triggerAt).toISOString();
        if (mine.length === 0) {
          store.create('endpointslices', {
            metadata: { generateName: `${svc.metadata.name}-`, namespace: ns, labels, annotations: { [TRIGGER]: trigger }, ownerReferences: [ownerRef(svc)] },
            addressType: 'IPv4', endpoints: want.endpoints, ports: want.ports,
          }, ns);
          continue;
        }
        const [keep, ...extra] = mine;
        for (const x of extra) store.delete('endpointslices', ns, x.metadata.name);
        if (deepEqual(keep!.endpoints ?? [], want.endpoints) && deepEqual(keep!.ports ?? [], want.ports) && deepEqual(keep!.metadata.labels, labels)) continue;
        store.mutate('endpointslices', ns, keep!.metadata.name, (o) => {
          o.endpoints = want.endpoints;
          o.ports = want.ports;
          o.metadata.labels = labels;
          o.metadata.annotations = { ...(o.metadata.annotations ?? {}), [TRIGGER]: trigger };
        });
      }
      // slices whose Service is gone (the garbage collector's job in a real cluster)
      for (const s of slices) {
        const svcName = s.metadata.labels?.['kubernetes.io/service-name'];
        const svc = services.find((x) => x.metadata.name === svcName);
        if (!svc || !svc.spec?.selector) store.delete('endpointslices', ns, s.metadata.name);
      }
    }
  };
  const deb = new Debouncer('endpointslice', run, opts.delayMs ?? 30);
  const unsub = store.subscribe((c) => {
    if (c.resource !== 'pods' && c.resource !== 'services' && c.resource !== 'endpointslices') return;
    if (c.resource === 'endpointslices' && c.object.metadata.labels?.['endpointslice.kubernetes.io/managed-by'] !== MANAGED_BY) return;
    if (c.resource === 'endpointslices' && c.type !== 'DELETED') return; // our own writes
    dirty.add(c.object.metadata.namespace);
    firstTrigger = firstTrigger ?? c.at;
    deb.kick();
  });
  for (const n of store.list('namespaces').items) dirty.add(n.metadata.name);
  deb.kick();
  return { stop() { unsub(); deb.stop(); } };
}
