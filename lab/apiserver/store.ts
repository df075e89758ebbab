/**
 * The in-memory object store behind the lab API server: one global resourceVersion counter, uids,
 * creation timestamps, generations, defaulting, validation, graceful pod deletion and a bounded
 * history of changes that watches replay from. Controllers use it in-process; HTTP clients reach it
 * through server.ts.
 */
import { randomUUID } from 'node:crypto';
import { apiVersionOf, resourceDef, RESOURCES, type ResourceDef } from './resources.js';
import { applyPatch, PatchError, type PatchType } from './patch.js';
import { matchFields, matchLabels, type FieldRequirement, type LabelRequirement } from './selectors.js';
import { clone, deepEqual, randomSuffix, rfc3339, type Obj } from './util.js';

export type WatchEventType = 'ADDED' | 'MODIFIED' | 'DELETED';

export interface Change {
  rv: number;
  type: WatchEventType;
  resource: string;
  /** the object after the change (for DELETED: its last state, stamped with the deletion's resourceVersion) */
  object: Obj;
  /** the object before the change (MODIFIED/DELETED) */
  old?: Obj;
  /** wall-clock ms when it happened */
  at: number;
}

/** An API error that the server renders as a metav1.Status. */
export class ApiError extends Error {
  constructor(readonly code: number, readonly reason: string, message: string, readonly details?: Obj) {
    super(message);
    this.name = 'ApiError';
  }
  toStatus(): Obj {
    return { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message: this.message, reason: this.reason, ...(this.details ? { details: this.details } : {}), code: this.code };
  }
}

export const notFound = (d: ResourceDef, name: string) =>
  new ApiError(404, 'NotFound', `${d.resource}${d.group ? '.' + d.group : ''} "${name}" not found`, { name, group: d.group || undefined, kind: d.resource });

export interface StoreOptions {
  nodeName: string;
  nodeIP?: string;
  /** service ClusterIP allocation range, a /16 or /24 written as a.b.c.0/NN (default 10.96.0.0/16) */
  serviceCIDR?: string;
  /** changes kept for watch replay */
  historyLimit?: number;
  historyMaxAgeMs?: number;
}

export interface ListOptions {
  namespace?: string;
  labelSelector?: LabelRequirement[];
  fieldSelector?: FieldRequirement[];
}

export interface WriteOptions {
  /** 'status': only .status is taken from the object; 'main': .status is kept from the stored object;
   *  'all' (in-process default): both. */
  subresource?: 'status' | 'main' | 'all';
  /** reject with 409 when metadata.resourceVersion is set and stale (default true) */
  checkResourceVersion?: boolean;
}

const DNS1123_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const DNS1035_LABEL = /^[a-z]([-a-z0-9]*[a-z0-9])?$/;

export class Store {
  private rv = 1;
  private readonly objects = new Map<string, Map<string, Obj>>();
  private history: Change[] = [];
  /** a watch from R can be served iff R >= compactedRv */
  private compactedRv = 1;
  private readonly listeners = new Set<(c: Change) => void>();
  private readonly historyLimit: number;
  private readonly historyMaxAgeMs: number;
  private readonly usedClusterIPs = new Set<string>();
  private readonly usedNodePorts = new Set<number>();
  private readonly cidrBase: number[];
  private readonly cidrSize: number;
  readonly nodeName: string;

  constructor(readonly opts: StoreOptions) {
    this.nodeName = opts.nodeName;
    this.historyLimit = opts.historyLimit ?? 1000;
    this.historyMaxAgeMs = opts.historyMaxAgeMs ?? 5 * 60_000;
    for (const r of RESOURCES) this.objects.set(r.resource, new Map());
    const m = /^(\d+)\.(\d+)\.(\d+)\.(\d+)\/(\d+)$/.exec(opts.serviceCIDR ?? '10.96.0.0/16');
    if (!m) throw new Error(`bad serviceCIDR ${opts.serviceCIDR}`);
    this.cidrBase = [1, 2, 3, 4].map((i) => Number(m[i]));
    this.cidrSize = 2 ** (32 - Number(m[5]));
    for (const ns of ['default', 'kube-system', 'kube-public', 'kube-node-lease']) this.create('namespaces', { metadata: { name: ns } });
    this.create('nodes', {
      metadata: { name: opts.nodeName, labels: { 'kubernetes.io/hostname': opts.nodeName, 'kubernetes.io/os': 'linux' } },
      status: {
        conditions: [{ type: 'Ready', status: 'True', reason: 'KubeletReady', message: 'kubelet is posting ready status', lastHeartbeatTime: rfc3339(), lastTransitionTime: rfc3339() }],
        addresses: [...(opts.nodeIP ? [{ type: 'InternalIP', address: opts.nodeIP }] : []), { type: 'Hostname', address: opts.nodeName }],
        nodeInfo: { kubeletVersion: 'v1.31.0-rolltrace-lab', kubeProxyVersion: 'v1.31.0-rolltrace-lab', operatingSystem: 'linux', architecture: process.arch === 'x64' ? 'amd64' : process.arch },
      },
    });
  }

