// Render one overlay of deploy/kubernetes and assert the invariants of issue 16 on every
// manifest in it (infrastructure 1.2, 1.4, 1.5, 6.3, 8.2, 8.3):
//   node tests/deploy/k8s_check.mjs <repo root> <overlay>
// Rendering is `kubectl kustomize` where kubectl is installed. Where it is not, the
// manifests are rendered by the small kustomize subset below (resources, namespace, labels,
// images, JSON 6902 patches: all the overlays use); where both exist, the two renderings
// must agree, so the subset is checked against kustomize itself.
import { execFileSync } from 'node:child_process';
import { readFileSync, readdirSync, statSync } from 'node:fs';
import path from 'node:path';
import YAML from 'yaml';

const [root, overlay] = process.argv.slice(2);
if (!root || !overlay) {
  console.error('usage: k8s_check.mjs <repo root> <overlay>');
  process.exit(2);
}
const overlayDir = path.join(root, 'deploy/kubernetes/overlays', overlay);
let failed = 0, passed = 0;
const check = (cond, what) => {
  if (cond) passed++;
  else { failed++; console.error(`FAIL [${overlay}] ${what}`); }
};

// ---- the kustomize subset ----
const WORKLOADS = new Set(['Deployment', 'StatefulSet', 'DaemonSet', 'ReplicaSet', 'Job']);
const CLUSTER_SCOPED = new Set(['Namespace', 'ClusterRole', 'ClusterRoleBinding']);

function pointer(p) {
  return p.split('/').slice(1).map((s) => s.replace(/~1/g, '/').replace(/~0/g, '~'));
}
function applyOp(doc, op) {
  const keys = pointer(op.path);
  const last = keys.pop();
  let at = doc;
  for (const k of keys) {
    if (at[k] === undefined) throw new Error(`patch path ${op.path} not found`);
    at = at[k];
  }
  if (op.op === 'remove') {
    if (Array.isArray(at)) at.splice(Number(last), 1); else delete at[last];
  } else if (op.op === 'replace' || op.op === 'add') {
    if (op.op === 'replace' && at[last] === undefined) throw new Error(`replace: ${op.path} absent`);
    if (Array.isArray(at) && op.op === 'add') at.splice(last === '-' ? at.length : Number(last), 0, op.value);
    else at[last] = op.value;
  } else throw new Error(`patch op ${op.op} is not in the subset`);
}
function podSpecs(doc) {
  if (WORKLOADS.has(doc.kind)) return [doc.spec.template.spec];
  return [];
}
function build(dir) {
  const k = YAML.parse(readFileSync(path.join(dir, 'kustomization.yaml'), 'utf8'));
  const known = new Set(['apiVersion', 'kind', 'resources', 'namespace', 'labels', 'images', 'patches']);
  for (const key of Object.keys(k)) if (!known.has(key)) throw new Error(`${dir}: ${key} is not in the subset`);
  let docs = [];
  for (const r of k.resources || []) {
    const p = path.join(dir, r);
    if (statSync(p).isDirectory()) docs.push(...build(p));
    else docs.push(...YAML.parseAllDocuments(readFileSync(p, 'utf8')).map((d) => d.toJSON()).filter(Boolean));
  }
  for (const { target, patch } of k.patches || []) {
    const hits = docs.filter((d) => d.kind === target.kind && d.metadata.name === target.name);
    if (hits.length !== 1) throw new Error(`patch target ${target.kind}/${target.name}: ${hits.length} found`);
    for (const op of YAML.parse(patch)) applyOp(hits[0], op);
  }
  for (const { pairs, includeSelectors, includeTemplates } of k.labels || []) {
    if (includeSelectors) throw new Error('labels.includeSelectors is not in the subset');
    for (const d of docs) {
      d.metadata.labels = { ...(d.metadata.labels || {}), ...pairs };
      if (includeTemplates && WORKLOADS.has(d.kind)) {
        const m = d.spec.template.metadata ||= {};
        m.labels = { ...(m.labels || {}), ...pairs };
      }
    }
  }
  if (k.namespace) {
    for (const d of docs) {
      if (d.kind === 'Namespace') d.metadata.name = k.namespace;
      else if (!CLUSTER_SCOPED.has(d.kind)) d.metadata.namespace = k.namespace;
    }
  }
  for (const img of k.images || []) {
    for (const d of docs) for (const spec of podSpecs(d))
      for (const c of [...(spec.containers || []), ...(spec.initContainers || [])]) {
        const [name, tag] = c.image.split(':');
        if (name === img.name) c.image = `${img.newName || name}:${img.newTag || tag || 'latest'}`;
      }
  }
  return docs;
}

