/** The scheduler: binds every new pod to the lab's single node, like a real bind (spec.nodeName + PodScheduled). */
import type { Store } from '../apiserver/store.js';
import { rfc3339, type Obj } from '../apiserver/util.js';
import { Debouncer, recordEvent, type Controller } from './common.js';

export function startScheduler(store: Store, nodeName: string = store.nodeName): Controller {
  const run = () => {
    for (const p of store.list('pods').items) {
      if (p.spec?.nodeName || p.metadata.deletionTimestamp) continue;
      if ((p.spec?.schedulerName ?? 'default-scheduler') !== 'default-scheduler') continue;
      const bound = store.mutate('pods', p.metadata.namespace, p.metadata.name, (o: Obj) => {
        o.spec.nodeName = nodeName;
        o.status = o.status ?? {};
        const conds: Obj[] = (o.status.conditions = (o.status.conditions ?? []).filter((c: Obj) => c.type !== 'PodScheduled'));
        conds.unshift({ type: 'PodScheduled', status: 'True', lastProbeTime: null, lastTransitionTime: rfc3339() });
      });
      if (bound) recordEvent(store, bound, 'Normal', 'Scheduled', `Successfully assigned ${p.metadata.namespace}/${p.metadata.name} to ${nodeName}`, 'default-scheduler');
    }
  };
  const d = new Debouncer('scheduler', run, 0);
  const unsub = store.subscribe((c) => { if (c.resource === 'pods' && c.type === 'ADDED') d.kick(); });
  d.kick();
  return { stop() { unsub(); d.stop(); } };
}

/**
 * "Killing" events when a pod starts terminating (the kubelet's "Stopping container X"), so the event
 * stream shows the same transitions as a real cluster. Turn off when the node side records its own.
 */
export function startKillingEvents(store: Store, nodeName: string = store.nodeName): Controller {
  const unsub = store.subscribe((c) => {
    if (c.resource !== 'pods' || c.type !== 'MODIFIED') return;
    if (!c.object.metadata.deletionTimestamp || c.old?.metadata.deletionTimestamp) return;
    const obj = c.object;
    setImmediate(() => {
      for (const ctr of obj.spec?.containers ?? []) {
        recordEvent(store, obj, 'Normal', 'Killing', `Stopping container ${ctr.name}`, 'kubelet', nodeName);
      }
    });
  });
  return { stop: unsub };
}
