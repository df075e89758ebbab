/**
 * The ReplicaSet controller: keeps spec.replicas active pods (<rs>-<5 random>) with ownerReferences and
 * the template's labels/annotations/spec; scales down by deleting gracefully (the pod's own grace
 * period) the pods Kubernetes would pick first: unscheduled, then pending, then not ready, then the
 * most recently ready, then the newest; keeps status (replicas, ready, available, observedGeneration).
 */
import type { Store } from '../apiserver/store.js';
import { clone, type Obj } from '../apiserver/util.js';
import { Debouncer, isActivePod, isControlledBy, isPodReady, ownerRef, podReadySinceMs, recordEvent, type Controller } from './common.js';

const PHASE_RANK: Record<string, number> = { Pending: 0, Unknown: 1, Running: 2 };

/** Compare like controller.ActivePods: the pod that sorts first is deleted first. */
export function compareForDeletion(a: Obj, b: Obj): number {
  const sa = a.spec?.nodeName ? 1 : 0, sb = b.spec?.nodeName ? 1 : 0;
  if (sa !== sb) return sa - sb;
  const pa = PHASE_RANK[a.status?.phase ?? 'Pending'] ?? 0, pb = PHASE_RANK[b.status?.phase ?? 'Pending'] ?? 0;
  if (pa !== pb) return pa - pb;
  const ra = isPodReady(a) ? 1 : 0, rb = isPodReady(b) ? 1 : 0;
  if (ra !== rb) return ra - rb;
  if (ra && rb) {
    const ta = podReadySinceMs(a) ?? 0, tb = podReadySinceMs(b) ?? 0;
    if (ta !== tb) return tb - ta; // ready for less time first
  }
  const restarts = (p: Obj) => (p.status?.containerStatuses ?? []).reduce((n: number, c: Obj) => Math.max(n, c.restartCount ?? 0), 0);
  if (restarts(a) !== restarts(b)) return restarts(b) - restarts(a);
  const ca = Date.parse(a.metadata.creationTimestamp ?? '') || 0, cb = Date.parse(b.metadata.creationTimestamp ?? '') || 0;
  if (ca !== cb) return cb - ca; // newer first
  return String(b.metadata.name).localeCompare(String(a.metadata.name));
}

export function isPodAvailable(p: Obj, minReadySeconds: number, nowMs = Date.now()): boolean {
  if (!isPodReady(p)) return false;
  if (!minReadySeconds) return true;
  const since = podReadySinceMs(p);
  return since !== undefined && since + minReadySeconds * 1000 <= nowMs;
}

export function startReplicaSetController(store: Store): Controller {
  let recheck: NodeJS.Timeout | undefined;
  const run = () => {
    const pods = store.list('pods').items;
    for (const rs of store.list('replicasets').items) {
      const ns = rs.metadata.namespace;
      const owned = pods.filter((p) => p.metadata.namespace === ns && isControlledBy(p, rs));
      let active = owned.filter(isActivePod);
      const want = rs.spec.replicas ?? 1;
      if (active.length < want) {
        for (let i = active.length; i < want; i++) {
          const tpl = rs.spec.template ?? {};
          const pod = store.create('pods', {
            metadata: {
              generateName: `${rs.metadata.name}-`, namespace: ns,
              labels: clone(tpl.metadata?.labels ?? {}),
              ...(tpl.metadata?.annotations ? { annotations: clone(tpl.metadata.annotations) } : {}),
              ownerReferences: [ownerRef(rs)],
            },
            spec: clone(tpl.spec ?? {}),
          }, ns);
          active.push(pod);
          recordEvent(store, rs, 'Normal', 'SuccessfulCreate', `Created pod: ${pod.metadata.name}`, 'replicaset-controller');
        }
      } else if (active.length > want) {
        const victims = [...active].sort(compareForDeletion).slice(0, active.length - want);
        for (const v of victims) {
          try {
            store.delete('pods', ns, v.metadata.name);
            recordEvent(store, rs, 'Normal', 'SuccessfulDelete', `Deleted pod: ${v.metadata.name}`, 'replicaset-controller');
          } catch (e) {
            process.stderr.write(`lab replicaset controller: delete ${ns}/${v.metadata.name}: ${(e as Error).message}\n`);
          }
        }
        const gone = new Set(victims.map((v) => v.metadata.uid));
        active = active.filter((p) => !gone.has(p.metadata.uid));
      }
      // re-read the pods we count so status reflects what is stored now
      const current = active.map((p) => store.get('pods', ns, p.metadata.name)).filter((p): p is Obj => !!p && isActivePod(p));
      const minReady = rs.spec.minReadySeconds ?? 0;
      const labelsMatch = (p: Obj) => Object.entries(rs.spec.template?.metadata?.labels ?? {}).every(([k, v]) => p.metadata.labels?.[k] === v);
      const status = {
        replicas: current.length,
        fullyLabeledReplicas: current.filter(labelsMatch).length,
        readyReplicas: current.filter(isPodReady).length,
        availableReplicas: current.filter((p) => isPodAvailable(p, minReady)).length,
        observedGeneration: rs.metadata.generation,
      };
      if (minReady > 0 && status.readyReplicas > status.availableReplicas && !recheck) {
        recheck = setTimeout(() => { recheck = undefined; d.kick(); }, minReady * 1000 + 50);
      }
      store.mutate('replicasets', ns, rs.metadata.name, (o) => {
        o.status = { ...(o.status ?? {}), ...status };
      });
    }
  };
  const d = new Debouncer('replicaset', run, 0);
  const unsub = store.subscribe((c) => { if (c.resource === 'pods' || c.resource === 'replicasets') d.kick(); });
  d.kick();
  return { stop() { unsub(); d.stop(); if (recheck) clearTimeout(recheck); } };
}