// kustomize writes keys sorted; compare as canonical JSON, keyed by kind/namespace/name
function canon(v) {
  if (Array.isArray(v)) return v.map(canon);
  if (v && typeof v === 'object') return Object.fromEntries(Object.keys(v).sort().map((k) => [k, canon(v[k])]));
  return v;
}
const keyOf = (d) => `${d.kind}/${d.metadata.namespace || ''}/${d.metadata.name}`;
function byKey(docs) {
  return new Map(docs.map((d) => [keyOf(d), JSON.stringify(canon(d))]));
}

let docs;
const subset = build(overlayDir);
let kubectl = true;
try { execFileSync('kubectl', ['version', '--client'], { stdio: 'ignore' }); } catch { kubectl = false; }
if (kubectl) {
  const out = execFileSync('kubectl', ['kustomize', overlayDir], { encoding: 'utf8' });
  docs = YAML.parseAllDocuments(out).map((d) => d.toJSON()).filter(Boolean);
  const a = byKey(docs), b = byKey(subset);
  check(a.size === b.size, `kubectl and the subset render as many objects (${a.size} vs ${b.size})`);
  for (const [k, v] of a) check(b.get(k) === v, `the subset renders ${k} as kubectl kustomize does`);
} else {
  console.log(`kubectl is not installed: rendering ${overlay} with the kustomize subset of this test`);
  docs = subset;
}

// ---- the invariants ----
const of = (kind) => docs.filter((d) => d.kind === kind);
const one = (kind) => {
  const l = of(kind);
  check(l.length === 1, `exactly one ${kind} (${l.length})`);
  return l[0] || {};
};
const envName = { development: 'development', integration: 'integration', staging: 'staging', production: 'production', dr: 'dr' }[overlay];
check(envName, `the overlay is an environment of infrastructure 6.1`);
const standby = overlay === 'dr';

check(of('Secret').length === 0, 'no Secret objects: secrets come from Vault');
const ns = one('Namespace');
for (const d of docs)
  if (d.kind !== 'Namespace') check(d.metadata.namespace === ns.metadata?.name, `${keyOf(d)} is in ${ns.metadata?.name}`);
check(ns.metadata?.labels?.['pod-security.kubernetes.io/enforce'] === 'restricted', 'the namespace enforces the restricted pod security standard');

const cm = one('ConfigMap');
const data = cm.data || {};
check(data.QDB_ENV === envName, `QDB_ENV is ${envName} (${data.QDB_ENV})`);
// every variable is one the server reads: a misspelt one would be ignored silently
const serverVars = new Set();
(function walk(dir) {
  for (const f of readdirSync(dir)) {
    const p = path.join(dir, f);
    if (statSync(p).isDirectory()) walk(p);
    else if (f.endsWith('.c')) for (const m of readFileSync(p, 'utf8').matchAll(/"(QDB_[A-Z0-9_]+)"/g)) serverVars.add(m[1]);
  }
})(path.join(root, 'server'));
for (const k of Object.keys(data)) check(serverVars.has(k), `ConfigMap key ${k} is a variable the server reads`);
// nothing secret in it
for (const [k, v] of Object.entries(data)) {
  const s = String(v);
  check(!/(PASSWORD|SECRET|TOKEN|HMAC_KEY|PRIVATE)/.test(k) || k.endsWith('_FILE'), `ConfigMap key ${k} does not name a secret`);
  check(!/-----BEGIN/.test(s), `ConfigMap ${k} holds no PEM`);
  check(!/:\/\/[^/@\s:]+:[^/@\s]+@/.test(s), `ConfigMap ${k} holds no URL with a password`);
  check(!/[A-Za-z0-9+/=_-]{32,}/.test(s), `ConfigMap ${k} holds no key-like string`);
}
for (const k of ['QDB_DATABASE_URL', 'QDB_AUDIT_HMAC_KEY', 'QDB_KAFKA_SASL_PASSWORD'])
  check(!(k in data), `${k} is not in the ConfigMap (a file from Vault instead)`);

