// Checks every pod template of the rendered manifests against the Kubernetes "restricted" Pod
// Security Standard (which includes "baseline"; the rules as of Kubernetes 1.30, policy version
// "latest"), plus the project's own hardening rules. Prints one line per broken rule naming the
// file, the object, the container and the rule; exits 1 if any. A file without any pod template,
// or a workload kind it does not know, fails too (nothing may slip through unchecked).
//   node check_pss.mjs RENDERED.yaml...
import { basename } from "node:path";
import { loadObjects, objectName } from "./lib.mjs";

// Where each workload kind keeps its pod template spec.
const POD_SPEC = {
  Pod: (o) => o.spec,
  Deployment: (o) => o.spec?.template?.spec,
  StatefulSet: (o) => o.spec?.template?.spec,
  DaemonSet: (o) => o.spec?.template?.spec,
  ReplicaSet: (o) => o.spec?.template?.spec,
  ReplicationController: (o) => o.spec?.template?.spec,
  Job: (o) => o.spec?.template?.spec,
  CronJob: (o) => o.spec?.jobTemplate?.spec?.template?.spec,
};
const NOT_WORKLOADS = new Set(["Service", "ServiceAccount", "ConfigMap", "Secret",
  "PersistentVolumeClaim", "PodDisruptionBudget", "NetworkPolicy", "ServiceMonitor"]);

const RESTRICTED_VOLUMES = new Set(["configMap", "csi", "downwardAPI", "emptyDir", "ephemeral",
  "persistentVolumeClaim", "projected", "secret"]);
const BASELINE_CAPS = new Set(["AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL",
  "MKNOD", "NET_BIND_SERVICE", "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT"]);
const SAFE_SYSCTLS = new Set(["kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range",
  "net.ipv4.ip_unprivileged_port_start", "net.ipv4.tcp_syncookies", "net.ipv4.ping_group_range",
  "net.ipv4.ip_local_reserved_ports", "net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout",
  "net.ipv4.tcp_keepalive_intvl", "net.ipv4.tcp_keepalive_probes"]);

// Returns the broken rules of one pod spec, each as "[container NAME] rule: detail".
export function checkPodSpec(spec, meta = {}) {
  const broken = [];
  const bad = (where, rule, detail) => broken.push(`${where}${rule}: ${detail}`);
  const psc = spec.securityContext ?? {};
  const containers = [
    ...(spec.initContainers ?? []).map((c) => ["initContainer", c]),
    ...(spec.containers ?? []).map((c) => ["container", c]),
    ...(spec.ephemeralContainers ?? []).map((c) => ["ephemeralContainer", c]),
  ];
  if (!spec.containers?.length) bad("", "pod", "no containers");

  // baseline
  for (const f of ["hostNetwork", "hostPID", "hostIPC"]) {
    if (spec[f] === true) bad("", "baseline/host-namespaces", `${f} is true`);
  }
  for (const v of spec.volumes ?? []) {
    if (v.hostPath) bad("", "baseline/hostPath-volumes", `volume "${v.name}" is a hostPath`);
    const type = Object.keys(v).find((k) => k !== "name");
    if (!RESTRICTED_VOLUMES.has(type)) {
      bad("", "restricted/volume-types", `volume "${v.name}" has type ${type}`);
    }
  }
  for (const s of psc.sysctls ?? []) {
    if (!SAFE_SYSCTLS.has(s.name)) bad("", "baseline/sysctls", `unsafe sysctl ${s.name}`);
  }
  const podSeccomp = psc.seccompProfile?.type;
  if (podSeccomp === "Unconfined") bad("", "baseline/seccomp", "pod seccompProfile is Unconfined");
  if (psc.runAsNonRoot === false) bad("", "restricted/running-as-non-root", "pod runAsNonRoot is false");
  if (psc.runAsUser === 0) bad("", "restricted/running-as-non-zero-uid", "pod runAsUser is 0");
  if (psc.seLinuxOptions?.type &&
      !["container_t", "container_init_t", "container_kvm_t", "container_engine_t"].includes(psc.seLinuxOptions.type)) {
    bad("", "baseline/selinux", `pod seLinuxOptions.type ${psc.seLinuxOptions.type}`);
  }
  if (psc.appArmorProfile?.type === "Unconfined") bad("", "baseline/apparmor", "pod appArmorProfile is Unconfined");

  for (const [role, c] of containers) {
    const where = `[${role} ${c.name}] `;
    const sc = c.securityContext ?? {};
    if (sc.privileged === true) bad(where, "baseline/privileged", "privileged is true");
    for (const p of c.ports ?? []) {
      if (p.hostPort) bad(where, "baseline/host-ports", `hostPort ${p.hostPort}`);
    }
    if (sc.procMount && sc.procMount !== "Default") bad(where, "baseline/proc-mount", `procMount ${sc.procMount}`);
    if (sc.appArmorProfile?.type === "Unconfined") bad(where, "baseline/apparmor", "appArmorProfile is Unconfined");
    for (const cap of sc.capabilities?.add ?? []) {
      if (!BASELINE_CAPS.has(cap)) bad(where, "baseline/capabilities", `adds ${cap}`);
      if (cap !== "NET_BIND_SERVICE") bad(where, "restricted/capabilities", `adds ${cap} (only NET_BIND_SERVICE may be added)`);
    }
    // restricted
    if (sc.allowPrivilegeEscalation !== false) {
      bad(where, "restricted/privilege-escalation", "allowPrivilegeEscalation is not false");
    }
    const nonRoot = sc.runAsNonRoot ?? psc.runAsNonRoot;
    if (nonRoot !== true) bad(where, "restricted/running-as-non-root", "runAsNonRoot is not true (neither container nor pod)");
    if (sc.runAsUser === 0) bad(where, "restricted/running-as-non-zero-uid", "runAsUser is 0");
    const seccomp = sc.seccompProfile?.type ?? podSeccomp;
    if (seccomp !== "RuntimeDefault" && seccomp !== "Localhost") {
      bad(where, "restricted/seccomp", `seccompProfile is ${seccomp ?? "unset"} (RuntimeDefault or Localhost needed)`);
    }
    if (!(sc.capabilities?.drop ?? []).includes("ALL")) {
      bad(where, "restricted/capabilities", "capabilities.drop does not include ALL");
    }

    // the project's own rules (beyond the standard)
    const uid = sc.runAsUser ?? psc.runAsUser, gid = sc.runAsGroup ?? psc.runAsGroup;
    if (!Number.isInteger(uid) || uid <= 0) bad(where, "project/numeric-user", `runAsUser ${uid} is not a non-zero number`);
    if (!Number.isInteger(gid) || gid <= 0) bad(where, "project/numeric-group", `runAsGroup ${gid} is not a non-zero number`);
    if (sc.readOnlyRootFilesystem !== true) bad(where, "project/read-only-root", "readOnlyRootFilesystem is not true");
    if (role === "container") {
      if (!c.resources?.requests?.cpu || !c.resources?.requests?.memory) bad(where, "project/resources", "cpu or memory request missing");
      if (!c.resources?.limits?.memory) bad(where, "project/resources", "memory limit missing");
      if (!c.livenessProbe || !c.readinessProbe) bad(where, "project/probes", "liveness or readiness probe missing");
    }
    // The drain must fit: terminationGracePeriodSeconds > preStop sleep + shutdown grace.
    const sleep = c.lifecycle?.preStop?.exec?.command;
    const sleepS = sleep?.[0]?.endsWith("sleep") ? Number(sleep[1]) :
                   (c.lifecycle?.preStop?.sleep?.seconds ?? 0);
    const graceMs = Number((c.env ?? []).find((e) => e.name === "EVENTBUS_SHUTDOWN_GRACE_MS")?.value ?? 0);
    const tgps = spec.terminationGracePeriodSeconds ?? 30;
    if (sleepS + graceMs / 1000 >= tgps) {
      bad(where, "project/termination-grace", `terminationGracePeriodSeconds ${tgps} <= preStop ${sleepS} s + shutdown grace ${graceMs} ms`);
    }
  }
  const writable = (spec.volumes ?? []).some((v) => v.persistentVolumeClaim || v.emptyDir);
  if ((writable || meta.claimTemplates) && !Number.isInteger(psc.fsGroup)) {
    bad("", "project/fs-group", "volumes without a pod fsGroup");
  }
  if (spec.automountServiceAccountToken !== false) {
    bad("", "project/service-account-token", "automountServiceAccountToken is not false");
  }
  return broken;
}

