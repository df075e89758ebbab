/**
 * The real node's generators: the build module (from the real k8s.io/kubernetes v1.33.13 go.mod), the
 * containerd/CNI/kubelet/kube-proxy configuration, the OCI image documents and the scenario manifests.
 * Pure functions; no root, no cluster.
 */
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { generateGoMod, K8S_VERSION, stagingModules, stagingVersion, versionLdflags, k8sBinDir } from '../lab/real/build.js';
import { cniConflist, containerdToml, KUBELET_SYSCTLS, kubeletArgs, kubeletConfig, kubeProxyArgs, kubeProxyConfig, parseProxyMode, paths, realLayout } from '../lab/real/config.js';
import { cli } from './helpers/cli.js';
import { ociDocuments } from '../lab/real/images.js';
import { realManifests } from '../lab/real/workload.js';
import { aptOptions } from '../lab/real/runtime.js';
import { realScenario } from '../lab/real/run.js';
import { node2KubeProxyConfig, node2Object } from '../lab/real/node2.js';
import { SCENARIOS } from '../lab/scenarios/index.js';

const goMod = readFileSync('fixtures/k8s/kubernetes-v1.33.13.go.mod', 'utf8');

describe('real node build module', () => {
  it('finds every staging module of the published go.mod (v0.0.0 requires) and nothing else', () => {
    const st = stagingModules(goMod);
    expect(st).toHaveLength(29);
    for (const m of ['k8s.io/api', 'k8s.io/client-go', 'k8s.io/kubelet', 'k8s.io/kube-proxy', 'k8s.io/cri-api', 'k8s.io/externaljwt']) expect(st).toContain(m);
    // real versions are not staging modules
    expect(st).not.toContain('k8s.io/utils');
    expect(st).not.toContain('k8s.io/klog/v2');
    expect(st).not.toContain('k8s.io/kube-openapi');
  });

  it('pins the release in one place and maps it to the staging tag', () => {
    expect(K8S_VERSION).toMatch(/^v1\.33\.\d+$/);
    expect(stagingVersion('v1.33.13')).toBe('v0.33.13');
    expect(() => stagingVersion('1.33')).toThrow(/not a Kubernetes release tag/);
    expect(k8sBinDir('v1.33.13')).toMatch(/\/k8s\/v1\.33\.13\/bin$/);
  });

  it('generates a module that requires kubernetes at the tag and replaces each staging module by its tag', () => {
    const mod = generateGoMod('v1.33.13', stagingModules(goMod));
    expect(mod).toContain('require k8s.io/kubernetes v1.33.13\n');
    expect(mod).toContain('replace k8s.io/client-go => k8s.io/client-go v0.33.13\n');
    expect(mod.match(/^replace /gm)).toHaveLength(29);
    expect(mod).not.toMatch(/v0\.0\.0/);
  });

  it('stamps the version into component-base and client-go', () => {
    const f = versionLdflags('v1.33.13');
    expect(f).toContain('-X k8s.io/component-base/version.gitVersion=v1.33.13');
    expect(f).toContain('-X k8s.io/component-base/version.gitMinor=33');
    expect(f).toContain('-X k8s.io/client-go/pkg/version.gitVersion=v1.33.13');
  });
});

describe('real node configuration', () => {
  const l = realLayout('rtr00aa11');
  const p = paths(l);

  it('containerd: its own root/state/socket, restrict_oom_score_adj, pod netns under its state dir, runc with cgroupfs', () => {
    const t = containerdToml(l);
    expect(t).toContain(`root = "${p.containerdRoot}"`);
    expect(t).toContain(`state = "${p.containerdState}"`);
    expect(t).toContain(`address = "${p.containerdSock}"`);
    expect(t).toContain('restrict_oom_score_adj = true');
    expect(t).toContain('netns_mounts_under_state_dir = true');
    expect(t).toContain('SystemdCgroup = false');
    expect(t).toContain(`Root = "${p.runcRoot}"`);
    expect(t).toContain('sandbox_image = "registry.k8s.io/pause:3.10"');
    expect(t).toContain(`conf_dir = "${p.cniConfDir}"`);
    expect(t).not.toContain('/var/lib/containerd');
  });

  it('CNI: bridge cni0 with host-local IPAM whose state stays in the lab', () => {
    const c = JSON.parse(cniConflist(l));
    expect(c.plugins[0]).toMatchObject({ type: 'bridge', bridge: 'cni0', isGateway: true, ipMasq: false });
    expect(c.plugins[0].ipam).toMatchObject({ type: 'host-local', dataDir: p.cniDataDir, ranges: [[{ subnet: '10.244.0.0/24', gateway: '10.244.0.1' }]] });
  });

  it('kubelet: cgroupfs on cgroup v1, image GC off, everything under /<prefix>', () => {
    const k = kubeletConfig(l);
    expect(k).toMatchObject({ kind: 'KubeletConfiguration', cgroupDriver: 'cgroupfs', failCgroupV1: false, cgroupRoot: '/rtr00aa11', imageGCHighThresholdPercent: 100,
      containerRuntimeEndpoint: `unix://${p.containerdSock}`, podLogsDir: p.podLogs, protectKernelDefaults: false });
    const a = kubeletArgs(l);
    expect(a).toContain('--root-dir');
    expect(a[a.indexOf('--root-dir') + 1]).toBe(p.kubeletRoot);
    expect(a).toContain('--vmodule=kuberuntime_container=3');
    expect(KUBELET_SYSCTLS).toEqual(expect.arrayContaining(['vm/overcommit_memory', 'kernel/panic', 'kernel/panic_on_oops']));
  });

  it('kube-proxy: the mode is a parameter, conntrack sizing left alone, logs every sync and its transaction', () => {
    expect(kubeProxyConfig(l, 'nftables')).toMatchObject({ mode: 'nftables', conntrack: { maxPerCore: 0, min: 0 }, hostnameOverride: 'lab-node' });
    expect(kubeProxyConfig(l, 'iptables')).toMatchObject({ mode: 'iptables' });
    expect(kubeProxyArgs(l)).toEqual(expect.arrayContaining(['--v=4', '--vmodule=proxier=9']));
  });

  it('node 2 (two-node): node 1\'s kube-proxy config with its own name and a slower minSyncPeriod; a Node object nothing is scheduled to', () => {
    for (const mode of ['nftables', 'iptables'] as const) {
      const base = kubeProxyConfig(l, mode);
      const c = node2KubeProxyConfig(base);
      expect(c).toMatchObject({ mode, hostnameOverride: 'lab-node2', clientConnection: base.clientConnection, clusterCIDR: '10.244.0.0/16',
        nftables: { minSyncPeriod: '2s' }, iptables: { minSyncPeriod: '2s', masqueradeAll: false } });
      expect(base).toMatchObject({ hostnameOverride: 'lab-node', nftables: { minSyncPeriod: '1s' } });
    }
    const n = node2Object({ node2LinkIp: '192.168.78.2', podCIDR: '10.244.1.0/24' }) as any;
    expect(n.metadata.name).toBe('lab-node2');
    expect(n.spec).toEqual({ podCIDR: '10.244.1.0/24', podCIDRs: ['10.244.1.0/24'], unschedulable: true });
    expect(n.status.addresses).toContainEqual({ type: 'InternalIP', address: '192.168.78.2' });
  });

  it('apt for trixie uses a private state: the machine\'s sources stay as they are', () => {
    const o = aptOptions('/x');
    expect(o).toContain('Dir::Etc::SourceList=/x/sources.list');
    expect(o).toContain('Dir::Etc::SourceParts=/dev/null');
    expect(o).toContain('Dir::State::Lists=/x/lists');
  });
});