const dep = one('Deployment');
const tpl = dep.spec?.template || {};
const pod = tpl.spec || {};
const labels = tpl.metadata?.labels || {};
const matches = (sel) => sel && Object.keys(sel).length > 0 && Object.entries(sel).every(([k, v]) => labels[k] === v);
check(dep.spec?.replicas === (standby ? 0 : 3), `replicas ${standby ? '0 (standby until activation)' : '3'} (${dep.spec?.replicas})`);
check(matches(dep.spec?.selector?.matchLabels), 'the Deployment selects its pods');
check(dep.spec?.strategy?.rollingUpdate?.maxUnavailable === 0, 'rolling updates take no pod away before its replacement is ready');
const psc = pod.securityContext || {};
check(psc.runAsNonRoot === true && psc.runAsUser > 0, 'the pod runs as a non-root user');
check(psc.seccompProfile?.type === 'RuntimeDefault', 'seccomp RuntimeDefault');
check(pod.hostNetwork !== true && pod.hostPID !== true && pod.hostIPC !== true, 'no host namespaces');
const spread = pod.topologySpreadConstraints || [];
for (const key of ['kubernetes.io/hostname', 'topology.kubernetes.io/zone'])
  check(spread.some((t) => t.topologyKey === key && t.maxSkew === 1 && matches(t.labelSelector?.matchLabels)), `spread across ${key}`);
const cpu = (q) => (String(q).endsWith('m') ? parseFloat(q) / 1000 : parseFloat(q));
const mem = (q) => {
  const m = String(q).match(/^(\d+(?:\.\d+)?)(Ki|Mi|Gi|Ti|k|M|G)?$/);
  const mult = { Ki: 1024, Mi: 1024 ** 2, Gi: 1024 ** 3, Ti: 1024 ** 4, k: 1e3, M: 1e6, G: 1e9 }[m?.[2]] || 1;
  return m ? parseFloat(m[1]) * mult : NaN;
};
function containerChecks(c, what, { server }) {
  const sc = c.securityContext || {};
  check(sc.allowPrivilegeEscalation === false, `${what}: no privilege escalation`);
  check(sc.readOnlyRootFilesystem === true, `${what}: read-only root file system`);
  check(sc.privileged !== true, `${what}: not privileged`);
  check((sc.capabilities?.drop || []).includes('ALL') && !(sc.capabilities?.add || []).length, `${what}: all capabilities dropped, none added`);
  const r = c.resources || {};
  check(r.requests?.cpu && r.requests?.memory && r.limits?.cpu && r.limits?.memory, `${what}: requests and limits set`);
  // infrastructure 1.2: an application-tier pod is limited to 1 CPU and 2 GB
  check(cpu(r.limits?.cpu) <= 1 && mem(r.limits?.memory) <= 2 * 1024 ** 3, `${what}: limits within 1 CPU / 2 GB`);
  check(cpu(r.requests?.cpu) <= cpu(r.limits?.cpu) && mem(r.requests?.memory) <= mem(r.limits?.memory), `${what}: requests within limits`);
  check(/^[^:]+:[^:]+$/.test(c.image || '') && !c.image.endsWith(':latest'), `${what}: the image has a tag (${c.image})`);
  if (!server) return;
  const ports = new Set((c.ports || []).map((p) => p.name));
  const probe = (p, wantPath, name) => {
    check(p?.httpGet?.path === wantPath, `${what}: ${name} probe on ${wantPath}`);
    check(ports.has(p?.httpGet?.port) || (c.ports || []).some((q) => q.containerPort === p?.httpGet?.port), `${what}: ${name} probe on a port of the container`);
  };
  probe(c.livenessProbe, '/healthz', 'liveness');
  probe(c.readinessProbe, '/readyz', 'readiness');
  check(c.startupProbe?.httpGet, `${what}: a startup probe`);
  const tls = data.QDB_TLS_CERT_FILE;
  for (const p of [c.livenessProbe, c.readinessProbe, c.startupProbe])
    check((p?.httpGet?.scheme === 'HTTPS') === Boolean(tls), `${what}: probes speak ${tls ? 'HTTPS' : 'HTTP'} as the server does`);
  const pre = c.lifecycle?.preStop?.exec?.command || [];
  const preSleep = pre[0] === 'sleep' ? Number(pre[1]) : (c.lifecycle?.preStop?.sleep?.seconds ?? NaN);
  check(preSleep > 0, `${what}: a preStop pause (${pre.join(' ')})`);
  const shutdown = Number(data.QDB_SHUTDOWN_TIMEOUT ?? 10);
  const grace = pod.terminationGracePeriodSeconds;
  check(grace >= preSleep + shutdown + 5 && grace <= preSleep + shutdown + 30,
    `terminationGracePeriodSeconds ${grace} matches preStop ${preSleep} s + QDB_SHUTDOWN_TIMEOUT ${shutdown} s + a margin of 5-30 s`);
  check((c.envFrom || []).some((e) => e.configMapRef?.name === cm.metadata?.name), `${what}: settings from the ConfigMap`);
}
const server = (pod.containers || [])[0] || {};
check((pod.containers || []).length === 1, 'one container (the Vault agent is injected at admission)');
containerChecks(server, 'server container', { server: true });
check(JSON.stringify(server.args || []).includes('qdb-control serve') || (server.args || [])[0] === 'serve', 'the container runs qdb-control serve');

