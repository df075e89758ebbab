/**
 * `kubectl rolltrace` without a cluster: argument parsing, the recorder pod it creates, --probe auto's
 * Service choice, and the one-line errors for the walls, on API answers captured from the real node
 * (fixtures/kubectl-plugin/: a ServiceAccount without RBAC, a namespace enforcing PodSecurity baseline,
 * recorder pods whose image is absent, with pull policy Never and IfNotPresent).
 */
import { spawn } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parseDeploymentRef, parsePluginArgs, type PluginOptions } from '../cli/kubectl/args.js';
import { accessDeniedLine, apiErrorLine, forbiddenLine, LOAD_IMAGE_HINT, podStartProblem } from '../cli/kubectl/errors.js';
import { collectorPod, pickBundle, READY_RE, RECORDING_RE, recorderPod, SCRIPT, serviceProbeUrl } from '../cli/kubectl/pod.js';
import { loadAllYaml } from '@kubernetes/client-node';
import { findRolltraceImage, rolltraceImageCandidates, rolltraceImageName } from '../lab/real/rolltrace-image.js';
import { ROOT } from './helpers/cli.js';
import { runAsync } from './helpers/run.js';

const fx = (f: string) => JSON.parse(readFileSync(join(ROOT, 'fixtures/kubectl-plugin', f), 'utf8'));
const opts = (argv: string[]) => parsePluginArgs(argv) as PluginOptions;
const bad = (argv: string[]) => { try { parsePluginArgs(argv); } catch (e) { return (e as Error).message; } return null; };