  /** The current global resourceVersion (as the string clients see). */
  resourceVersion(): string {
    return String(this.rv);
  }

  subscribe(fn: (c: Change) => void): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  // ------------------------------------------------------------------------------------------ reads

  get(resource: string, namespace: string | undefined, name: string): Obj | undefined {
    const o = this.objects.get(resource)!.get(this.key(resourceDef(resource), namespace, name));
    return o ? clone(o) : undefined;
  }

  list(resource: string, opts: ListOptions = {}): { items: Obj[]; resourceVersion: string } {
    const out: Obj[] = [];
    for (const o of this.objects.get(resource)!.values()) {
      if (this.matches(o, opts)) out.push(clone(o));
    }
    out.sort((a, b) => `${a.metadata.namespace ?? ''}/${a.metadata.name}`.localeCompare(`${b.metadata.namespace ?? ''}/${b.metadata.name}`));
    return { items: out, resourceVersion: this.resourceVersion() };
  }

  matches(o: Obj, opts: ListOptions): boolean {
    if (opts.namespace && o.metadata?.namespace !== opts.namespace) return false;
    if (opts.labelSelector && !matchLabels(opts.labelSelector, o.metadata?.labels)) return false;
    if (opts.fieldSelector && !matchFields(opts.fieldSelector, o)) return false;
    return true;
  }

  /** Changes after `rv` for replay, or 'expired' when they are no longer all retained. */
  changesSince(rv: number): Change[] | 'expired' {
    this.trimHistory();
    if (rv < this.compactedRv) return 'expired';
    return this.history.filter((c) => c.rv > rv);
  }

  /** Forget the history: every watch from an older resourceVersion now gets 410 Expired. */
  compact(): void {
    this.history = [];
    this.compactedRv = this.rv;
  }

  oldestWatchableRv(): number {
    return this.compactedRv;
  }

  // ----------------------------------------------------------------------------------------- writes

  create(resource: string, input: Obj, namespace?: string): Obj {
    const d = resourceDef(resource);
    const obj = clone(input);
    obj.metadata = obj.metadata ?? {};
    const meta = obj.metadata;
    if (d.namespaced) {
      const ns = namespace ?? meta.namespace ?? 'default';
      if (meta.namespace && meta.namespace !== ns) throw new ApiError(400, 'BadRequest', `the namespace of the provided object does not match the namespace sent on the request`);
      meta.namespace = ns;
      if (resource !== 'events' && !this.objects.get('namespaces')!.has(ns)) throw new ApiError(404, 'NotFound', `namespaces "${ns}" not found`, { name: ns, kind: 'namespaces' });
    } else delete meta.namespace;
    if (!meta.name && meta.generateName) {
      for (let i = 0; i < 10 && !meta.name; i++) {
        const n = `${meta.generateName}${randomSuffix(5)}`;
        if (!this.objects.get(resource)!.has(this.key(d, meta.namespace, n))) meta.name = n;
      }
    }
    if (!meta.name) throw this.invalid(d, '', 'metadata.name: Required value: name or generateName is required');
    this.validateName(d, meta.name);
    const key = this.key(d, meta.namespace, meta.name);
    if (this.objects.get(resource)!.has(key)) {
      throw new ApiError(409, 'AlreadyExists', `${d.resource}${d.group ? '.' + d.group : ''} "${meta.name}" already exists`, { name: meta.name, group: d.group || undefined, kind: d.resource });
    }
    obj.kind = d.kind;
    obj.apiVersion = apiVersionOf(d);
    meta.uid = randomUUID();
    meta.creationTimestamp = rfc3339();
    delete meta.deletionTimestamp;
    delete meta.deletionGracePeriodSeconds;
    if (d.generation) meta.generation = 1;
    this.applyDefaults(d, obj, true);
    this.validate(d, obj);
    meta.resourceVersion = String(++this.rv);
    this.objects.get(resource)!.set(key, obj);
    this.record({ rv: this.rv, type: 'ADDED', resource, object: clone(obj), at: Date.now() });
    return clone(obj);
  }

