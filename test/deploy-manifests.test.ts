/**
 * deploy/: every manifest parses, the workloads run the image `npm run image` builds (same name, never
 * pulled), as node tools (privileged, host network and PID namespaces), under service accounts that
 * deploy/rbac.yaml defines and binds, with `rolltrace record` options the CLI accepts.
 */
import { describe, expect, it } from 'vitest';
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { loadAllYaml } from '@kubernetes/client-node';
import { cli, ROOT } from './helpers/cli.js';
// @ts-expect-error: plain .mjs build script, no types
import { IMAGE_NAME, IMAGE_REF } from '../scripts/image.mjs';

type Obj = { apiVersion: string; kind: string; metadata: { name: string; namespace?: string; labels?: Record<string, string> }; [k: string]: any };
const load = (f: string): Obj[] => loadAllYaml(readFileSync(join(ROOT, 'deploy', f), 'utf8')) as Obj[];

/** how the kubelet and containerd spell a short image reference */
function normalize(ref: string): string {
  const [first] = ref.split('/');
  const hasRegistry = ref.includes('/') && (first!.includes('.') || first!.includes(':') || first === 'localhost');
  const full = hasRegistry ? ref : `docker.io/${ref.includes('/') ? ref : `library/${ref}`}`;
  return /:[^/]+$/.test(full) || full.includes('@') ? full : `${full}:latest`;
}

describe('deploy/ manifests', () => {
  const files = readdirSync(join(ROOT, 'deploy')).filter((f) => f.endsWith('.yaml'));
  const all = files.flatMap((f) => load(f).map((o) => ({ file: f, o })));
  const rbac = load('rbac.yaml');
  const workloads = all.filter(({ o }) => o.kind === 'DaemonSet' || o.kind === 'Job');
  const recordOptions = cli(['record', '--help']).stdout;

  it('parse, and hold the DaemonSet, the one-node Job and the RBAC', () => {
    expect(files).toEqual(expect.arrayContaining(['daemonset.yaml', 'job.yaml', 'rbac.yaml']));
    for (const { file, o } of all) {
      expect(o.apiVersion, file).toMatch(/^(v1|apps\/v1|batch\/v1|rbac\.authorization\.k8s\.io\/v1)$/);
      expect(o.metadata?.name, file).toBeTruthy();
    }
    expect(workloads.map(({ o }) => o.kind).sort()).toEqual(['DaemonSet', 'Job']);
  });

  it('the workloads run the image npm run image builds, privileged in the host network and PID namespaces', () => {
    expect(normalize(IMAGE_REF)).toBe(IMAGE_NAME);
    for (const { file, o } of workloads) {
      const spec = o.spec.template.spec;
      expect(spec.hostNetwork, file).toBe(true);
      expect(spec.hostPID, file).toBe(true);
      expect(spec.containers).toHaveLength(1);
      const c = spec.containers[0];
      expect(normalize(c.image), file).toBe(IMAGE_NAME);
      expect(c.imagePullPolicy, file).toBe('Never');
      expect(c.securityContext.privileged, file).toBe(true);
      expect(o.metadata.namespace).toBe('rolltrace');
      // the bundle lands on the node
      const bundles = spec.volumes.find((v: any) => v.name === 'bundles');
      expect(bundles.hostPath.path).toBe('/var/lib/rolltrace');
      expect(c.volumeMounts.find((m: any) => m.name === 'bundles').mountPath).toBe('/var/lib/rolltrace');
      expect(c.env.find((e: any) => e.name === 'NODE_NAME').valueFrom.fieldRef.fieldPath).toBe('spec.nodeName');
      // bpftrace's tracefs and the node's cgroup tree (the ebpf source maps cgroup ids to pods)
      for (const path of ['/sys/kernel/tracing', '/sys/fs/cgroup', '/lib/modules']) {
        const v = spec.volumes.find((x: any) => x.hostPath?.path === path);
        expect(v, `${file}: hostPath ${path}`).toBeDefined();
        expect(c.volumeMounts.find((m: any) => m.name === v.name).mountPath, file).toBe(path);
      }
    }
  });

  it('the service accounts exist in rbac.yaml and are bound to roles that allow what the recorder does', () => {
    const roles = new Map(rbac.filter((o) => o.kind === 'ClusterRole').map((o) => [o.metadata.name, o.rules as any[]]));
    const allows = (sa: string, group: string, resource: string, verb: string) => rbac
      .filter((o) => o.kind === 'ClusterRoleBinding' && o.subjects.some((s: any) => s.kind === 'ServiceAccount' && s.name === sa && s.namespace === 'rolltrace'))
      .some((b) => (roles.get(b.roleRef.name) ?? []).some((r) => r.apiGroups.includes(group) && r.resources.includes(resource) && r.verbs.includes(verb)));
    expect(rbac.find((o) => o.kind === 'Namespace')?.metadata.labels?.['pod-security.kubernetes.io/enforce']).toBe('privileged');
    for (const { file, o } of workloads) {
      const sa = o.spec.template.spec.serviceAccountName;
      expect(rbac.some((r) => r.kind === 'ServiceAccount' && r.metadata.name === sa && r.metadata.namespace === 'rolltrace'), `${file}: ${sa}`).toBe(true);
      for (const [g, res] of [['', 'pods'], ['', 'services'], ['discovery.k8s.io', 'endpointslices'], ['apps', 'deployments'], ['apps', 'replicasets']] as const) {
        expect(allows(sa, g, res, 'watch'), `${file}: ${sa} watch ${res}`).toBe(true);
      }
      const args = o.spec.template.spec.containers[0].args.join(' ');
      expect(allows(sa, 'apps', 'deployments', 'patch'), `${file}: --restart needs patch`).toBe(args.includes('--restart'));
    }
    // the DaemonSet stays read-only
    expect(allows('rolltrace', 'apps', 'deployments', 'patch')).toBe(false);
  });

  it('the workloads call `rolltrace record` with options the CLI has', () => {
    expect(recordOptions).toContain('--until-rollout-complete');
    for (const { file, o } of workloads) {
      const args: string = o.spec.template.spec.containers[0].args.join(' ');
      expect(args, file).toMatch(/\brolltrace record --out /);
      const used = [...args.slice(args.indexOf('rolltrace record')).matchAll(/\s(--[a-z-]+)/g)].map((m) => m[1]!);
      expect(used.length, file).toBeGreaterThan(3);
      for (const opt of used) expect(recordOptions, `${file}: ${opt}`).toContain(opt);
    }
  });
});
