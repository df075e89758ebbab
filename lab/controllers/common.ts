/** Shared bits of the lab's in-process controllers. */
import { randomBytes } from 'node:crypto';
import type { Store } from '../apiserver/store.js';
import { microTime, rfc3339, type Obj } from '../apiserver/util.js';

/** Runs `fn` once, `delayMs` after the first kick; kicks while it is pending are batched into that run. */
export class Debouncer {
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;
  constructor(private readonly name: string, private readonly fn: () => void, private readonly delayMs = 0) {}
  kick(delayMs = this.delayMs): void {
    if (this.stopped || this.timer) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      if (this.stopped) return;
      try {
        this.fn();
      } catch (e) {
        process.stderr.write(`lab ${this.name} controller: ${(e as Error).stack ?? e}\n`);
        this.kick(100);
      }
    }, delayMs);
  }
  stop(): void {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
  }
}

export interface Controller {
  stop(): void;
}

export function isPodReady(p: Obj): boolean {
  return (p.status?.conditions ?? []).some((c: Obj) => c.type === 'Ready' && c.status === 'True');
}

export function podReadySinceMs(p: Obj): number | undefined {
  const c = (p.status?.conditions ?? []).find((x: Obj) => x.type === 'Ready' && x.status === 'True');
  return c?.lastTransitionTime ? Date.parse(c.lastTransitionTime) : undefined;
}

export function isTerminating(o: Obj): boolean {
  return !!o.metadata?.deletionTimestamp;
}

export function isTerminal(p: Obj): boolean {
  return p.status?.phase === 'Succeeded' || p.status?.phase === 'Failed';
}

/** A pod counted by its ReplicaSet: not terminating, not finished. */
export function isActivePod(p: Obj): boolean {
  return !isTerminating(p) && !isTerminal(p);
}

export function isControlledBy(o: Obj, owner: Obj): boolean {
  return (o.metadata?.ownerReferences ?? []).some((r: Obj) => r.controller && r.uid === owner.metadata.uid);
}

export function ownerRef(owner: Obj): Obj {
  return { apiVersion: owner.apiVersion, kind: owner.kind, name: owner.metadata.name, uid: owner.metadata.uid, controller: true, blockOwnerDeletion: true };
}

/** Write a core/v1 Event about `obj` (what client-go's event recorder writes). */
export function recordEvent(store: Store, obj: Obj, type: 'Normal' | 'Warning', reason: string, message: string, component: string, host?: string): void {
  const now = Date.now();
  const ns = obj.metadata.namespace ?? 'default';
  try {
    store.create('events', {
      metadata: { name: `${obj.metadata.name}.${randomBytes(8).toString('hex')}`, namespace: ns },
      involvedObject: { kind: obj.kind, namespace: obj.metadata.namespace, name: obj.metadata.name, uid: obj.metadata.uid, apiVersion: obj.apiVersion, resourceVersion: obj.metadata.resourceVersion },
      reason, message, type,
      source: { component, ...(host ? { host } : {}) },
      firstTimestamp: rfc3339(now), lastTimestamp: rfc3339(now), eventTime: microTime(now), count: 1,
      reportingComponent: component, reportingInstance: host ?? component,
    }, ns);
  } catch (e) {
    process.stderr.write(`lab events: could not record ${reason}: ${(e as Error).message}\n`);
  }
}