  update(resource: string, input: Obj, opts: WriteOptions = {}): Obj {
    const d = resourceDef(resource);
    const meta = input.metadata ?? {};
    const old = this.objects.get(resource)!.get(this.key(d, meta.namespace, meta.name ?? ''));
    if (!old) throw notFound(d, meta.name ?? '');
    if ((opts.checkResourceVersion ?? true) && meta.resourceVersion && meta.resourceVersion !== old.metadata.resourceVersion) {
      throw new ApiError(409, 'Conflict', `Operation cannot be fulfilled on ${d.resource}${d.group ? '.' + d.group : ''} "${meta.name}": the object has been modified; please apply your changes to the latest version and try again`, { name: meta.name, group: d.group || undefined, kind: d.resource });
    }
    const sub = opts.subresource ?? 'all';
    let obj: Obj;
    if (sub === 'status') {
      obj = clone(old);
      obj.status = clone(input.status);
    } else {
      obj = clone(input);
      obj.metadata = { ...clone(meta) };
      if (sub === 'main' && d.subresources.includes('status')) obj.status = clone(old.status);
    }
    // immutable metadata
    for (const k of ['name', 'namespace', 'uid', 'creationTimestamp', 'deletionTimestamp', 'deletionGracePeriodSeconds', 'generation']) {
      if (old.metadata[k] === undefined) delete obj.metadata[k];
      else obj.metadata[k] = old.metadata[k];
    }
    obj.kind = d.kind;
    obj.apiVersion = apiVersionOf(d);
    if (d.resource === 'services' && obj.spec && !obj.spec.clusterIP && old.spec?.clusterIP) obj.spec.clusterIP = old.spec.clusterIP;
    this.applyDefaults(d, obj, false);
    this.validate(d, obj, old);
    if (d.generation && !deepEqual(this.specOf(d, obj), this.specOf(d, old))) obj.metadata.generation = (old.metadata.generation ?? 1) + 1;
    obj.metadata.resourceVersion = old.metadata.resourceVersion;
    if (deepEqual(obj, old)) return clone(old); // no-op updates do not bump the resourceVersion
    return this.commitModified(d, obj, old);
  }

  patch(resource: string, namespace: string | undefined, name: string, type: PatchType, body: unknown, opts: WriteOptions = {}): Obj {
    const d = resourceDef(resource);
    const old = this.objects.get(resource)!.get(this.key(d, namespace, name));
    if (!old) throw notFound(d, name);
    let patched: Obj;
    try {
      patched = applyPatch(type, old, body);
    } catch (e) {
      if (e instanceof PatchError) throw new ApiError(422, 'Invalid', `${d.kind} "${name}" is invalid: ${e.message}`);
      throw e;
    }
    patched.metadata = patched.metadata ?? {};
    // a resourceVersion in the patch is a precondition; otherwise the patch applies to the current object
    if (patched.metadata.resourceVersion === undefined) patched.metadata.resourceVersion = old.metadata.resourceVersion;
    patched.metadata.name = name;
    patched.metadata.namespace = old.metadata.namespace;
    if (old.metadata.namespace === undefined) delete patched.metadata.namespace;
    return this.update(resource, patched, { subresource: opts.subresource ?? 'main', checkResourceVersion: true });
  }

