/**
 * meta.k8s.io/v1 Table responses (what `kubectl get` asks for with `Accept: ...;as=Table`), with the
 * columns kubectl users expect for the kinds the lab serves. Pure.
 */
import type { ResourceDef } from './resources.js';
import type { Obj } from './util.js';

export function wantsTable(accept: string | undefined): boolean {
  return /as=Table/.test(accept ?? '');
}

function age(ts: string | undefined, now = Date.now()): string {
  if (!ts) return '<unknown>';
  const s = Math.max(0, Math.floor((now - Date.parse(ts)) / 1000));
  if (s < 120) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 10) return `${m}m${s % 60}s`;
  if (m < 180) return `${m}m`;
  const h = Math.floor(m / 60);
  return h < 48 ? `${h}h` : `${Math.floor(h / 24)}d`;
}

type Col = [name: string, type: string, priority: number, cell: (o: Obj) => string | number];

const ready = (o: Obj) => (o.status?.conditions ?? []).some((c: Obj) => c.type === 'Ready' && c.status === 'True');

function columns(d: ResourceDef): Col[] {
  const name: Col = ['Name', 'string', 0, (o) => o.metadata.name];
  const ageCol: Col = ['Age', 'string', 0, (o) => age(o.metadata.creationTimestamp)];
  switch (d.resource) {
    case 'pods':
      return [name,
        ['Ready', 'string', 0, (o) => { const n = (o.spec?.containers ?? []).length; return `${ready(o) ? n : 0}/${n}`; }],
        ['Status', 'string', 0, (o) => (o.metadata.deletionTimestamp ? 'Terminating' : o.status?.phase ?? 'Pending')],
        ['Restarts', 'string', 0, (o) => String((o.status?.containerStatuses ?? []).reduce((n: number, c: Obj) => n + (c.restartCount ?? 0), 0))],
        ageCol,
        ['IP', 'string', 1, (o) => o.status?.podIP ?? '<none>'],
        ['Node', 'string', 1, (o) => o.spec?.nodeName ?? '<none>']];
    case 'deployments':
      return [name,
        ['Ready', 'string', 0, (o) => `${o.status?.readyReplicas ?? 0}/${o.spec?.replicas ?? 0}`],
        ['Up-to-date', 'integer', 0, (o) => o.status?.updatedReplicas ?? 0],
        ['Available', 'integer', 0, (o) => o.status?.availableReplicas ?? 0], ageCol];
    case 'replicasets':
      return [name,
        ['Desired', 'integer', 0, (o) => o.spec?.replicas ?? 0],
        ['Current', 'integer', 0, (o) => o.status?.replicas ?? 0],
        ['Ready', 'integer', 0, (o) => o.status?.readyReplicas ?? 0], ageCol];
    case 'services':
      return [name,
        ['Type', 'string', 0, (o) => o.spec?.type ?? 'ClusterIP'],
        ['Cluster-IP', 'string', 0, (o) => o.spec?.clusterIP ?? '<none>'],
        ['External-IP', 'string', 0, () => '<none>'],
        ['Port(s)', 'string', 0, (o) => (o.spec?.ports ?? []).map((p: Obj) => `${p.port}${p.nodePort ? ':' + p.nodePort : ''}/${p.protocol ?? 'TCP'}`).join(',')], ageCol,
        ['Selector', 'string', 1, (o) => Object.entries(o.spec?.selector ?? {}).map(([k, v]) => `${k}=${v}`).join(',') || '<none>']];
    case 'endpointslices':
      return [name,
        ['AddressType', 'string', 0, (o) => o.addressType ?? ''],
        ['Ports', 'string', 0, (o) => (o.ports ?? []).map((p: Obj) => p.port).join(',') || '<unset>'],
        ['Endpoints', 'string', 0, (o) => (o.endpoints ?? []).map((e: Obj) => `${e.addresses?.[0]}${e.conditions?.terminating ? '(T)' : e.conditions?.ready ? '' : '(NR)'}`).join(',') || '<unset>'], ageCol];
    case 'events':
      return [['Last Seen', 'string', 0, (o) => age(o.lastTimestamp ?? o.eventTime)],
        ['Type', 'string', 0, (o) => o.type ?? ''],
        ['Reason', 'string', 0, (o) => o.reason ?? ''],
        ['Object', 'string', 0, (o) => `${String(o.involvedObject?.kind ?? '').toLowerCase()}/${o.involvedObject?.name ?? ''}`],
        ['Message', 'string', 0, (o) => o.message ?? '']];
    case 'nodes':
      return [name, ['Status', 'string', 0, (o) => (ready(o) ? 'Ready' : 'NotReady')], ['Roles', 'string', 0, () => '<none>'], ageCol,
        ['Version', 'string', 0, (o) => o.status?.nodeInfo?.kubeletVersion ?? '']];
    case 'namespaces':
      return [name, ['Status', 'string', 0, (o) => o.status?.phase ?? 'Active'], ageCol];
    default:
      return [name, ageCol];
  }
}

export function toTable(d: ResourceDef, objs: Obj[], resourceVersion?: string, includeColumns = true): Obj {
  const cols = columns(d);
  return {
    kind: 'Table',
    apiVersion: 'meta.k8s.io/v1',
    metadata: resourceVersion ? { resourceVersion } : {},
    ...(includeColumns ? { columnDefinitions: cols.map(([n, type, priority]) => ({ name: n, type, format: n === 'Name' ? 'name' : '', description: '', priority })) } : { columnDefinitions: null }),
    rows: objs.map((o) => ({
      cells: cols.map(([, , , cell]) => cell(o)),
      object: { kind: 'PartialObjectMetadata', apiVersion: 'meta.k8s.io/v1', metadata: o.metadata },
    })),
  };
}