const files = process.argv.slice(2);
if (files.length === 0) {
  console.error("usage: node check_pss.mjs RENDERED.yaml...");
  process.exit(2);
}
// True when every label of SELECTOR (matchLabels only) is on LABELS.
function selects(selector, labels) {
  const want = Object.entries(selector?.matchLabels ?? {});
  return want.length > 0 && want.every(([k, v]) => labels?.[k] === v);
}

let failed = 0, pods = 0;
for (const file of files) {
  let inFile = 0;
  const objects = await loadObjects(file);
  const policies = objects.filter((o) => o.kind === "NetworkPolicy");
  const budgets = objects.filter((o) => o.kind === "PodDisruptionBudget");
  for (const obj of objects) {
    const where = `${basename(file)}: ${objectName(obj)}`;
    const getSpec = POD_SPEC[obj.kind];
    if (!getSpec) {
      if (!NOT_WORKLOADS.has(obj.kind)) {
        console.error(`FAIL ${where}: unknown kind ${obj.kind}: add it to POD_SPEC or NOT_WORKLOADS`);
        failed++;
      }
      continue;
    }
    pods++, inFile++;
    const broken = checkPodSpec(getSpec(obj) ?? {}, {claimTemplates: obj.spec?.volumeClaimTemplates?.length});
    // Every workload is behind a NetworkPolicy; one of several replicas behind a budget.
    const labels = obj.spec?.template?.metadata?.labels;
    if (obj.kind !== "Pod" && !policies.some((p) => selects(p.spec?.podSelector, labels))) {
      broken.push("project/network-policy: no NetworkPolicy selects its pods");
    }
    if ((obj.spec?.replicas ?? 1) > 1 && !budgets.some((b) => selects(b.spec?.selector, labels))) {
      broken.push(`project/disruption-budget: ${obj.spec.replicas} replicas and no PodDisruptionBudget`);
    }
    for (const b of broken) console.error(`FAIL ${where}${b.startsWith("[") ? " " : ": "}${b}`);
    if (broken.length) failed++;
    else console.log(`ok   ${where}: restricted`);
  }
  if (inFile === 0) {
    console.error(`FAIL ${basename(file)}: no pod template to check`);
    failed++;
  }
}
console.log(`pss: ${pods} pod templates in ${files.length} files, ${failed} failing`);
process.exit(failed ? 1 : 0);