  /**
   * Delete. Pods are deleted gracefully: the first delete sets deletionTimestamp = now + grace and
   * deletionGracePeriodSeconds and the pod stays; a delete with gracePeriodSeconds=0 (the kubelet's,
   * once the containers are gone) removes it. Every other kind is removed at once.
   */
  delete(resource: string, namespace: string | undefined, name: string, opts: { gracePeriodSeconds?: number; preconditions?: { uid?: string; resourceVersion?: string } } = {}): { object: Obj; removed: boolean } {
    const d = resourceDef(resource);
    const key = this.key(d, namespace, name);
    const old = this.objects.get(resource)!.get(key);
    if (!old) throw notFound(d, name);
    const pre = opts.preconditions ?? {};
    if ((pre.uid && pre.uid !== old.metadata.uid) || (pre.resourceVersion && pre.resourceVersion !== old.metadata.resourceVersion)) {
      throw new ApiError(409, 'Conflict', `Precondition failed: UID in precondition: ${pre.uid ?? ''}, UID in object meta: ${old.metadata.uid}`);
    }
    if (resource === 'namespaces' && name === 'default') throw new ApiError(403, 'Forbidden', 'namespaces "default" is forbidden: this namespace may not be deleted');
    if (resource === 'pods') {
      let grace = opts.gracePeriodSeconds ?? old.spec?.terminationGracePeriodSeconds ?? 30;
      if (!old.spec?.nodeName || old.status?.phase === 'Succeeded' || old.status?.phase === 'Failed') grace = 0;
      if (grace > 0) {
        const deadline = Date.now() + grace * 1000;
        if (old.metadata.deletionTimestamp && Date.parse(old.metadata.deletionTimestamp) <= deadline) return { object: clone(old), removed: false };
        const obj = clone(old);
        obj.metadata.deletionTimestamp = rfc3339(deadline);
        obj.metadata.deletionGracePeriodSeconds = grace;
        return { object: this.commitModified(d, obj, old), removed: false };
      }
    }
    this.objects.get(resource)!.delete(key);
    if (resource === 'services') {
      for (const ip of old.spec?.clusterIPs ?? []) this.usedClusterIPs.delete(ip);
      for (const p of old.spec?.ports ?? []) if (p.nodePort) this.usedNodePorts.delete(p.nodePort);
    }
    const last = clone(old);
    last.metadata.resourceVersion = String(++this.rv);
    this.record({ rv: this.rv, type: 'DELETED', resource, object: clone(last), old: clone(old), at: Date.now() });
    return { object: last, removed: true };
  }

  /** In-process read-modify-write: fn edits a copy; nothing is written when it changes nothing. */
  mutate(resource: string, namespace: string | undefined, name: string, fn: (o: Obj) => void, subresource: WriteOptions['subresource'] = 'all'): Obj | undefined {
    const cur = this.get(resource, namespace, name);
    if (!cur) return undefined;
    const next = clone(cur);
    fn(next);
    if (deepEqual(next, cur)) return cur;
    return this.update(resource, next, { subresource, checkResourceVersion: false });
  }

  // -------------------------------------------------------------------------------------- internals

  private commitModified(d: ResourceDef, obj: Obj, old: Obj): Obj {
    obj.metadata.resourceVersion = String(++this.rv);
    this.objects.get(d.resource)!.set(this.key(d, obj.metadata.namespace, obj.metadata.name), obj);
    this.record({ rv: this.rv, type: 'MODIFIED', resource: d.resource, object: clone(obj), old: clone(old), at: Date.now() });
    return clone(obj);
  }

  private record(c: Change): void {
    this.history.push(c);
    this.trimHistory();
    for (const l of [...this.listeners]) {
      try {
        l(c);
      } catch (e) {
        process.stderr.write(`lab apiserver: listener failed: ${(e as Error).stack ?? e}\n`);
      }
    }
  }

  private trimHistory(): void {
    const minAt = Date.now() - this.historyMaxAgeMs;
    while (this.history.length > this.historyLimit || (this.history.length > 0 && this.history[0]!.at < minAt)) {
      this.compactedRv = this.history.shift()!.rv;
    }
  }

  private key(d: ResourceDef, namespace: string | undefined, name: string): string {
    return d.namespaced ? `${namespace ?? 'default'}/${name}` : name;
  }

  private specOf(d: ResourceDef, o: Obj): unknown {
    if (d.resource === 'endpointslices') return { e: o.endpoints, p: o.ports, a: o.addressType };
    return o.spec;
  }

  private invalid(d: ResourceDef, name: string, msg: string): ApiError {
    return new ApiError(422, 'Invalid', `${d.kind} "${name}" is invalid: ${msg}`, { name, group: d.group || undefined, kind: d.kind });
  }

  private validateName(d: ResourceDef, name: string): void {
    const re = d.resource === 'services' || d.resource === 'namespaces' ? DNS1035_LABEL : DNS1123_SUBDOMAIN;
    const max = d.resource === 'services' || d.resource === 'namespaces' ? 63 : 253;
    if (!re.test(name) || name.length > max) {
      throw this.invalid(d, name, `metadata.name: Invalid value: "${name}": a lowercase RFC 1123 name must consist of lower case alphanumeric characters or '-'`);
    }
  }

