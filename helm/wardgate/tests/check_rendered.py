#!/usr/bin/env python3
"""Assertions on the manifests the wardgate chart renders (`helm template` output).

    check_rendered.py SCENARIO RENDERED.yaml [--wardgate BIN --policies-src DIR]
    check_rendered.py --self-test RENDERED.yaml

SCENARIO names the expectations below (what the values file asked for). Every check is run on
every scenario; a failed check prints one `FAIL …` line and the exit code is 1. With
`--wardgate`, the pod's files are laid out in a temporary folder (ConfigMaps, an existing
policies ConfigMap from --policies-src, a throw-away TLS certificate, writable volumes), the
rendered wardgate.yaml is pointed at that folder, and `wardgate validate` (and, where the
scenario says so, `wardgate test` with the repository's policy tests) must accept it.

`--self-test` breaks a good render in one way at a time and requires the checks to catch each
break: every assertion here is shown to be able to fail.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

CHART = Path(__file__).resolve().parent.parent
NAMESPACE = "clinic"
RELEASE_FULLNAME = "demo-wardgate"

# What each scenario's values ask for. `skips`: the checkov check ids the Deployment may skip.
SCENARIOS: dict[str, dict] = {
    "default": dict(
        policies_cm=f"{RELEASE_FULLNAME}-policies", policy_files_from_repo=True,
        tls=False, netpol=True, service_monitor=False, scrape=False, hpa=False, pdb=False,
        candidate=False, sinks=["stdout"], mode="enforce", pvc=False,
        skips={"CKV_K8S_43", "CKV_K8S_15"}, policy_tests=True,
    ),
    "existing-policies-http-audit": dict(
        policies_cm="clinic-policies", existing_policies=True,
        tls=False, netpol=True, service_monitor=False, scrape=True, hpa=False, pdb=False,
        candidate=False, sinks=["http", "stdout"], mode="shadow", pvc=False,
        skips={"CKV_K8S_43", "CKV_K8S_15"}, policy_tests=False,
    ),
    "tls-monitoring-ha": dict(
        policies_cm=f"{RELEASE_FULLNAME}-policies", policy_files_from_repo=True,
        tls=True, netpol=True, service_monitor=True, scrape=False, hpa=True, pdb=True,
        candidate=False, sinks=["file", "syslog"], mode="enforce", pvc=True,
        skips=set(), policy_tests=True,
    ),
    "loopback-candidate": dict(
        policies_cm=f"{RELEASE_FULLNAME}-policies", policy_files_from_repo=True,
        tls=False, netpol=False, service_monitor=False, scrape=False, hpa=False, pdb=False,
        candidate=True, sinks=["stdout"], mode="enforce", pvc=False,
        skips={"CKV_K8S_43", "CKV_K8S_15", "CKV2_K8S_6"}, policy_tests=True,
    ),
    # tests/every-key-values.yaml: every key the schema admits, for `wardgate validate`.
    "every-key": dict(
        policies_cm=f"{RELEASE_FULLNAME}-policies", policy_files_from_repo=True,
        tls=True, netpol=True, service_monitor=False, scrape=False, hpa=False, pdb=False,
        candidate=True, existing_candidate="clinic-policies-next", external_configmaps={"clinic-jwks"},
        sinks=["file", "stdout", "http", "syslog"], mode="shadow", pvc=False,
        skips={"CKV_K8S_43", "CKV_K8S_15"}, policy_tests=False, every_key=True,
    ),
    # loopback-candidate rendered with the enforced policies given by --set-file.
    "set-file": dict(
        policies_cm=f"{RELEASE_FULLNAME}-policies", policy_files_from_repo=True,
        tls=False, netpol=False, service_monitor=False, scrape=False, hpa=False, pdb=False,
        candidate=True, sinks=["stdout"], mode="enforce", pvc=False,
        skips={"CKV_K8S_43", "CKV_K8S_15", "CKV2_K8S_6"}, policy_tests=True,
    ),
}

# Keys the chart writes itself; the rest of wardgate.yaml is checked against the config part of
# values.schema.json (which mirrors wardgate's own config structs).
MANAGED_SCHEMA = {
    "listen": {"type": "string"},
    "admin_listen": {"type": "string"},
    "upstream": {"type": "string"},
    "tls": {"type": "object", "additionalProperties": False,
            "properties": {"cert_file": {}, "key_file": {}}},
    "policies": {"type": "object", "additionalProperties": False,
                 "properties": {"dir": {}, "schema": {}, "entities": {}, "namespace": {},
                                "candidate_dir": {}}},
}

# wardgate's defaults the chart's timing relies on.
DEFAULT_SHUTDOWN_GRACE_MS = 20_000
DEFAULT_AUDIT_DRAIN_MS = 5_000

class Checks:
    def __init__(self, name: str) -> None:
        self.name = name
        self.failures: list[str] = []
        self.count = 0

    def check(self, cond: object, msg: str) -> bool:
        self.count += 1
        if not cond:
            self.failures.append(msg)
        return bool(cond)


def load_docs(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [d for d in yaml.safe_load_all(f) if d]


def find(docs: list[dict], kind: str, name: str | None = None) -> list[dict]:
    return [d for d in docs if d.get("kind") == kind
            and (name is None or d.get("metadata", {}).get("name") == name)]


def port_of(addr: str) -> int:
    return int(addr.rsplit(":", 1)[1])


def host_of(addr: str) -> str:
    return addr.rsplit(":", 1)[0]


def resolve_port(port: object, container: dict) -> int | None:
    """A port number, or a named port looked up in the container's ports."""
    if isinstance(port, int):
        return port
    for p in container.get("ports", []) or []:
        if p.get("name") == port:
            return p.get("containerPort")
    return None


