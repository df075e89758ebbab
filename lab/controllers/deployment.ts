/**
 * The Deployment controller (apps/v1, RollingUpdate and Recreate), following kube-controller-manager's
 * sync: ReplicaSets named <deploy>-<pod-template-hash>, the new one scaled up within maxSurge and the
 * old ones scaled down within maxUnavailable (percentages: surge rounds up, unavailable down; both 0
 * -> unavailable 1), revision annotations, ScalingReplicaSet events, and status (replicas,
 * updatedReplicas, readyReplicas, availableReplicas, unavailableReplicas, observedGeneration,
 * conditions Available/Progressing) from which `kubectl rollout status` judges completion.
 */
import type { Store } from '../apiserver/store.js';
import { canonicalJson, clone, deepEqual, fnv32a, rfc3339, safeEncodeString, type Obj } from '../apiserver/util.js';
import { Debouncer, isControlledBy, ownerRef, recordEvent, type Controller } from './common.js';

export const HASH_LABEL = 'pod-template-hash';
const REVISION = 'deployment.kubernetes.io/revision';

/** pod-template-hash of a Deployment's template (FNV-32a of its canonical JSON, safe-encoded like Kubernetes). */
export function podTemplateHash(template: Obj, collisionCount = 0): string {
  return safeEncodeString(String(fnv32a(canonicalJson(withoutHash(template)) + (collisionCount ? String(collisionCount) : ''))));
}

function withoutHash(template: Obj): Obj {
  const t = clone(template ?? {});
  if (t.metadata?.labels) {
    delete t.metadata.labels[HASH_LABEL];
  }
  return t;
}

/** Resolve an IntOrString like "25%" against a total: surge rounds up, unavailable rounds down. */
export function resolveIntOrPercent(v: number | string | undefined, total: number, roundUp: boolean, dflt: string): number {
  const x = v ?? dflt;
  if (typeof x === 'number') return x;
  const m = /^(\d+)%$/.exec(x);
  if (!m) {
    const n = Number(x);
    if (Number.isInteger(n)) return n;
    throw new Error(`invalid value for IntOrString: ${x}`);
  }
  const f = (Number(m[1]) * total) / 100;
  return roundUp ? Math.ceil(f) : Math.floor(f);
}

export function resolveFenceposts(d: Obj): { maxSurge: number; maxUnavailable: number } {
  const ru = d.spec?.strategy?.rollingUpdate ?? {};
  const replicas = d.spec?.replicas ?? 1;
  const maxSurge = resolveIntOrPercent(ru.maxSurge, replicas, true, '25%');
  let maxUnavailable = resolveIntOrPercent(ru.maxUnavailable, replicas, false, '25%');
  if (maxSurge === 0 && maxUnavailable === 0) maxUnavailable = 1;
  return { maxSurge, maxUnavailable };
}

const sumSpec = (rss: Obj[]) => rss.reduce((n, r) => n + (r.spec.replicas ?? 0), 0);
const sumStatus = (rss: Obj[], f: string) => rss.reduce((n, r) => n + (r.status?.[f] ?? 0), 0);