  private validate(d: ResourceDef, o: Obj, old?: Obj): void {
    const name = o.metadata.name;
    for (const [k, v] of Object.entries(o.metadata.labels ?? {})) {
      if (typeof v !== 'string') throw this.invalid(d, name, `metadata.labels: Invalid value: "${k}": label values must be strings`);
    }
    switch (d.resource) {
      case 'pods':
        if (!Array.isArray(o.spec?.containers) || o.spec.containers.length === 0) throw this.invalid(d, name, 'spec.containers: Required value');
        for (const c of o.spec.containers) if (!c.name) throw this.invalid(d, name, 'spec.containers[].name: Required value');
        if (old && old.spec?.nodeName && o.spec.nodeName !== old.spec.nodeName) throw this.invalid(d, name, 'spec: Forbidden: pod updates may not change fields other than image, activeDeadlineSeconds, tolerations');
        break;
      case 'deployments':
      case 'replicasets': {
        const sel = o.spec?.selector;
        if (!sel || (!sel.matchLabels && !sel.matchExpressions)) throw this.invalid(d, name, 'spec.selector: Required value');
        const labels = o.spec?.template?.metadata?.labels ?? {};
        for (const [k, v] of Object.entries(sel.matchLabels ?? {})) {
          if (labels[k] !== v) throw this.invalid(d, name, 'spec.template.metadata.labels: Invalid value: `selector` does not match template `labels`');
        }
        if (!Array.isArray(o.spec?.template?.spec?.containers) || o.spec.template.spec.containers.length === 0) throw this.invalid(d, name, 'spec.template.spec.containers: Required value');
        if (typeof o.spec.replicas !== 'number' || o.spec.replicas < 0) throw this.invalid(d, name, 'spec.replicas: Invalid value: must be greater than or equal to 0');
        if (old && !deepEqual(old.spec?.selector, sel)) throw this.invalid(d, name, 'spec.selector: Invalid value: field is immutable');
        break;
      }
      case 'services':
        for (const p of o.spec?.ports ?? []) {
          if (typeof p.port !== 'number' || p.port < 1 || p.port > 65535) throw this.invalid(d, name, `spec.ports[].port: Invalid value: ${p.port}`);
        }
        if (old && old.spec?.clusterIP && o.spec?.clusterIP !== old.spec.clusterIP) throw this.invalid(d, name, 'spec.clusterIPs[0]: Invalid value: field is immutable');
        break;
      case 'endpointslices':
        if (!o.addressType) throw this.invalid(d, name, 'addressType: Required value');
        break;
    }
  }

  private applyDefaults(d: ResourceDef, o: Obj, creating: boolean): void {
    switch (d.resource) {
      case 'pods':
        o.spec = o.spec ?? {};
        defaultPodSpec(o.spec);
        o.status = o.status ?? {};
        if (creating) o.status = { phase: 'Pending', qosClass: 'BestEffort', ...o.status };
        break;
      case 'deployments':
        o.spec = o.spec ?? {};
        o.spec.replicas = o.spec.replicas ?? 1;
        o.spec.strategy = o.spec.strategy ?? { type: 'RollingUpdate' };
        if ((o.spec.strategy.type ?? 'RollingUpdate') === 'RollingUpdate') {
          o.spec.strategy.type = 'RollingUpdate';
          o.spec.strategy.rollingUpdate = { maxUnavailable: '25%', maxSurge: '25%', ...(o.spec.strategy.rollingUpdate ?? {}) };
        }
        o.spec.revisionHistoryLimit = o.spec.revisionHistoryLimit ?? 10;
        o.spec.progressDeadlineSeconds = o.spec.progressDeadlineSeconds ?? 600;
        o.spec.minReadySeconds = o.spec.minReadySeconds ?? 0;
        defaultPodTemplate(o.spec);
        o.status = o.status ?? {};
        break;
      case 'replicasets':
        o.spec = o.spec ?? {};
        o.spec.replicas = o.spec.replicas ?? 1;
        o.spec.minReadySeconds = o.spec.minReadySeconds ?? 0;
        defaultPodTemplate(o.spec);
        o.status = o.status ?? { replicas: 0 };
        break;
      case 'services': {
        const s = (o.spec = o.spec ?? {});
        s.type = s.type ?? 'ClusterIP';
        s.sessionAffinity = s.sessionAffinity ?? 'None';
        s.internalTrafficPolicy = s.internalTrafficPolicy ?? 'Cluster';
        if (s.type === 'NodePort' || s.type === 'LoadBalancer') s.externalTrafficPolicy = s.externalTrafficPolicy ?? 'Cluster';
        for (const p of s.ports ?? []) {
          p.protocol = p.protocol ?? 'TCP';
          p.targetPort = p.targetPort ?? p.port;
          if ((s.type === 'NodePort' || s.type === 'LoadBalancer') && !p.nodePort && creating) p.nodePort = this.allocNodePort();
          else if (p.nodePort && creating) this.usedNodePorts.add(p.nodePort);
        }
        if (creating && s.clusterIP !== 'None') {
          if (!s.clusterIP) s.clusterIP = this.allocClusterIP();
          else if (this.usedClusterIPs.has(s.clusterIP)) throw this.invalid(d, o.metadata.name, `spec.clusterIPs: Invalid value: ["${s.clusterIP}"]: failed to allocate IP ${s.clusterIP}: provided IP is already allocated`);
          else this.usedClusterIPs.add(s.clusterIP);
        }
        if (s.clusterIP) s.clusterIPs = [s.clusterIP];
        s.ipFamilies = s.ipFamilies ?? ['IPv4'];
        s.ipFamilyPolicy = s.ipFamilyPolicy ?? 'SingleStack';
        o.status = o.status ?? { loadBalancer: {} };
        break;
      }
      case 'namespaces':
        o.metadata.labels = { 'kubernetes.io/metadata.name': o.metadata.name, ...(o.metadata.labels ?? {}) };
        o.spec = o.spec ?? { finalizers: ['kubernetes'] };
        o.status = o.status ?? { phase: 'Active' };
        break;
    }
  }