describe('real node images and workload', () => {
  it('OCI documents chain by digest and name the image for ctr import', () => {
    const layer = { digest: 'a'.repeat(64), size: 123 };
    const d = ociDocuments({ name: 'rolltrace.local/app:v1', entrypoint: ['/app'] }, layer);
    const sha = (s: string) => createHash('sha256').update(s).digest('hex');
    const m = JSON.parse(d.manifest);
    expect(m.config.digest).toBe(`sha256:${sha(d.config)}`);
    expect(m.layers[0]).toMatchObject({ digest: `sha256:${layer.digest}`, size: 123 });
    expect(d.desc.digest).toBe(`sha256:${sha(d.manifest)}`);
    expect(d.desc.annotations['io.containerd.image.name']).toBe('rolltrace.local/app:v1');
    expect(JSON.parse(d.config).rootfs.diff_ids).toEqual([`sha256:${layer.digest}`]);
  });

  it('the Deployment never pulls, stamps to a hostPath, and keeps the scenario\'s behaviour', () => {
    const [svc, dep] = realManifests(SCENARIOS.race!, '/run/x/stamps');
    expect(svc!.spec).toMatchObject({ clusterIP: '10.96.0.10', ports: [{ port: 80, targetPort: 8080 }] });
    const pod = dep!.spec.template.spec;
    expect(pod.containers[0]).toMatchObject({ image: 'rolltrace.local/app:v1', imagePullPolicy: 'Never' });
    expect(pod.containers[0].args).toEqual(['--port', '8080', '--stamps', '/stamps', '--shutdown', 'close']);
    expect(pod.volumes[0].hostPath.path).toBe('/run/x/stamps');
    expect(pod.automountServiceAccountToken).toBe(false);
    expect(dep!.spec.replicas).toBe(2);
  });

  it('preStop variants: exec sleep and the native sleep action', () => {
    const exec = realScenario('prestop-exec')!;
    const [, d1] = realManifests(exec.sc, '/s', exec.preStop);
    expect(d1!.spec.template.spec.containers[0].lifecycle).toEqual({ preStop: { exec: { command: ['sleep', '2'] } } });
    const act = realScenario('prestop-sleep-action')!;
    const [, d2] = realManifests(act.sc, '/s', act.preStop);
    expect(d2!.spec.template.spec.containers[0].lifecycle).toEqual({ preStop: { sleep: { seconds: 2 } } });
    expect(realScenario('nope')).toBeNull();
  });
});

describe('--proxy-mode', () => {
  it('takes nftables or iptables (default: the scenario\'s own); anything else is a one-line error, exit 2', () => {
    expect(parseProxyMode(undefined)).toBeUndefined();
    expect(parseProxyMode('nftables')).toBe('nftables');
    expect(parseProxyMode('iptables')).toBe('iptables');
    for (const [args, msg] of [
      [['lab', 'run', '--real', '--scenario', 'race', '--out', '/nonexistent/x.rtb', '--proxy-mode', 'ipvs'], /--proxy-mode "ipvs": one of nftables, iptables/],
      [['lab', 'up', '--real', '--proxy-mode', 'IPTABLES'], /--proxy-mode "IPTABLES": one of nftables, iptables/],
      [['lab', 'run', '--scenario', 'race', '--out', '/nonexistent/x.rtb', '--proxy-mode', 'iptables'], /--proxy-mode needs --real/],
    ] as Array<[string[], RegExp]>) {
      const r = cli(args);
      expect(r.code, args.join(' ')).toBe(2);
      expect(r.stderr.trim().split('\n')).toHaveLength(1);
      expect(r.stderr).toMatch(msg);
    }
  });
});
