/** The resources the lab API server serves, with what discovery and the store need to know. */
export interface ResourceDef {
  group: string; // '' for core
  version: string;
  resource: string; // plural, the store key
  singular: string;
  kind: string;
  namespaced: boolean;
  subresources: string[];
  shortNames?: string[];
  categories?: string[];
  /** spec changes bump metadata.generation */
  generation: boolean;
}

export const RESOURCES: ResourceDef[] = [
  { group: '', version: 'v1', resource: 'pods', singular: 'pod', kind: 'Pod', namespaced: true, subresources: ['status', 'binding'], shortNames: ['po'], categories: ['all'], generation: false },
  { group: '', version: 'v1', resource: 'services', singular: 'service', kind: 'Service', namespaced: true, subresources: ['status'], shortNames: ['svc'], categories: ['all'], generation: false },
  { group: '', version: 'v1', resource: 'events', singular: 'event', kind: 'Event', namespaced: true, subresources: [], shortNames: ['ev'], generation: false },
  { group: '', version: 'v1', resource: 'namespaces', singular: 'namespace', kind: 'Namespace', namespaced: false, subresources: ['status'], shortNames: ['ns'], generation: false },
  { group: '', version: 'v1', resource: 'nodes', singular: 'node', kind: 'Node', namespaced: false, subresources: ['status'], shortNames: ['no'], generation: false },
  { group: 'discovery.k8s.io', version: 'v1', resource: 'endpointslices', singular: 'endpointslice', kind: 'EndpointSlice', namespaced: true, subresources: [], generation: true },
  { group: 'apps', version: 'v1', resource: 'deployments', singular: 'deployment', kind: 'Deployment', namespaced: true, subresources: ['status'], shortNames: ['deploy'], categories: ['all'], generation: true },
  { group: 'policy', version: 'v1', resource: 'poddisruptionbudgets', singular: 'poddisruptionbudget', kind: 'PodDisruptionBudget', namespaced: true, subresources: ['status'], shortNames: ['pdb'], generation: true },
  { group: 'apps', version: 'v1', resource: 'replicasets', singular: 'replicaset', kind: 'ReplicaSet', namespaced: true, subresources: ['status'], shortNames: ['rs'], categories: ['all'], generation: true },
];

export function apiVersionOf(d: ResourceDef): string {
  return d.group ? `${d.group}/${d.version}` : d.version;
}

export function resourceDef(resource: string): ResourceDef {
  const d = RESOURCES.find((r) => r.resource === resource);
  if (!d) throw new Error(`unknown resource ${resource}`);
  return d;
}

export function findResource(group: string, version: string, resource: string): ResourceDef | undefined {
  return RESOURCES.find((r) => r.group === group && r.version === version && r.resource === resource);
}

export const API_GROUPS: { name: string; version: string }[] = [
  { name: 'apps', version: 'v1' },
  { name: 'discovery.k8s.io', version: 'v1' },
  { name: 'policy', version: 'v1' },
];