  private allocClusterIP(): string {
    const base = ((this.cidrBase[0]! << 24) | (this.cidrBase[1]! << 16) | (this.cidrBase[2]! << 8) | this.cidrBase[3]!) >>> 0;
    for (let i = 10; i < this.cidrSize - 1; i++) {
      const n = (base + i) >>> 0;
      const ip = [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join('.');
      if (!this.usedClusterIPs.has(ip)) {
        this.usedClusterIPs.add(ip);
        return ip;
      }
    }
    throw new ApiError(500, 'InternalError', 'service CIDR exhausted');
  }

  private allocNodePort(): number {
    for (let p = 30000; p <= 32767; p++) {
      if (!this.usedNodePorts.has(p)) {
        this.usedNodePorts.add(p);
        return p;
      }
    }
    throw new ApiError(500, 'InternalError', 'node port range exhausted');
  }
}

/** A workload's pod template: metadata and spec present, spec defaulted. */
function defaultPodTemplate(spec: Obj): void {
  spec.template = spec.template ?? {};
  spec.template.metadata = spec.template.metadata ?? {};
  spec.template.spec = spec.template.spec ?? {};
  defaultPodSpec(spec.template.spec);
}

/** The API server's defaults for a pod spec (the fields the lab cares about). */
export function defaultPodSpec(spec: Obj): void {
  spec.terminationGracePeriodSeconds = spec.terminationGracePeriodSeconds ?? 30;
  spec.restartPolicy = spec.restartPolicy ?? 'Always';
  spec.dnsPolicy = spec.dnsPolicy ?? 'ClusterFirst';
  spec.schedulerName = spec.schedulerName ?? 'default-scheduler';
  spec.securityContext = spec.securityContext ?? {};
  for (const c of spec.containers ?? []) {
    c.terminationMessagePath = c.terminationMessagePath ?? '/dev/termination-log';
    c.terminationMessagePolicy = c.terminationMessagePolicy ?? 'File';
    c.imagePullPolicy = c.imagePullPolicy ?? (String(c.image ?? '').endsWith(':latest') || !String(c.image ?? '').includes(':') ? 'Always' : 'IfNotPresent');
    c.resources = c.resources ?? {};
    for (const p of c.ports ?? []) p.protocol = p.protocol ?? 'TCP';
    for (const probeName of ['readinessProbe', 'livenessProbe', 'startupProbe']) {
      const pr = c[probeName];
      if (!pr) continue;
      pr.timeoutSeconds = pr.timeoutSeconds ?? 1;
      pr.periodSeconds = pr.periodSeconds ?? 10;
      pr.successThreshold = pr.successThreshold ?? 1;
      pr.failureThreshold = pr.failureThreshold ?? 3;
      if (pr.httpGet) pr.httpGet.scheme = pr.httpGet.scheme ?? 'HTTP';
    }
  }
}