describe('kubectl rolltrace arguments', () => {
  it('record deploy/NAME with kubectl-style flags in both spellings', () => {
    const o = opts(['record', 'deploy/web', '-n', 'shop', '--restart', '--probe', 'auto', '--nodes', 'n1,n2', '--out', 'x.rtb', '--settle=3', '--pre-roll', '0', '--context', 'kind-a', '--kubeconfig=/k']);
    expect(o).toMatchObject({ deployment: 'web', namespace: 'shop', restart: true, probe: 'auto', nodes: ['n1', 'n2'], out: 'x.rtb', settle: 3, preRoll: 0, context: 'kind-a', kubeconfig: '/k' });
    expect(opts(['record', '--namespace=shop', 'deployment/api']).namespace).toBe('shop');
    expect(opts(['record', '-nshop', 'deployments.apps/api']).namespace).toBe('shop');
    const d = opts(['record', 'deploy/web']);
    expect(d).toMatchObject({ namespace: null, restart: false, probe: 'auto', rate: 20, settle: 5, preRoll: 2, timeout: 600, recorderNamespace: 'rolltrace', serviceAccount: 'rolltrace', image: null, out: null, nodes: [] });
    expect(opts(['record', 'deploy/web', '--probe', 'http://10.0.0.1:8080/healthz']).probe).toBe('http://10.0.0.1:8080/healthz');
    expect(opts(['record', 'deploy/web', '--probe', 'off', '--settle', '0']).settle).toBe(0);
    expect(parsePluginArgs([])).toBe('help');
    expect(parsePluginArgs(['record', 'deploy/web', '--help'])).toBe('help');
  });

  it('bad usage is one line naming the problem', () => {
    expect(bad(['watch'])).toMatch(/^unknown command "watch"/);
    expect(bad(['record'])).toMatch(/needs the Deployment/);
    expect(bad(['record', 'sts/db'])).toMatch(/sts\/db: expected deploy\/NAME/);
    expect(bad(['record', 'deploy/Web_1'])).toMatch(/not a valid Deployment name/);
    expect(bad(['record', 'deploy/a', 'deploy/b'])).toMatch(/one Deployment at a time/);
    expect(bad(['record', 'deploy/web', '--probe', 'ftp://x'])).toMatch(/--probe ftp:\/\/x: expected auto, off or an http/);
    expect(bad(['record', 'deploy/web', '--settle', '-1'])).toMatch(/--settle -1: expected a non-negative number/);
    expect(bad(['record', 'deploy/web', '--rate', '0'])).toMatch(/--rate 0: expected a positive number/);
    expect(bad(['record', 'deploy/web', '--nodes', ','])).toMatch(/no node named/);
    expect(bad(['record', 'deploy/web', '--out'])).toBe('--out needs a value');
    expect(bad(['record', 'deploy/web', '--bogus'])).toMatch(/^unknown option --bogus/);
    expect(() => parseDeploymentRef('web')).toThrow(/expected deploy\/NAME/);
  });

  it('the executable: help, version, and a usage error is one line with exit 2', async () => {
    const bin = join(ROOT, 'bin', 'kubectl-rolltrace.mjs');
    const help = await runAsync(bin, ['--help'], { timeoutMs: 30000 });
    expect(help.code).toBe(0);
    expect(help.stdout).toMatch(/^usage: kubectl rolltrace record deploy\/NAME/);
    const v = await runAsync(bin, ['--version'], { timeoutMs: 30000 });
    expect(v.stdout.trim()).toBe(JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')).version);
    const u = await runAsync(bin, ['record', 'sts/db'], { timeoutMs: 30000 });
    expect(u.code).toBe(2);
    expect(u.stderr.trim().split('\n')).toEqual(['kubectl rolltrace: sts/db: expected deploy/NAME (only Deployments are recorded)']);
    // no kubeconfig at all: one line, exit 2
    const k = await runAsync(bin, ['record', 'deploy/web', '--kubeconfig', '/nonexistent/kubeconfig'], { timeoutMs: 30000 });
    expect(k.code).toBe(2);
    expect(k.stderr.trim().split('\n')).toHaveLength(1);
    expect(k.stderr).toMatch(/^kubectl rolltrace: cannot load kubeconfig \/nonexistent\/kubeconfig/);
    // package.json puts it on PATH next to rolltrace
    expect(JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')).bin['kubectl-rolltrace']).toBe('bin/kubectl-rolltrace.mjs');
  });
});

describe('the recorder pod', () => {
  const pod = recorderPod({ name: 'rolltrace-abc123-0', namespace: 'rolltrace', session: 'abc123', node: 'worker-1', image: 'rolltrace:0.1.0', pullPolicy: 'Never',
    serviceAccount: 'rolltrace', watchNamespace: 'shop', deployment: 'web', probeUrl: 'http://10.96.0.10:80/', rate: 20, bundle: '/var/lib/rolltrace/kubectl-rolltrace/abc123-worker-1.rtb' }) as any;

  it('is the DaemonSet\'s node tool pinned to one node', () => {
    const ds = readFileSync(join(ROOT, 'deploy/daemonset.yaml'), 'utf8');
    expect(pod.spec.nodeName).toBe('worker-1');
    expect(pod.spec).toMatchObject({ hostNetwork: true, hostPID: true, restartPolicy: 'Never', serviceAccountName: 'rolltrace' });
    expect(pod.spec.containers[0].securityContext.privileged).toBe(true);
    expect(pod.spec.containers[0].imagePullPolicy).toBe('Never');
    // the same host paths as deploy/daemonset.yaml
    for (const v of pod.spec.volumes) expect(ds).toContain(`path: ${v.hostPath.path}`);
    const env = Object.fromEntries(pod.spec.containers[0].env.filter((e: any) => 'value' in e).map((e: any) => [e.name, e.value]));
    expect(env).toEqual({ WATCH_NAMESPACE: 'shop', DEPLOYMENT: 'web', BUNDLE: '/var/lib/rolltrace/kubectl-rolltrace/abc123-worker-1.rtb', PROBE_URL: 'http://10.96.0.10:80/', PROBE_RATE: '20' });
  });

  it('its script runs the recorder, says when the bundle is ready, and its lines match what the plugin waits for', async () => {
    // the script under sh with a stand-in `rolltrace` that prints what the real one prints
    const dir = mkdtempSync(join(tmpdir(), 'rt-plugin-script-'));
    try {
      // node, like the real one: a background job of sh starts with SIGINT ignored, node's handler still takes it
      writeFileSync(join(dir, 'rolltrace'), `#!${process.execPath}\nconst a = process.argv.slice(2);\nprocess.stderr.write('args: ' + a.join(' ') + '\\nrecording until stopped; Ctrl-C stops\\n');\n`
        + `process.on('SIGINT', () => { require('fs').writeFileSync(a[2], 'bundle\\n'); process.exit(0); });\nsetInterval(() => {}, 1000);\n`);
      chmodSync(join(dir, 'rolltrace'), 0o755);
      const script = SCRIPT.replaceAll('/tmp/rolltrace-recorder.pid', join(dir, 'pid'));
      const env = { PATH: `${dir}:/usr/bin:/bin`, BUNDLE: join(dir, 'b', 'x.rtb'), WATCH_NAMESPACE: 'shop', DEPLOYMENT: 'web', PROBE_URL: 'http://10.96.0.10:80/', PROBE_RATE: '20' };
      const child = spawn('sh', ['-c', script], { env, stdio: ['ignore', 'pipe', 'pipe'] });
      let stdout = '', stderr = '';
      child.stdout.on('data', (d: Buffer) => { stdout += d; });
      child.stderr.on('data', (d: Buffer) => { stderr += d; });
      const closed = new Promise<number | null>((res) => child.on('close', res));
      for (let i = 0; i < 100 && !existsSync(join(dir, 'pid')); i++) await new Promise((r) => setTimeout(r, 50));
      await new Promise((r) => setTimeout(r, 200));
      // the plugin's stop (exec kill -INT $(cat PID_FILE)), then the pod's deletion (SIGTERM to the shell) ends the wait for the copy
      process.kill(Number(readFileSync(join(dir, 'pid'), 'utf8')), 'SIGINT');
      for (let i = 0; i < 100 && !READY_RE.test(stdout); i++) await new Promise((r) => setTimeout(r, 50));
      child.kill('SIGTERM');
      const code = await closed;
      expect(code).toBe(0);
      const r = { stdout, stderr };
      expect(r.stderr).toContain('args: record --out ' + join(dir, 'b', 'x.rtb') + ' --namespace shop --deployment web --quiet --probe http://10.96.0.10:80/ --rate 20');
      expect(r.stderr).toMatch(RECORDING_RE);
      const m = READY_RE.exec(r.stdout);
      expect(m?.[1]).toBe(join(dir, 'b', 'x.rtb'));
      expect(Number(m?.[2])).toBe(7);
      expect(m?.[3]).toBe('0');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 20_000);

  it('--probe auto takes the Service whose selector picks the pod template', () => {
    const svc = (name: string, selector: Record<string, string> | undefined, extra: Record<string, unknown> = {}) =>
      ({ metadata: { name }, spec: { clusterIP: '10.96.0.10', selector, ports: [{ port: 80, protocol: 'TCP' }], ...extra } });
    const labels = { app: 'web', tier: 'front' };
    expect(serviceProbeUrl([svc('other', { app: 'api' }), svc('none', undefined), svc('web', { app: 'web' })], labels)).toEqual({ url: 'http://10.96.0.10:80/', service: 'web' });
    expect(serviceProbeUrl([svc('headless', { app: 'web' }, { clusterIP: 'None' })], labels)).toBeNull();
    expect(serviceProbeUrl([svc('v6', { app: 'web' }, { clusterIP: 'fd00::a' })], labels)?.url).toBe('http://[fd00::a]:80/');
  });
});

describe('one-line errors on real API answers', () => {
  it('RBAC: a 403 names who, verb, resource and namespace', () => {
    expect(apiErrorLine(403, fx('forbidden-create-pods.json'), 'create the recorder pod', { namespace: 'rolltrace' })).toBe(
      'RBAC: system:serviceaccount:default:nobody cannot create pods in namespace rolltrace (`kubectl auth can-i create pods -n rolltrace` says no); ask your cluster admin for it (docs/kubectl-plugin.md lists what the plugin needs)');
    expect(forbiddenLine(fx('forbidden-exec.json'))).toMatch(/^RBAC: system:serviceaccount:default:nobody cannot create pods\/exec in namespace rolltrace \(`kubectl auth can-i create pods\/exec -n rolltrace`/);
    expect(forbiddenLine(fx('forbidden-patch-deployments.json'))).toMatch(/cannot patch deployments\.apps in namespace default \(`kubectl auth can-i patch deployments\.apps -n default`/);
  });

  it('PodSecurity: the admission 403 says which level refused what, and how to allow it', () => {
    const l = apiErrorLine(403, fx('podsecurity-baseline.json'), 'create the recorder pod', { namespace: 'baseline-ns' });
    expect(l).toBe('PodSecurity refuses the privileged recorder pod in namespace baseline-ns (level baseline:latest forbids its host namespaces, privileged); '
      + 'the recorder needs the privileged level: `kubectl label ns baseline-ns pod-security.kubernetes.io/enforce=privileged --overwrite` (deploy/rbac.yaml\'s namespace has it) or --recorder-namespace NS');
  });

  it('401, 404 and anything else', () => {
    expect(apiErrorLine(401, fx('unauthorized.json'), 'read the Deployment')).toMatch(/^the API server refused the credentials \(401 Unauthorized\) while trying to read the Deployment/);
    expect(apiErrorLine(404, fx('notfound-deployment.json'), 'read the Deployment', { namespace: 'default' })).toBe('deployment nope not found in namespace default (while trying to read the Deployment)');
    expect(apiErrorLine(500, 'etcdserver: request timed out\n', 'list Services')).toBe('cannot list Services: HTTP 500: etcdserver: request timed out');
  });

  it('image absent on the node: ErrImageNeverPull and ErrImagePull on the recorder pod', () => {
    expect(podStartProblem(fx('pod-errimageneverpull.json'), LOAD_IMAGE_HINT)).toBe(
      `image rolltrace:9.9.9 is not on node lab-node (ErrImageNeverPull: Container image "rolltrace:9.9.9" is not present with pull policy of Never); ${LOAD_IMAGE_HINT}`);
    expect(podStartProblem(fx('pod-imagepull.json'), 'x')).toMatch(/^image rolltrace:9\.9\.9 is not on node lab-node \(ErrImagePull: failed to pull and unpack image "docker\.io\/library\/rolltrace:9\.9\.9"/);
    const running = fx('pod-errimageneverpull.json');
    running.status.containerStatuses[0].state = { running: { startedAt: '2026-12-01T15:45:29Z' } };
    expect(podStartProblem(running, 'x')).toBeNull();
  });

  it('access reviews that say no, grouped by namespace', () => {
    expect(accessDeniedLine([{ verb: 'list', resource: 'pods', group: '', namespace: 'shop', allowed: true }])).toBeNull();
    expect(accessDeniedLine([
      { verb: 'patch', resource: 'deployments', group: 'apps', namespace: 'shop', allowed: false },
      { verb: 'create', resource: 'pods', group: '', namespace: 'rolltrace', allowed: false },
      { verb: 'create', resource: 'pods', subresource: 'exec', group: '', namespace: 'rolltrace', allowed: false },
      { verb: 'get', resource: 'pods', group: '', namespace: 'rolltrace', allowed: true },
    ])).toBe('RBAC: you cannot patch deployments.apps in namespace shop; create pods, create pods/exec in namespace rolltrace (`kubectl auth can-i patch deployments.apps -n shop` says no); ask your cluster admin for these (docs/kubectl-plugin.md lists them)');
  });
});

describe('collect', () => {
  it('takes the newest closed bundle of a node and names the open ones', () => {
    const listing = [
      '851968 1796140000 /var/lib/rolltrace/lab-node-20261201T160425Z.rtb',
      '900000 1796140500 /var/lib/rolltrace/lab-node-20261201T161000Z.rtb',
      '32768 1796140600 /var/lib/rolltrace/lab-node-20261201T162000Z.rtb',
      '4177712 1796140601 /var/lib/rolltrace/lab-node-20261201T162000Z.rtb-wal',
      '0 1796140700 /var/lib/rolltrace/empty.rtb',
      'stat: cannot statx',
    ].join('\n');
    expect(pickBundle(listing)).toEqual({ newest: { path: '/var/lib/rolltrace/lab-node-20261201T161000Z.rtb', size: 900000 }, open: ['/var/lib/rolltrace/lab-node-20261201T162000Z.rtb'] });
    expect(pickBundle('')).toEqual({ newest: null, open: [] });
  });

  it('its pod mounts only the bundle directory, unprivileged', () => {
    const p = collectorPod({ name: 'c', namespace: 'rolltrace', session: 's', node: 'n1', image: 'rolltrace:0.1.0', pullPolicy: 'Never', serviceAccount: 'rolltrace' }) as any;
    expect(p.spec.nodeName).toBe('n1');
    expect(p.spec.hostNetwork).toBeUndefined();
    expect(p.spec.containers[0].securityContext).toBeUndefined();
    expect(p.spec.volumes).toEqual([{ name: 'bundles', hostPath: { path: '/var/lib/rolltrace', type: 'DirectoryOrCreate' } }]);
  });
});

describe('krew', () => {
  it('deploy/krew/rolltrace.yaml is a krew Plugin whose bin is the plugin in the archive npm run krew packs', async () => {
    const [m] = loadAllYaml(readFileSync(join(ROOT, 'deploy/krew/rolltrace.yaml'), 'utf8')) as any[];
    expect(m.apiVersion).toBe('krew.googlecontainertools.github.com/v1alpha2');
    expect(m.kind).toBe('Plugin');
    expect(m.metadata.name).toBe('rolltrace');
    expect(m.spec.version).toBe(`v${JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')).version}`);
    const [pl] = m.spec.platforms;
    expect(pl.selector.matchLabels).toEqual({ os: 'linux', arch: 'amd64' });
    expect(pl.sha256).toMatch(/^[0-9a-f]{64}$/);
    expect(pl.bin).toBe('kubectl-rolltrace/bin/kubectl-rolltrace.mjs');
    // @ts-expect-error: plain .mjs build script, no types
    const { productionPackages } = await import('../scripts/krew.mjs');
    expect(productionPackages(['/r', '/r/node_modules/commander', '/r/node_modules/@kubernetes/client-node', '/r/node_modules/@kubernetes/client-node/node_modules/ws', '/elsewhere/x'].join('\n'), '/r'))
      .toEqual(['@kubernetes/client-node', 'commander']);
  });
});

describe('lab up --real and the rolltrace image', () => {
  it('looks for the archive in $ROLLTRACE_IMAGE_ARCHIVE, the checkout\'s out/, then the image cache', () => {
    const d = mkdtempSync(join(tmpdir(), 'rt-img-'));
    try {
      const env = { ROLLTRACE_IMAGE_ARCHIVE: join(d, 'a.tar'), ROLLTRACE_IMAGE_CACHE: join(d, 'cache') };
      expect(rolltraceImageCandidates(env)).toEqual([join(d, 'a.tar'), join(ROOT, 'out', 'rolltrace-image.tar'), join(d, 'cache', 'rolltrace-image.tar')]);
      const only = { ROLLTRACE_IMAGE_CACHE: join(d, 'cache') };
      const inOut = existsSync(join(ROOT, 'out', 'rolltrace-image.tar'));
      expect(findRolltraceImage(only)).toBe(inOut ? join(ROOT, 'out', 'rolltrace-image.tar') : null);
      writeFileSync(join(d, 'a.tar'), '');
      expect(findRolltraceImage(env)).toBe(join(d, 'a.tar'));
      expect(rolltraceImageName()).toBe(`docker.io/library/rolltrace:${JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')).version}`);
    } finally {
      rmSync(d, { recursive: true, force: true });
    }
  });
});