def subset(small: dict, big: dict) -> bool:
    return bool(small) and all(big.get(k) == v for k, v in small.items())


def unknown_keys(value: object, schema: dict, path: str) -> list[str]:
    """Keys of `value` that `schema` (the values.schema.json dialect used here) does not allow."""
    out: list[str] = []
    if isinstance(value, dict):
        for branch in schema.get("allOf", []):
            const = branch.get("if", {}).get("properties", {}).get("type", {}).get("const")
            if const is not None and value.get("type") == const:
                schema = branch["then"]
        props = schema.get("properties", {})
        extra = schema.get("additionalProperties", True)
        for k, v in value.items():
            if k in props:
                out += unknown_keys(v, props[k], f"{path}.{k}")
            elif extra is False:
                out.append(f"{path}.{k}")
            elif isinstance(extra, dict):
                out += unknown_keys(v, extra, f"{path}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += unknown_keys(v, schema.get("items", {}), f"{path}[{i}]")
    return out


def config_schema(managed: bool = True) -> dict:
    values_schema = json.loads((CHART / "values.schema.json").read_text(encoding="utf-8"))
    cfg = copy.deepcopy(values_schema["properties"]["wardgate"]["properties"]["config"])
    if managed:
        cfg["properties"].update(MANAGED_SCHEMA)
    return cfg


def schema_paths(schema: dict, path: str = "") -> set[str]:
    """Every key the schema names, as dotted paths (`audit.sinks[http].url`, `jwt.issuers[].issuer`)."""
    out: set[str] = set()
    if schema.get("type") == "array" and isinstance(schema.get("items"), dict):
        items = schema["items"]
        branches = [b for b in items.get("allOf", []) if "if" in b]
        if branches:
            for b in branches:
                t = b["if"]["properties"]["type"]["const"]
                out |= schema_paths(b["then"], f"{path}[{t}]")
            return out
        return schema_paths(items, f"{path}[]")
    for k, sub in (schema.get("properties") or {}).items():
        p = f"{path}.{k}" if path else k
        out.add(p)
        out |= schema_paths(sub, p)
    return out


def config_paths(value: object, path: str = "") -> set[str]:
    """The keys a config sets, in schema_paths' notation."""
    out: set[str] = set()
    if isinstance(value, dict):
        for k, v in value.items():
            p = f"{path}.{k}" if path else k
            out.add(p)
            if p.endswith((".attributes", ".headers", ".headers_from_env")):
                continue  # maps of the user's own names
            out |= config_paths(v, p)
    elif isinstance(value, list):
        for v in value:
            if isinstance(v, dict) and path.endswith("sinks"):
                out |= config_paths(v, f"{path}[{v.get('type')}]")
            else:
                out |= config_paths(v, f"{path}[]")
    return out


def ceil_s(ms: int) -> int:
    return -(-int(ms) // 1000)


def check_render(name: str, docs: list[dict], exp: dict) -> tuple[Checks, dict]:
    """Every assertion; returns the checks and what validation needs (pod, config, …)."""
    c = Checks(name)
    ctx: dict = {}
    deps = find(docs, "Deployment")
    if not c.check(len(deps) == 1, f"one Deployment expected, found {len(deps)}"):
        return c, ctx
    dep = deps[0]
    pod = dep["spec"]["template"]
    spec = pod["spec"]
    pod_labels = pod["metadata"].get("labels", {})
    containers = {x["name"]: x for x in spec.get("containers", [])}
    c.check(len(containers) == 2, f"the pod has two containers (app + wardgate), found {sorted(containers)}")
    wg = containers.get("wardgate")
    if not c.check(wg is not None, "the wardgate sidecar container is present"):
        return c, ctx
    app = next((x for n, x in containers.items() if n != "wardgate"), None)
    if not c.check(app is not None, "the app container is present"):
        return c, ctx
    ctx.update(pod=spec, wardgate=wg)
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    mounts = {m["mountPath"]: m for m in wg.get("volumeMounts", [])}

    for d in docs:
        c.check(d.get("metadata", {}).get("namespace") == NAMESPACE,
                f"{d.get('kind')}/{d.get('metadata', {}).get('name')} is in the release namespace")

    # --- the config file wardgate is started with ---------------------------------------
    args = wg.get("args", [])
    c.check(args[:2] == ["run", "--config"] and len(args) == 3, f"wardgate runs `run --config FILE`, got {args}")
    cfg_path = args[2] if len(args) == 3 else "/missing/wardgate.yaml"
    cfg_dir, cfg_file = cfg_path.rsplit("/", 1)
    cfg_mount = mounts.get(cfg_dir)
    cfg_cm = None
    if c.check(cfg_mount is not None, f"the config folder {cfg_dir} is mounted in wardgate"):
        vol = volumes.get(cfg_mount["name"], {})
        cm_name = vol.get("configMap", {}).get("name")
        cms = find(docs, "ConfigMap", cm_name)
        if c.check(len(cms) == 1, f"the config folder comes from a rendered ConfigMap ({cm_name})"):
            cfg_cm = cms[0]
    cfg_text = (cfg_cm or {}).get("data", {}).get(cfg_file)
    if not c.check(isinstance(cfg_text, str), f"the config ConfigMap holds {cfg_file}"):
        return c, ctx
    try:
        cfg = yaml.safe_load(cfg_text)
    except yaml.YAMLError as e:
        c.check(False, f"wardgate.yaml parses as YAML: {e}")
        return c, ctx
    if not c.check(isinstance(cfg, dict), "wardgate.yaml is a mapping"):
        return c, ctx
    ctx.update(config=cfg, config_path=cfg_path)
    bad = unknown_keys(cfg, config_schema(), "wardgate.yaml")
    c.check(not bad, f"wardgate.yaml uses only keys wardgate knows; unknown: {bad}")
    for k in ["listen", "admin_listen", "upstream", "policies", "jwt", "routes", "audit"]:
        c.check(k in cfg, f"wardgate.yaml sets `{k}`")
    c.check(cfg.get("mode", "enforce") == exp["mode"], f"mode is {exp['mode']}, got {cfg.get('mode')}")

    if exp.get("every_key"):
        missing = sorted(schema_paths(config_schema(managed=False)) - config_paths(cfg))
        c.check(not missing, f"the fixture sets every key values.schema.json admits; missing: {missing}")

    # --- ports: the Service reaches wardgate's proxy port; the app stays on loopback -----
    proxy_port = resolve_port("proxy", wg)
    admin_port = resolve_port("admin", wg)
    c.check(proxy_port and port_of(cfg.get("listen", ":0")) == proxy_port,
            f"`listen` ({cfg.get('listen')}) is the proxy containerPort ({proxy_port})")
    c.check(admin_port and port_of(cfg.get("admin_listen", ":0")) == admin_port,
            f"`admin_listen` ({cfg.get('admin_listen')}) is the admin containerPort ({admin_port})")
    c.check(host_of(cfg.get("listen", ":0")) in ("0.0.0.0", "[::]"),
            f"`listen` binds the pod's interfaces so the Service reaches it, got {cfg.get('listen')}")
    m = re.fullmatch(r"(https?)://(127\.0\.0\.1|\[::1\]|localhost):(\d+)", str(cfg.get("upstream", "")))
    app_port = int(m.group(3)) if m else None
    c.check(m is not None, f"`upstream` is the app on loopback, got {cfg.get('upstream')}")
    c.check(app_port not in (proxy_port, admin_port), "the app's port is neither wardgate port")
    c.check(all(p.get("containerPort") != app_port for p in app.get("ports", []) or []),
            "the app publishes no containerPort for its port")
    services = find(docs, "Service")
    main = find(docs, "Service", RELEASE_FULLNAME)
    if c.check(len(main) == 1, "the main Service is rendered"):
        svc = main[0]
        c.check(subset(svc["spec"].get("selector", {}), pod_labels), "the Service selects the pods")
        ports = svc["spec"].get("ports", [])
        c.check(len(ports) >= 1, "the Service has a port")
        for p in ports:
            target = resolve_port(p.get("targetPort", p.get("port")), wg)
            c.check(target == proxy_port,
                    f"Service port {p.get('name')} targets wardgate's proxy port {proxy_port}, got {p.get('targetPort')}")
            c.check(target != app_port, f"Service port {p.get('name')} does not target the app port")
            c.check(p.get("appProtocol") == ("https" if exp["tls"] else "http"),
                    f"Service port appProtocol matches TLS={exp['tls']}")
    others = [s for s in services if s["metadata"]["name"] != RELEASE_FULLNAME]
    for s in others:
        for p in s["spec"].get("ports", []):
            target = resolve_port(p.get("targetPort", p.get("port")), wg)
            c.check(target == admin_port, f"Service {s['metadata']['name']} targets only the admin port, got {p.get('targetPort')}")
    c.check(bool(others) == exp["service_monitor"], f"a metrics Service exists only with the ServiceMonitor ({exp['service_monitor']})")

    # --- ServiceMonitor / scrape annotations ---------------------------------------------
    sms = find(docs, "ServiceMonitor")
    c.check(len(sms) == (1 if exp["service_monitor"] else 0), f"ServiceMonitor rendered: {exp['service_monitor']}")
    for sm in sms:
        c.check(sm.get("apiVersion") == "monitoring.coreos.com/v1", "ServiceMonitor apiVersion")
        sel = sm["spec"].get("selector", {}).get("matchLabels", {})
        matched = [s for s in services if subset(sel, s["metadata"].get("labels", {}))]
        c.check([s["metadata"]["name"] for s in matched] == [s["metadata"]["name"] for s in others],
                f"the ServiceMonitor selects the metrics Service only, got {[s['metadata']['name'] for s in matched]}")
        names = {p.get("name") for s in matched for p in s["spec"]["ports"]}
        for ep in sm["spec"].get("endpoints", []):
            c.check(ep.get("port") in names and ep.get("path") == "/metrics",
                    f"ServiceMonitor endpoint scrapes /metrics on the admin port, got {ep}")
    ann = pod["metadata"].get("annotations", {})
    c.check((ann.get("prometheus.io/scrape") == "true") == exp["scrape"], f"scrape annotations: {exp['scrape']}")
    if exp["scrape"]:
        c.check(ann.get("prometheus.io/port") == str(admin_port), "prometheus.io/port is the admin port")

    # --- NetworkPolicy: only wardgate's ports admitted -----------------------------------
    nps = find(docs, "NetworkPolicy")
    c.check(len(nps) == (1 if exp["netpol"] else 0), f"NetworkPolicy rendered: {exp['netpol']}")
    for np in nps:
        c.check(subset(np["spec"].get("podSelector", {}).get("matchLabels", {}), pod_labels),
                "the NetworkPolicy selects the pods")
        c.check("Ingress" in np["spec"].get("policyTypes", []), "the NetworkPolicy governs ingress")
        rules = np["spec"].get("ingress", [])
        c.check(rules, "the NetworkPolicy has ingress rules")
        admitted = set()
        for r in rules:
            ports = r.get("ports") or []
            c.check(ports, "every ingress rule names its ports (a rule without ports admits the app's)")
            for p in ports:
                n = resolve_port(p.get("port"), wg)
                admitted.add(n)
                if n == admin_port:
                    c.check(r.get("from"), "the admin port is admitted only from named peers")
        c.check(proxy_port in admitted, "the NetworkPolicy admits the proxy port")
        c.check(admitted <= {proxy_port, admin_port}, f"the NetworkPolicy admits only wardgate's ports, got {admitted}")
        c.check(app_port not in admitted, "the NetworkPolicy does not admit the app port")
        c.check((admin_port in admitted) == (exp["scrape"] or exp["service_monitor"]),
                "the admin port is admitted only when metrics are on")

    # --- probes ----------------------------------------------------------------------------
    for kind, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        pr = wg.get(kind, {}).get("httpGet", {})
        c.check(pr.get("path") == path and resolve_port(pr.get("port"), wg) == admin_port,
                f"wardgate {kind} is GET {path} on the admin port, got {wg.get(kind)}")
        ap = app.get(kind)
        c.check(ap, f"the app has a {kind}")
        for k in ("tcpSocket", "httpGet"):
            if ap and k in ap:
                c.check(ap[k].get("port") == app_port, f"the app's {kind} probes the app's port")

    # --- security --------------------------------------------------------------------------
    psc = spec.get("securityContext", {})
    c.check(psc.get("runAsNonRoot") is True, "pod runAsNonRoot")
    c.check(psc.get("seccompProfile", {}).get("type") == "RuntimeDefault", "pod seccompProfile RuntimeDefault")
    c.check(spec.get("automountServiceAccountToken") is False, "pod automountServiceAccountToken false")
    for k in ("hostNetwork", "hostPID", "hostIPC"):
        c.check(not spec.get(k), f"pod {k} off")
    for sa in find(docs, "ServiceAccount"):
        c.check(sa.get("automountServiceAccountToken") is False, "ServiceAccount automountServiceAccountToken false")
        c.check(spec.get("serviceAccountName") == sa["metadata"]["name"], "the pod uses the chart's ServiceAccount")
    for cname, ctr in containers.items():
        sc = ctr.get("securityContext", {})
        c.check(sc.get("allowPrivilegeEscalation") is False, f"{cname}: allowPrivilegeEscalation false")
        c.check(sc.get("readOnlyRootFilesystem") is True, f"{cname}: readOnlyRootFilesystem")
        c.check("ALL" in (sc.get("capabilities", {}).get("drop") or []), f"{cname}: capabilities drop ALL")
        c.check(not sc.get("capabilities", {}).get("add"), f"{cname}: no capabilities added")
        c.check(not sc.get("privileged"), f"{cname}: not privileged")
        c.check(sc.get("runAsNonRoot", psc.get("runAsNonRoot")) is True, f"{cname}: runAsNonRoot")
        uid = sc.get("runAsUser", psc.get("runAsUser"))
        c.check(uid is not None and uid >= 10000, f"{cname}: runs as a high non-root UID, got {uid}")
        res = ctr.get("resources", {})
        for part in ("requests", "limits"):
            for r in ("cpu", "memory"):
                c.check(r in (res.get(part) or {}), f"{cname}: resources.{part}.{r} set")
    c.check(wg.get("securityContext", {}).get("runAsUser") == 65532, "wardgate runs as UID 65532 (the image's user)")

    # --- shutdown timing ---------------------------------------------------------------------
    grace_ms = (cfg.get("limits") or {}).get("shutdown_grace_ms")
    c.check(isinstance(grace_ms, int), "limits.shutdown_grace_ms is rendered")
    grace = ceil_s(grace_ms if isinstance(grace_ms, int) else DEFAULT_SHUTDOWN_GRACE_MS)
    drain = ceil_s((cfg.get("audit") or {}).get("drain_timeout_ms", DEFAULT_AUDIT_DRAIN_MS))
    pre = ((wg.get("lifecycle") or {}).get("preStop") or {}).get("sleep", {}).get("seconds")
    c.check(isinstance(pre, int) and pre > 0, f"wardgate has a preStop sleep, got {wg.get('lifecycle')}")
    pre = pre if isinstance(pre, int) else 0
    tgp = spec.get("terminationGracePeriodSeconds")
    c.check(isinstance(tgp, int) and tgp > pre + grace + drain,
            f"terminationGracePeriodSeconds {tgp} > preStop {pre} + shutdown grace {grace} + audit drain {drain}")
    app_pre = ((app.get("lifecycle") or {}).get("preStop") or {}).get("sleep", {}).get("seconds")
    c.check(app_pre == pre + grace, f"the app's preStop sleep ({app_pre}) outlasts wardgate's drain ({pre}+{grace})")
    c.check(isinstance(tgp, int) and isinstance(app_pre, int) and tgp > app_pre,
            "the app still has time to stop after its SIGTERM")

    # --- policies: a folder mount (no subPath) where policies.dir points ----------------------
    pol = cfg.get("policies", {})
    pdir = pol.get("dir", "")
    pm = mounts.get(pdir)
    if c.check(pm is not None, f"a volume is mounted at policies.dir ({pdir})"):
        c.check("subPath" not in pm and "subPathExpr" not in pm, "the policies mount has no subPath (live reload)")
        c.check(pm.get("readOnly") is True, "the policies mount is read-only")
        pcm = volumes.get(pm["name"], {}).get("configMap", {}).get("name")
        c.check(pcm == exp["policies_cm"], f"policies come from ConfigMap {exp['policies_cm']}, got {pcm}")
        rendered = find(docs, "ConfigMap", pcm)
        c.check(len(rendered) == (0 if exp.get("existing_policies") else 1),
                f"the policies ConfigMap is {'an existing one' if exp.get('existing_policies') else 'rendered'}")
        keys = set(rendered[0].get("data", {})) if rendered else set()
        if rendered:
            c.check(os.path.basename(pol.get("schema", "")) in keys, "the policies ConfigMap holds the schema")
            if pol.get("entities"):
                c.check(os.path.basename(pol["entities"]) in keys, "the policies ConfigMap holds the entities")
            c.check(any(k.endswith(".cedar") for k in keys), "the policies ConfigMap holds *.cedar files")
        if exp.get("policy_files_from_repo"):
            repo = {p.name: p.read_text(encoding="utf-8") for p in sorted((CHART / "files" / "policies").glob("*"))
                    if p.is_file() and p.suffix in (".cedar", ".cedarschema", ".json")}
            got = rendered[0].get("data", {}) if rendered else {}
            c.check(got == repo, f"the policies ConfigMap holds exactly the repository's policy files, got {sorted(got)}")
    for key in ("schema", "entities"):
        if pol.get(key):
            c.check(os.path.dirname(pol[key]) == pdir, f"policies.{key} is in policies.dir")
    cdir = pol.get("candidate_dir")
    c.check(bool(cdir) == exp["candidate"], f"policies.candidate_dir set: {exp['candidate']}")
    if cdir:
        cm = mounts.get(cdir)
        if c.check(cm is not None, "the candidate folder is mounted"):
            c.check("subPath" not in cm and "subPathExpr" not in cm, "the candidate mount has no subPath")
            ccm = volumes.get(cm["name"], {}).get("configMap", {}).get("name")
            found = find(docs, "ConfigMap", ccm)
            if exp.get("existing_candidate"):
                c.check(ccm == exp["existing_candidate"] and not found,
                        f"the candidate policies come from ConfigMap {exp['existing_candidate']}, got {ccm}")
            else:
                c.check(found and any(k.endswith(".cedar") for k in found[0].get("data", {})),
                        "the candidate ConfigMap holds *.cedar files")

    # --- audit sinks on writable volumes -------------------------------------------------------
    sinks = (cfg.get("audit") or {}).get("sinks") or []
    c.check([s.get("type") for s in sinks] == exp["sinks"], f"audit sinks {exp['sinks']}, got {[s.get('type') for s in sinks]}")
    writable = []
    for mp, mnt in mounts.items():
        vol = volumes.get(mnt["name"], {})
        if not mnt.get("readOnly") and ("emptyDir" in vol or "persistentVolumeClaim" in vol):
            writable.append(mp.rstrip("/") + "/")
    for i, s in enumerate(sinks):
        for k in ("path", "spool_dir"):
            if k in s:
                c.check(str(s[k]).startswith("/") and any(str(s[k]).startswith(w) for w in writable),
                        f"audit.sinks[{i}].{k} {s[k]} is on a writable volume {writable}")
        if s.get("type") in ("http", "syslog"):
            c.check("spool_dir" in s, f"audit.sinks[{i}] ({s.get('type')}) has a spool_dir")
    data_vol = volumes.get(mounts.get("/var/lib/wardgate", {}).get("name", ""), {})
    c.check(("persistentVolumeClaim" in data_vol) == exp["pvc"], f"the data volume is a claim: {exp['pvc']}")

    # --- TLS ---------------------------------------------------------------------------------
    tls = cfg.get("tls")
    c.check(bool(tls) == exp["tls"], f"tls configured: {exp['tls']}")
    if tls:
        for k, item in (("cert_file", "tls.crt"), ("key_file", "tls.key")):
            d, f = str(tls.get(k, "/")).rsplit("/", 1)
            mnt = mounts.get(d)
            if c.check(mnt is not None, f"tls.{k} is in a mounted folder"):
                sec = volumes.get(mnt["name"], {}).get("secret", {})
                c.check(sec.get("secretName") and any(it.get("path") == f and it.get("key") == item
                                                      for it in sec.get("items", [])),
                        f"tls.{k} is the Secret's {item}")
                c.check(mnt.get("readOnly") is True, "the TLS mount is read-only")

    # --- rollouts: config changes roll the pods, policy changes do not --------------------------
    want = hashlib.sha256(cfg_text.rstrip("\n").encode()).hexdigest()
    c.check(ann.get("checksum/config") == want, "checksum/config is the sha256 of the rendered wardgate.yaml")
    c.check(not [k for k in ann if "polic" in k.lower()], "no policy checksum on the pod (policies reload live)")

    # --- HPA / PDB ---------------------------------------------------------------------------
    hpas = find(docs, "HorizontalPodAutoscaler")
    c.check(len(hpas) == (1 if exp["hpa"] else 0), f"HPA rendered: {exp['hpa']}")
    c.check(("replicas" in dep["spec"]) != exp["hpa"], "the Deployment sets replicas only without the HPA")
    for h in hpas:
        ref = h["spec"]["scaleTargetRef"]
        c.check(ref.get("kind") == "Deployment" and ref.get("name") == dep["metadata"]["name"], "the HPA scales the Deployment")
        c.check(h["spec"]["minReplicas"] >= 2, "the HPA keeps at least two pods")
    pdbs = find(docs, "PodDisruptionBudget")
    c.check(len(pdbs) == (1 if exp["pdb"] else 0), f"PDB rendered: {exp['pdb']}")
    for p in pdbs:
        c.check(subset(p["spec"]["selector"]["matchLabels"], pod_labels), "the PDB selects the pods")

    # --- checkov skips: only the expected ones, each with its reason --------------------------
    skips = {}
    for k, v in (dep["metadata"].get("annotations") or {}).items():
        if k.startswith("checkov.io/skip"):
            cid, _, reason = str(v).partition("=")
            skips[cid] = reason
    c.check(set(skips) == exp["skips"], f"checkov skips {sorted(exp['skips'])}, got {sorted(skips)}")
    for cid, reason in skips.items():
        c.check(len(reason) > 40, f"checkov skip {cid} gives its reason")
    return c, ctx


# ---------------------------------------------------------------------------------------------
# `wardgate validate` (and `wardgate test`) against the pod's files, laid out in a folder.

def materialize(docs: list[dict], ctx: dict, exp: dict, root: Path, policies_src: Path) -> Path:
    """Writes every wardgate mount's content under `root`; returns the rewritten config."""
    spec, wg, cfg = ctx["pod"], ctx["wardgate"], copy.deepcopy(ctx["config"])
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    mount_paths = []
    for m in wg.get("volumeMounts", []):
        dest = root / m["mountPath"].lstrip("/")
        dest.mkdir(parents=True, exist_ok=True)
        mount_paths.append(m["mountPath"].rstrip("/"))
        vol = volumes[m["name"]]
        if "configMap" in vol:
            cms = find(docs, "ConfigMap", vol["configMap"]["name"])
            if cms:
                for k, v in (cms[0].get("data") or {}).items():
                    (dest / k).write_text(v, encoding="utf-8")
            elif exp.get("existing_policies") and vol["configMap"]["name"] == exp["policies_cm"]:
                # the existing ConfigMap: what `kubectl create configmap --from-file=DIR` holds
                for p in policies_src.iterdir():
                    if p.is_file():
                        shutil.copy(p, dest / p.name)
            elif vol["configMap"]["name"] == exp.get("existing_candidate"):
                for p in policies_src.glob("*.cedar"):
                    shutil.copy(p, dest / p.name)
            elif vol["configMap"]["name"] not in exp.get("external_configmaps", set()):
                raise ValueError(f"volume {m['name']}: ConfigMap {vol['configMap']['name']} is neither rendered nor expected")
        elif "secret" in vol:
            # A throw-away certificate and key, written wherever the Secret's items put them.
            items = [it["path"] for it in vol["secret"].get("items", [])] or ["tls.crt", "tls.key"]
            subprocess.run(
                ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                 "-nodes", "-days", "1", "-subj", "/CN=records-api.clinic.svc",
                 "-keyout", str(root / "key.pem"), "-out", str(root / "cert.pem")],
                check=True, capture_output=True)
            for path in items:
                shutil.copy(root / ("key.pem" if path.endswith(".key") else "cert.pem"), dest / path)

    def rewrite(v):
        if isinstance(v, dict):
            return {k: rewrite(x) for k, x in v.items()}
        if isinstance(v, list):
            return [rewrite(x) for x in v]
        if isinstance(v, str) and any(v == mp or v.startswith(mp + "/") for mp in mount_paths):
            return str(root / v.lstrip("/"))
        return v

    cfg = rewrite(cfg)
    cfg_file = root / ctx["config_path"].lstrip("/")
    cfg_file.write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    return cfg_file


def run_wardgate(c: Checks, docs: list[dict], ctx: dict, exp: dict, binary: str, policies_src: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="wardgate-chart-") as tmp:
        root = Path(tmp)
        cfg_file = materialize(docs, ctx, exp, root, policies_src)
        # The container's environment (a value from a Secret or the downward API: a stand-in).
        env = dict(os.environ)
        for e in ctx["wardgate"].get("env", []) or []:
            env[e["name"]] = str(e.get("value", "stand-in"))
        r = subprocess.run([binary, "validate", "--config", str(cfg_file)], capture_output=True, text=True, env=env)
        out = r.stdout + r.stderr
        c.check(r.returncode == 0, f"`wardgate validate` accepts the rendered config and mounted files:\n{out.strip()}")
        if exp["policy_tests"] and r.returncode == 0:
            t = subprocess.run([binary, "test", "--config", str(cfg_file), str(policies_src / "tests")],
                               capture_output=True, text=True, env=env)
            c.check(t.returncode == 0, "the repository's policy tests pass against the rendered config "
                                       f"and mounted policies:\n{(t.stdout + t.stderr).strip()}")


# ---------------------------------------------------------------------------------------------
# Self-test: each break must be caught.

def dep_of(docs):
    return find(docs, "Deployment")[0]


def ctr(docs, name):
    return next(x for x in dep_of(docs)["spec"]["template"]["spec"]["containers"] if x["name"] == name)


def app_ctr(docs):
    return next(x for x in dep_of(docs)["spec"]["template"]["spec"]["containers"] if x["name"] != "wardgate")


def cfg_cm(docs):
    return find(docs, "ConfigMap", f"{RELEASE_FULLNAME}-config")[0]


def edit_cfg(docs, fn):
    cm = cfg_cm(docs)
    cfg = yaml.safe_load(cm["data"]["wardgate.yaml"])
    fn(cfg)
    cm["data"]["wardgate.yaml"] = yaml.safe_dump(cfg)


def m_service_to_app(d):
    find(d, "Service", RELEASE_FULLNAME)[0]["spec"]["ports"][0]["targetPort"] = 3000


def m_service_to_admin(d):
    find(d, "Service", RELEASE_FULLNAME)[0]["spec"]["ports"][0]["targetPort"] = "admin"


def m_drop_sidecar(d):
    spec = dep_of(d)["spec"]["template"]["spec"]
    spec["containers"] = [x for x in spec["containers"] if x["name"] != "wardgate"]


def m_no_readiness(d):
    ctr(d, "wardgate").pop("readinessProbe")


def m_liveness_on_readyz(d):
    ctr(d, "wardgate")["livenessProbe"]["httpGet"]["path"] = "/readyz"


def m_rw_root(d):
    ctr(d, "wardgate")["securityContext"]["readOnlyRootFilesystem"] = False


def m_app_escalation(d):
    app_ctr(d)["securityContext"]["allowPrivilegeEscalation"] = True


def m_no_seccomp(d):
    dep_of(d)["spec"]["template"]["spec"]["securityContext"].pop("seccompProfile")


def m_caps(d):
    app_ctr(d)["securityContext"]["capabilities"] = {"drop": ["NET_RAW"]}


def m_token(d):
    dep_of(d)["spec"]["template"]["spec"]["automountServiceAccountToken"] = True


def m_no_limits(d):
    app_ctr(d)["resources"].pop("limits")


def m_policies_subpath(d):
    for m in ctr(d, "wardgate")["volumeMounts"]:
        if m["name"] == "policies":
            m["subPath"] = "clinic.cedar"


def m_policies_elsewhere(d):
    edit_cfg(d, lambda c: c["policies"].__setitem__("dir", "/etc/wardgate/other"))


def m_unknown_key(d):
    edit_cfg(d, lambda c: c.__setitem__("lisen", "0.0.0.0:8080"))


def m_unknown_limit(d):
    edit_cfg(d, lambda c: c["limits"].__setitem__("shutdown_grace", 5))


def m_unknown_sink_key(d):
    edit_cfg(d, lambda c: c["audit"]["sinks"][0].__setitem__("path", "/var/lib/wardgate/a"))


def m_upstream_remote(d):
    edit_cfg(d, lambda c: c.__setitem__("upstream", "http://records-api:3000"))


def m_listen_loopback(d):
    edit_cfg(d, lambda c: c.__setitem__("listen", "127.0.0.1:8080"))


def m_grace_longer(d):
    edit_cfg(d, lambda c: c["limits"].__setitem__("shutdown_grace_ms", 60000))


def m_tgp_short(d):
    dep_of(d)["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = 10


def m_app_prestop(d):
    app_ctr(d).pop("lifecycle")


def m_netpol_open_rule(d):
    find(d, "NetworkPolicy")[0]["spec"]["ingress"].append({"from": [{"podSelector": {}}]})


def m_netpol_app_port(d):
    find(d, "NetworkPolicy")[0]["spec"]["ingress"][0]["ports"].append({"port": 3000, "protocol": "TCP"})


def m_no_netpol(d):
    d[:] = [x for x in d if x.get("kind") != "NetworkPolicy"]


def m_app_port_published(d):
    app_ctr(d)["ports"] = [{"name": "http", "containerPort": 3000}]


def m_sink_readonly(d):
    edit_cfg(d, lambda c: c["audit"].__setitem__("sinks", [{"type": "file", "path": "/etc/wardgate/audit.jsonl"}]))


def m_checksum(d):
    dep_of(d)["spec"]["template"]["metadata"]["annotations"]["checksum/config"] = "0" * 64


def m_policy_checksum(d):
    dep_of(d)["spec"]["template"]["metadata"]["annotations"]["checksum/policies"] = "0" * 64


def m_unjustified_skip(d):
    dep_of(d)["metadata"]["annotations"]["checkov.io/skip9"] = "CKV_K8S_22=x"


def m_policy_file_drift(d):
    find(d, "ConfigMap", f"{RELEASE_FULLNAME}-policies")[0]["data"]["clinic.cedar"] += "\n// drift\n"


def m_no_schema(d):
    find(d, "ConfigMap", f"{RELEASE_FULLNAME}-policies")[0]["data"].pop("clinic.cedarschema")


def m_namespace(d):
    find(d, "Service", RELEASE_FULLNAME)[0]["metadata"]["namespace"] = "default"


def m_root_uid(d):
    app_ctr(d)["securityContext"]["runAsUser"] = 0


MUTATIONS = [
    (m_service_to_app, "targets wardgate's proxy port"),
    (m_service_to_admin, "targets wardgate's proxy port"),
    (m_drop_sidecar, "wardgate sidecar container is present"),
    (m_no_readiness, "readinessProbe is GET /readyz"),
    (m_liveness_on_readyz, "livenessProbe is GET /healthz"),
    (m_rw_root, "wardgate: readOnlyRootFilesystem"),
    (m_app_escalation, "app: allowPrivilegeEscalation false"),
    (m_no_seccomp, "seccompProfile RuntimeDefault"),
    (m_caps, "capabilities drop ALL"),
    (m_token, "automountServiceAccountToken false"),
    (m_no_limits, "resources.limits"),
    (m_policies_subpath, "no subPath"),
    (m_policies_elsewhere, "mounted at policies.dir"),
    (m_unknown_key, "unknown: ['wardgate.yaml.lisen']"),
    (m_unknown_limit, "wardgate.yaml.limits.shutdown_grace"),
    (m_unknown_sink_key, "wardgate.yaml.audit.sinks[0].path"),
    (m_upstream_remote, "`upstream` is the app on loopback"),
    (m_listen_loopback, "`listen` binds the pod's interfaces"),
    (m_grace_longer, "terminationGracePeriodSeconds"),
    (m_tgp_short, "terminationGracePeriodSeconds"),
    (m_app_prestop, "outlasts wardgate's drain"),
    (m_netpol_open_rule, "names its ports"),
    (m_netpol_app_port, "does not admit the app port"),
    (m_no_netpol, "NetworkPolicy rendered"),
    (m_app_port_published, "publishes no containerPort"),
    (m_sink_readonly, "on a writable volume"),
    (m_checksum, "checksum/config"),
    (m_policy_checksum, "no policy checksum"),
    (m_unjustified_skip, "checkov skips"),
    (m_policy_file_drift, "exactly the repository's policy files"),
    (m_no_schema, "holds the schema"),
    (m_namespace, "in the release namespace"),
    (m_root_uid, "high non-root UID"),
]


def self_test(path: Path) -> int:
    docs = load_docs(path)
    base, _ = check_render("default", docs, SCENARIOS["default"])
    if base.failures:
        for f in base.failures:
            print(f"FAIL [self-test baseline] {f}")
        return 1
    missed = 0
    for fn, expect in MUTATIONS:
        d = copy.deepcopy(docs)
        fn(d)
        c, _ = check_render("default", d, SCENARIOS["default"])
        if not any(expect in f for f in c.failures):
            missed += 1
            print(f"FAIL [self-test] {fn.__name__} was not caught (expected a failure mentioning {expect!r}); "
                  f"failures: {c.failures}")
    print(f"self-test: {len(MUTATIONS) - missed} of {len(MUTATIONS)} breaks caught")
    return 1 if missed else 0


def main(argv: list[str]) -> int:
    if len(argv) == 3 and argv[1] == "--self-test":
        return self_test(Path(argv[2]))
    if len(argv) < 3 or argv[1] not in SCENARIOS:
        print(__doc__, file=sys.stderr)
        return 2
    name, path = argv[1], Path(argv[2])
    opts = dict(zip(argv[3::2], argv[4::2]))
    docs = load_docs(path)
    exp = SCENARIOS[name]
    c, ctx = check_render(name, docs, exp)
    if "--wardgate" in opts and not c.failures:
        run_wardgate(c, docs, ctx, exp, opts["--wardgate"], Path(opts.get("--policies-src", "policies")))
    for f in c.failures:
        print(f"FAIL [{name}] {f}")
    print(f"{name}: {c.count - len(c.failures)} of {c.count} checks passed")
    return 1 if c.failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