export function startDeploymentController(store: Store): Controller {
  const scale = (d: Obj, rs: Obj, to: number): Obj => {
    const from = rs.spec.replicas ?? 0;
    if (from === to) return rs;
    const { maxSurge } = resolveFenceposts(d);
    const out = store.mutate('replicasets', rs.metadata.namespace, rs.metadata.name, (o) => {
      o.spec.replicas = to;
      o.metadata.annotations = { ...(o.metadata.annotations ?? {}), 'deployment.kubernetes.io/desired-replicas': String(d.spec.replicas), 'deployment.kubernetes.io/max-replicas': String(d.spec.replicas + maxSurge) };
    }, 'main')!;
    recordEvent(store, d, 'Normal', 'ScalingReplicaSet', `Scaled ${to > from ? 'up' : 'down'} replica set ${rs.metadata.name} from ${from} to ${to}`, 'deployment-controller');
    return out;
  };

  const syncOne = (d: Obj) => {
    const ns = d.metadata.namespace;
    if (d.spec.paused) return;
    let rss = store.list('replicasets', { namespace: ns }).items.filter((r) => isControlledBy(r, d));
    const want = d.spec.replicas ?? 1;
    const tpl = withoutHash(d.spec.template);
    let newRS = rss.find((r) => deepEqual(withoutHash(r.spec.template), tpl));
    const maxRevision = rss.reduce((m, r) => Math.max(m, Number(r.metadata.annotations?.[REVISION] ?? 0)), 0);
    const { maxSurge, maxUnavailable } = resolveFenceposts(d);
    const recreate = d.spec.strategy?.type === 'Recreate';
    let progressReason: string | undefined;

    if (!newRS) {
      const hash = podTemplateHash(d.spec.template);
      const olds = rss;
      let replicas = want;
      if (!recreate && olds.length > 0) {
        const current = sumSpec(olds);
        replicas = Math.max(0, Math.min(want + maxSurge - current, want));
      } else if (recreate && olds.length > 0) replicas = 0;
      const template = clone(d.spec.template);
      template.metadata = template.metadata ?? {};
      template.metadata.labels = { ...(template.metadata.labels ?? {}), [HASH_LABEL]: hash };
      const selector = clone(d.spec.selector);
      selector.matchLabels = { ...(selector.matchLabels ?? {}), [HASH_LABEL]: hash };
      newRS = store.create('replicasets', {
        metadata: {
          name: `${d.metadata.name}-${hash}`, namespace: ns,
          labels: { ...(d.spec.template.metadata?.labels ?? {}), [HASH_LABEL]: hash },
          annotations: { [REVISION]: String(maxRevision + 1), 'deployment.kubernetes.io/desired-replicas': String(want), 'deployment.kubernetes.io/max-replicas': String(want + maxSurge) },
          ownerReferences: [ownerRef(d)],
        },
        spec: { replicas: 0, minReadySeconds: d.spec.minReadySeconds ?? 0, selector, template },
      }, ns);
      progressReason = 'NewReplicaSetCreated';
      if (replicas > 0) newRS = scale(d, newRS, replicas);
      rss = [...olds, newRS];
    } else if (Number(newRS.metadata.annotations?.[REVISION] ?? 0) < maxRevision) {
      newRS = store.mutate('replicasets', ns, newRS.metadata.name, (o) => {
        o.metadata.annotations = { ...(o.metadata.annotations ?? {}), [REVISION]: String(maxRevision + 1) };
      }, 'main')!;
    }
    const newName = newRS.metadata.name;
    let olds = rss.filter((r) => r.metadata.name !== newName);
    const replace = (r: Obj) => { olds = olds.map((o) => (o.metadata.name === r.metadata.name ? r : o)); };

    if (recreate) {
      for (const o of olds) if ((o.spec.replicas ?? 0) > 0) replace(scale(d, o, 0));
      const oldPodsLeft = store.list('pods', { namespace: ns }).items.some((p) => olds.some((o) => isControlledBy(p, o)));
      if (!oldPodsLeft && (newRS.spec.replicas ?? 0) !== want) newRS = scale(d, newRS, want);
    } else {
      // reconcileNewReplicaSet
      const cur = newRS.spec.replicas ?? 0;
      if (cur > want) newRS = scale(d, newRS, want);
      else if (cur < want) {
        const total = sumSpec(olds) + cur;
        const maxTotal = want + maxSurge;
        if (total < maxTotal) newRS = scale(d, newRS, cur + Math.min(maxTotal - total, want - cur));
      }
      // reconcileOldReplicaSets
      const oldCount = sumSpec(olds);
      if (oldCount > 0) {
        const all = sumSpec(olds) + (newRS.spec.replicas ?? 0);
        const minAvailable = want - maxUnavailable;
        const newUnavailable = (newRS.spec.replicas ?? 0) - (newRS.status?.availableReplicas ?? 0);
        let maxScaledDown = all - minAvailable - newUnavailable;
        if (maxScaledDown > 0) {
          // cleanupUnhealthyReplicas: old RSs' unavailable pods go first
          const byAge = [...olds].sort((a, b) => (Date.parse(a.metadata.creationTimestamp) - Date.parse(b.metadata.creationTimestamp)) || a.metadata.name.localeCompare(b.metadata.name));
          for (const o of byAge) {
            if (maxScaledDown <= 0) break;
            const unhealthy = (o.spec.replicas ?? 0) - (o.status?.availableReplicas ?? 0);
            if (unhealthy <= 0) continue;
            const down = Math.min(maxScaledDown, unhealthy);
            replace(scale(d, o, (o.spec.replicas ?? 0) - down));
            maxScaledDown -= down;
          }
          // scaleDownOldReplicaSetsForRollingUpdate
          const available = sumStatus([...olds, newRS], 'availableReplicas');
          if (available > minAvailable && maxScaledDown > 0) {
            const total = Math.min(available - minAvailable, maxScaledDown);
            let done = 0;
            for (const o of [...olds].sort((a, b) => (Date.parse(a.metadata.creationTimestamp) - Date.parse(b.metadata.creationTimestamp)) || a.metadata.name.localeCompare(b.metadata.name))) {
              if (done >= total) break;
              const cur2 = olds.find((x) => x.metadata.name === o.metadata.name)!;
              const r = cur2.spec.replicas ?? 0;
              if (r === 0) continue;
              const down = Math.min(r, total - done);
              replace(scale(d, cur2, r - down));
              done += down;
            }
          }
        }
      }
    }

    // status
    const all = [...olds, newRS];
    const updated = newRS.status?.replicas ?? 0;
    const replicas = sumStatus(all, 'replicas');
    const ready = sumStatus(all, 'readyReplicas');
    const available = sumStatus(all, 'availableReplicas');
    const complete = updated === want && replicas === want && available === want && (newRS.status?.observedGeneration ?? 0) >= (newRS.metadata.generation ?? 1);
    const now = rfc3339();
    store.mutate('deployments', ns, d.metadata.name, (o) => {
      const conds: Obj[] = clone(o.status?.conditions ?? []);
      const setCond = (type: string, status: string, reason: string, message: string) => {
        const i = conds.findIndex((c) => c.type === type);
        const prev = i >= 0 ? conds[i] : undefined;
        if (prev && prev.status === status && prev.reason === reason && prev.message === message) return;
        const c = { type, status, lastUpdateTime: now, lastTransitionTime: prev && prev.status === status ? prev.lastTransitionTime : now, reason, message };
        if (i >= 0) conds[i] = c; else conds.push(c);
      };
      if (available >= want - maxUnavailable) setCond('Available', 'True', 'MinimumReplicasAvailable', 'Deployment has minimum availability.');
      else setCond('Available', 'False', 'MinimumReplicasUnavailable', 'Deployment does not have minimum availability.');
      if (complete) setCond('Progressing', 'True', 'NewReplicaSetAvailable', `ReplicaSet "${newName}" has successfully progressed.`);
      else if (progressReason) setCond('Progressing', 'True', progressReason, `Created new replica set "${newName}"`);
      else setCond('Progressing', 'True', 'ReplicaSetUpdated', `ReplicaSet "${newName}" is progressing.`);
      conds.sort((a, b) => (a.type === 'Available' ? -1 : b.type === 'Available' ? 1 : 0));
      o.metadata.annotations = { ...(o.metadata.annotations ?? {}), [REVISION]: newRS.metadata.annotations?.[REVISION] ?? '1' };
      o.status = {
        observedGeneration: o.metadata.generation,
        replicas, updatedReplicas: updated, readyReplicas: ready, availableReplicas: available,
        unavailableReplicas: Math.max(0, sumSpec(all) - available),
        conditions: conds,
      };
    });
  };

  const run = () => {
    for (const d of store.list('deployments').items) syncOne(d);
  };
  const deb = new Debouncer('deployment', run, 0);
  const unsub = store.subscribe((c) => { if (c.resource === 'deployments' || c.resource === 'replicasets') deb.kick(); });
  deb.kick();
  return { stop() { unsub(); deb.stop(); } };
}

/** What `kubectl rollout status` checks, from the Deployment alone. */
export function rolloutComplete(d: Obj): boolean {
  const s = d.status ?? {};
  const want = d.spec?.replicas ?? 1;
  return (s.observedGeneration ?? 0) >= (d.metadata?.generation ?? 1)
    && (s.updatedReplicas ?? 0) === want
    && (s.replicas ?? 0) === (s.updatedReplicas ?? 0)
    && (s.availableReplicas ?? 0) === (s.updatedReplicas ?? 0);
}