// Vault Agent Injector (6.3): every secret file the settings name is rendered by the agent
const ann = tpl.metadata?.annotations || {};
check(ann['vault.hashicorp.com/agent-inject'] === 'true', 'Vault Agent Injector enabled');
check(ann['vault.hashicorp.com/role'], 'a Vault role');
const fileVars = Object.entries(data).filter(([k]) => /_FILE$/.test(k) && k !== 'QDB_TLS_CERT_FILE_UNUSED');
for (const [k, v] of fileVars) {
  const file = String(v).replace(/^\/vault\/secrets\//, '');
  check(String(v).startsWith('/vault/secrets/'), `${k} is a file the Vault agent writes`);
  const rendered = ann[`vault.hashicorp.com/agent-inject-secret-${file}`] ||
    Object.entries(ann).some(([a, t]) => a.startsWith('vault.hashicorp.com/agent-inject-template-') && String(t).includes(`writeToFile "/vault/secrets/${file}"`));
  check(rendered, `${k}: /vault/secrets/${file} is rendered by the agent`);
}
for (const need of ['QDB_DATABASE_URL_FILE', 'QDB_AUDIT_HMAC_KEY_FILE', 'QDB_TLS_KEY_FILE', 'QDB_CA_FILE'])
  check(data[need], `${need} is set`);
check(ann['vault.hashicorp.com/agent-inject-secret-kafka.env'] && JSON.stringify(server.args).includes('/vault/secrets/kafka.env'),
  'Kafka credentials from Vault, sourced by the container');
const dbTemplate = ann['vault.hashicorp.com/agent-inject-template-database-url'] || '';
check(/sslmode=verify-full/.test(dbTemplate) && /sslrootcert=\/vault\/secrets\/ca\.pem/.test(dbTemplate),
  'the database URL asks for sslmode=verify-full against the mounted CA (8.3)');
check(ann['vault.hashicorp.com/agent-inject-command-tls.crt'] && pod.shareProcessNamespace === true,
  'a renewed certificate is followed by SIGHUP (the agent sees the server)');

const svc = one('Service');
check(matches(svc.spec?.selector), 'the Service selects the server pods');
check((svc.spec?.ports || []).every((p) => (server.ports || []).some((q) => q.name === p.targetPort || q.containerPort === p.targetPort)),
  'the Service targets the container port');

const pdb = one('PodDisruptionBudget');
check(pdb.spec?.minAvailable === 2, `PodDisruptionBudget minAvailable 2 (${pdb.spec?.minAvailable})`);
check(matches(pdb.spec?.selector?.matchLabels), 'the PodDisruptionBudget selects the server pods');

const hpa = one('HorizontalPodAutoscaler');
check(hpa.spec?.scaleTargetRef?.kind === 'Deployment' && hpa.spec?.scaleTargetRef?.name === dep.metadata?.name, 'the HPA scales the Deployment');
check(hpa.spec?.minReplicas >= pdb.spec?.minAvailable + 1, 'the HPA never goes below what the PDB can drain');
check(hpa.spec?.maxReplicas >= hpa.spec?.minReplicas, 'maxReplicas >= minReplicas');
const target = (name) => (hpa.spec?.metrics || []).find((m) => m.type === 'Resource' && m.resource?.name === name)?.resource?.target;
check(target('cpu')?.type === 'Utilization' && target('cpu')?.averageUtilization === 70, 'HPA on CPU 70 %');
check(target('memory')?.type === 'Utilization' && target('memory')?.averageUtilization === 80, 'HPA on memory 80 %');

// zones (8.2)
const np = one('NetworkPolicy');
check(matches(np.spec?.podSelector?.matchLabels) || Object.entries(np.spec?.podSelector?.matchLabels || {}).every(([k, v]) => labels[k] === v),
  'the NetworkPolicy applies to the server pods');
check(['Ingress', 'Egress'].every((t) => (np.spec?.policyTypes || []).includes(t)), 'both directions are restricted');
const nsOf = (peer) => peer.namespaceSelector?.matchLabels?.['kubernetes.io/metadata.name'];
for (const rule of np.spec?.ingress || []) {
  check((rule.from || []).length > 0, 'every ingress rule names its sources');
  for (const peer of rule.from || []) {
    const n = nsOf(peer);
    check(['ingress', 'gateway'].includes(n) || (n === 'observability' && peer.podSelector?.matchLabels?.['app.kubernetes.io/name'] === 'prometheus'),
      `ingress only from the ingress and gateway namespaces, or Prometheus (${n})`);
    check(!peer.ipBlock, 'no ingress from address blocks');
  }
  check((rule.ports || []).length > 0 && rule.ports.every((p) => p.port === 8443), 'ingress only on 8443 (8.2)');
}
const DATA_PORTS = new Set([5432, 9092, 6379, 9200, 9000]);
let dns = false;
let connectAllowed = false;
for (const rule of np.spec?.egress || []) {
  check((rule.to || []).length > 0 && (rule.ports || []).length > 0, 'every egress rule names destinations and ports');
  for (const peer of rule.to || []) {
    const ports = (rule.ports || []).map((p) => p.port);
    if (peer.ipBlock) {
      const vault = ports.every((p) => p === 8200);
      check(vault || ports.every((p) => DATA_PORTS.has(p)), `egress to ${peer.ipBlock.cidr} only on data-zone ports of 8.2 (${ports}) or Vault's`);
      check(peer.ipBlock.cidr !== '0.0.0.0/0', 'no egress to everywhere');
    } else if (nsOf(peer) === 'kube-system') {
      dns = ports.every((p) => p === 53);
      check(dns, 'kube-system only for DNS');
    } else {
      const issuer = nsOf(peer) === 'auth' && ports.every((p) => p === 8443);
      const connect = nsOf(peer) === 'cdc' && ports.every((p) => p === 8083);
      check(issuer || connect, `in-cluster egress only to the issuer or Kafka Connect's REST API (${nsOf(peer)}:${ports})`);
      if (connect) connectAllowed = true;
    }
  }
}
check(dns, 'DNS is allowed');
check(connectAllowed, 'Kafka Connect REST (cdc:8083) is allowed: the inventory provisions connectors through it');

// the migration Job
const job = one('Job');
const jpod = job.spec?.template?.spec || {};
const jc = (jpod.containers || [])[0] || {};
check(JSON.stringify(jc.args) === '["migrate"]' && !jc.command, 'the Job runs qdb-control migrate');
check(jpod.restartPolicy === 'Never', 'a failed migration is not restarted in place');
check(jpod.securityContext?.runAsNonRoot === true && jpod.securityContext?.seccompProfile?.type === 'RuntimeDefault', 'the Job pod runs as non-root with seccomp');
containerChecks(jc, 'migration container', { server: false });
const jenv = (jc.env || []).map((e) => e.name).sort();
check(JSON.stringify(jenv) === JSON.stringify(['QDB_DATABASE_URL_FILE', 'QDB_ENV', 'QDB_LOG_LEVEL']), `the Job gets only the database URL and QDB_ENV (${jenv})`);
const jann = job.spec?.template?.metadata?.annotations || {};
check(jann['vault.hashicorp.com/agent-pre-populate-only'] === 'true' && jann['vault.hashicorp.com/agent-inject-secret-database-url'],
  'the Job takes the URL from Vault and its agent leaves, so the Job completes');
check(jc.image === server.image, 'the Job migrates with the image it is rolling out');
check(job.metadata?.annotations?.['argocd.argoproj.io/hook'] === 'PreSync', 'the Job runs before the rollout');
check(Boolean(job.spec?.suspend) === standby, standby ? 'DR: the migration Job is suspended until activation' : 'the migration Job runs');

const sm = one('ServiceMonitor');
check(Object.entries(sm.spec?.selector?.matchLabels || {}).every(([k, v]) => svc.metadata?.labels?.[k] === v), 'the ServiceMonitor selects the Service');
check((sm.spec?.endpoints || []).every((e) => (svc.spec?.ports || []).some((p) => p.name === e.port) && e.path === '/metrics'), 'it scrapes /metrics on a Service port');
check((sm.spec?.endpoints || []).every((e) => e.scheme === 'https' && !e.tlsConfig?.insecureSkipVerify), 'over verified TLS');
check((sm.spec?.endpoints || []).every((e) => e.tlsConfig?.serverName === `${svc.metadata?.name}.${ns.metadata?.name}.svc`),
  'the scrape checks the name the certificate is issued for');
const certTemplate = ann['vault.hashicorp.com/agent-inject-template-tls.crt'] || '';
check(certTemplate.includes(`common_name=${svc.metadata?.name}.${ns.metadata?.name}.svc`), 'the certificate is issued for the Service in this namespace');

console.log(`${overlay}: ${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
