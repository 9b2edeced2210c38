#!/usr/bin/env python3
"""Structural checks of the deploy/ files, called by deploy/check.

The tools that understand these files (promtool, kubernetes-validate,
docker-compose, systemd-analyze, hadolint) are run by deploy/check itself;
this script checks what no tool here knows: that the files agree with each
other and with the daemon's contract (metric names, port, shutdown grace,
paths), and that every alert is tested and documented.

    check.py static [-v]            every structural check (-v: list each); exit 1 on a problem
    check.py dashboard-rules OUT    the dashboard's PromQL as a rules file (for promtool)
    check.py configmap OUT          the ConfigMap kustomize generates (for kubernetes-validate)
    check.py rendered FILE...       `kubectl kustomize` output: references resolve, config is deploy/leadflow.yaml
"""

from __future__ import annotations

import copy
import json
import os
import re
import sys
from pathlib import Path

import yaml

DEPLOY = Path(__file__).resolve().parent
REPO = DEPLOY.parent

# The daemon's metric families (the contract with pipeline/src/daemon/metrics.rs).
METRICS = {
    "leadflow_runs_total",
    "leadflow_run_duration_seconds",
    "leadflow_last_success_timestamp_seconds",
    "leadflow_last_run_timestamp_seconds",
    "leadflow_run_in_progress",
    "leadflow_rows_read_total",
    "leadflow_rows_rejected_total",
    "leadflow_masters_created_total",
    "leadflow_records_linked_total",
    "leadflow_link_conflicts_total",
    "leadflow_masters_merged_total",
    "leadflow_files_total",
    "leadflow_reminders_total",
    "leadflow_reminders_open",
    "leadflow_events_delivered_total",
    "leadflow_event_delivery_failures_total",
    "leadflow_events_dead_total",
    "leadflow_build_info",
    "leadflow_config_reloads_total",
}
HISTOGRAMS = {"leadflow_run_duration_seconds"}
SERIES = (
    METRICS
    | {f"{h}_{suffix}" for h in HISTOGRAMS for suffix in ("bucket", "sum", "count")}
) - HISTOGRAMS
# Series Prometheus makes itself; alert rules may use them, the dashboard not.
PROMETHEUS_SERIES = {"up"}

REQUIRED_ALERTS = {
    "LeadflowRunFailed",
    "LeadflowStale",
    "LeadflowRejectSpike",
    "LeadflowRemindersOverdue",
    "LeadflowEventsDead",
    "LeadflowDown",
}

PROMQL_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or",
                   "unless", "offset", "inf", "nan", "atan2"}
GRAFANA_VARS = {"$pipeline": ".*", "$__rate_interval": "1m", "$__interval": "1m", "$__range": "6h"}


class Checks:
    def __init__(self, verbose: bool) -> None:
        self.problems: list[str] = []
        self.passed = 0
        self.verbose = verbose

    def ok(self, what: str) -> None:
        self.passed += 1
        if self.verbose:
            print(f"  ok  {what}")

    def fail(self, what: str) -> None:
        self.problems.append(what)
        print(f"  FAIL {what}")

    def expect(self, cond: bool, what: str, why: str = "") -> bool:
        if cond:
            self.ok(what)
        else:
            self.fail(f"{what}{': ' + why if why else ''}")
        return cond


def rel(p: Path) -> str:
    return str(p.relative_to(REPO))


def load_yaml_docs(path: Path) -> list:
    with path.open(encoding="utf-8") as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def load_yaml(path: Path):
    docs = load_yaml_docs(path)
    if len(docs) != 1:
        raise ValueError(f"{rel(path)}: expected one YAML document, found {len(docs)}")
    return docs[0]


def duration_seconds(text: str) -> float:
    """'60s', '1m30s', '90' (seconds), '1h' -> seconds."""
    text = str(text).strip()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    units = {"ms": 0.001, "s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400}
    total, pos = 0.0, 0
    for m in re.finditer(r"(\d+(?:\.\d+)?)\s*(ms|min|s|m|h|d)", text):
        if m.start() != pos:
            raise ValueError(f"not a duration: {text!r}")
        total += float(m.group(1)) * units[m.group(2)]
        pos = m.end()
    if pos != len(text) or pos == 0:
        raise ValueError(f"not a duration: {text!r}")
    return total


def metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression selects (identifiers that are not
    functions, keywords, labels, durations or Grafana variables)."""
    s = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""', expr)
    s = re.sub(r"\{[^}]*\}", " ", s)
    s = re.sub(r"\[[^\]]*\]", " ", s)
    s = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", s)
    s = re.sub(r"\$\{?[A-Za-z_][A-Za-z0-9_]*(:[a-z]+)?\}?", " ", s)
    names = set()
    for m in re.finditer(r"(?<![\w.:])[A-Za-z_:][A-Za-z0-9_:]*", s):
        tok = m.group(0)
        if s[m.end():].lstrip().startswith("("):
            continue  # a function or aggregation
        if tok.lower() in PROMQL_KEYWORDS:
            continue
        names.add(tok)
    return names


def shutdown_grace(c: Checks) -> float:
    cfg = load_yaml(DEPLOY / "leadflow.yaml")
    return duration_seconds(cfg.get("daemon", {}).get("shutdown_grace", "60s"))


# ------------------------------------------------------------------- YAML --
def check_yaml_parses(c: Checks) -> None:
    files = sorted(p for p in DEPLOY.rglob("*") if p.suffix in (".yml", ".yaml"))
    files += sorted((REPO / "configs").glob("*.yaml"))
    for p in files:
        try:
            n = len(load_yaml_docs(p))
            c.expect(n > 0, f"YAML parses: {rel(p)} ({n} document{'s' if n != 1 else ''})", "empty file")
        except (yaml.YAMLError, OSError) as e:
            c.fail(f"YAML parses: {rel(p)}: {e}")


# ----------------------------------------------------------- sample config --
def check_sample_config(c: Checks) -> None:
    cfg = load_yaml(DEPLOY / "leadflow.yaml")
    d = cfg.get("daemon", {})
    c.expect(d.get("listen") == "0.0.0.0:8080", "leadflow.yaml: daemon.listen is 0.0.0.0:8080 (containers)")
    c.expect(d.get("token_env") == "LEADFLOW_API_TOKEN", "leadflow.yaml: daemon.token_env is LEADFLOW_API_TOKEN")
    c.expect(str(cfg.get("warehouse", {}).get("uri", "")).startswith("/var/lib/leadflow/"),
             "leadflow.yaml: warehouse under /var/lib/leadflow")
    for p in cfg.get("pipelines", []):
        c.expect(bool(p.get("schedule")) != bool(p.get("every")),
                 f"leadflow.yaml: pipeline {p.get('name')} has exactly one of schedule/every")
        if p.get("schedule"):
            fields = str(p["schedule"]).split()
            c.expect(len(fields) in (6, 7), f"leadflow.yaml: pipeline {p.get('name')} schedule has seconds",
                     f"{p['schedule']!r} has {len(fields)} fields; the daemon's cron needs 6 (sec min hour dom mon dow)")
        for s in p.get("sources", []):
            path = s.get("files", {}).get("path", "")
            c.expect(str(path).startswith("/var/lib/leadflow/"),
                     f"leadflow.yaml: source {s.get('name')} reads under /var/lib/leadflow", str(path))
    copy = DEPLOY / "k8s/base/leadflow.yaml"
    c.expect(copy.read_bytes() == (DEPLOY / "leadflow.yaml").read_bytes(),
             "k8s/base/leadflow.yaml is identical to deploy/leadflow.yaml",
             "copy deploy/leadflow.yaml over it (kustomize cannot read files outside its folder)")


def check_config_schema(c: Checks) -> None:
    """deploy/leadflow.yaml against the committed JSON Schema of config files
    (what `leadflow schema` prints), when the jsonschema module is there."""
    try:
        import jsonschema
    except ImportError:
        if os.environ.get("DEPLOY_CHECK_STRICT") == "1":
            c.fail("python module jsonschema not installed (deploy/check --install)")
        else:
            print("   SKIPPED: python module jsonschema not installed (config schema check)")
        return
    schema = json.loads((REPO / "configs/leadflow.schema.json").read_text(encoding="utf-8"))
    cfg = load_yaml(DEPLOY / "leadflow.yaml")
    note = ""
    if "daemon" not in schema.get("properties", {}):
        # A schema from before the daemon existed: check the rest.
        cfg = copy.deepcopy(cfg)
        cfg.pop("daemon", None)
        for p in cfg.get("pipelines", []):
            for k in ("schedule", "every", "time_zone"):
                p.pop(k, None)
        note = " (the schema has no daemon keys yet: checked without daemon/schedule)"
    validator = jsonschema.validators.validator_for(schema)(schema)
    errors = [f"{'.'.join(map(str, e.path)) or '(top)'}: {e.message}" for e in validator.iter_errors(cfg)]
    c.expect(not errors, f"leadflow.yaml matches configs/leadflow.schema.json{note}", "; ".join(errors))


# ------------------------------------------------------------------ alerts --
def check_alerts(c: Checks) -> None:
    rules = load_yaml(DEPLOY / "prometheus/alerts.yml")
    tests = load_yaml(DEPLOY / "prometheus/alerts_test.yml")
    readme = (DEPLOY / "README.md").read_text(encoding="utf-8")
    anchors = {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-")
               for h in re.findall(r"^#+\s+(.+)$", readme, flags=re.MULTILINE)}
    alerts = {}
    for g in rules["groups"]:
        for r in g["rules"]:
            if "alert" in r:
                alerts[r["alert"]] = r
    missing = REQUIRED_ALERTS - alerts.keys()
    c.expect(not missing, f"alerts.yml: has {', '.join(sorted(REQUIRED_ALERTS))}", f"missing {sorted(missing)}")

    fired: dict[str, int] = {}
    quiet: dict[str, int] = {}
    for t in tests.get("tests", []):
        for a in t.get("alert_rule_test", []):
            name = a["alertname"]
            (fired if a.get("exp_alerts") else quiet)[name] = 1
    for name, r in sorted(alerts.items()):
        labels, ann = r.get("labels", {}), r.get("annotations", {})
        c.expect(labels.get("severity") in ("critical", "warning", "info"),
                 f"alert {name}: severity label", f"got {labels.get('severity')!r}")
        c.expect(all(ann.get(k) for k in ("summary", "description", "runbook")),
                 f"alert {name}: summary, description and runbook annotations")
        anchor = str(ann.get("runbook", "")).partition("#")[2]
        c.expect(anchor in anchors, f"alert {name}: runbook anchor #{anchor} is a heading in deploy/README.md")
        c.expect(name in fired and name in quiet,
                 f"alert {name}: alerts_test.yml proves it fires and stays quiet",
                 f"fires tested: {name in fired}, quiet tested: {name in quiet}")
        unknown = metric_names(r["expr"]) - SERIES - PROMETHEUS_SERIES
        c.expect(not unknown, f"alert {name}: uses only leadflow metric names", f"unknown {sorted(unknown)}")


# --------------------------------------------------------------- dashboard --
def dashboard_panels(d: dict) -> list[dict]:
    out = []
    for p in d.get("panels", []):
        out.append(p)
        out.extend(p.get("panels", []))  # collapsed rows hold their panels
    return out


def dashboard_exprs(d: dict) -> list[tuple[str, str]]:
    exprs = []
    for p in dashboard_panels(d):
        for t in p.get("targets", []):
            if t.get("expr"):
                exprs.append((p.get("title", "?"), t["expr"]))
    for v in d.get("templating", {}).get("list", []):
        q = v.get("query")
        q = q.get("query") if isinstance(q, dict) else q
        m = re.fullmatch(r"\s*label_values\((.+),\s*\w+\)\s*", str(q or ""))
        if v.get("type") == "query" and m:
            exprs.append((f"variable {v['name']}", m.group(1)))
    return exprs


# Families without a pipeline label (per output, or per process).
NO_PIPELINE_LABEL = {"leadflow_events_delivered_total", "leadflow_event_delivery_failures_total",
                     "leadflow_events_dead_total", "leadflow_build_info", "leadflow_config_reloads_total"}


def unfiltered_pipeline_selectors(expr: str) -> set[str]:
    """Per-pipeline metrics selected without pipeline=~"$pipeline"."""
    out = set()
    for m in re.finditer(r"\b(leadflow_[a-z_]+)\s*(\{[^}]*\})?", expr):
        name, matchers = m.group(1), m.group(2) or ""
        family = re.sub(r"_(bucket|sum|count)$", "", name) if name.startswith("leadflow_run_duration") else name
        if family not in NO_PIPELINE_LABEL and 'pipeline=~"$pipeline"' not in matchers:
            out.add(name)
    return out


def check_dashboard(c: Checks) -> None:
    path = DEPLOY / "grafana/dashboards/leadflow.json"
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        c.fail(f"dashboard JSON loads: {e}")
        return
    c.ok(f"dashboard JSON loads: {rel(path)}")
    c.expect(d.get("uid") == "leadflow" and d.get("title"), "dashboard has uid 'leadflow' and a title")
    variables = {v.get("name"): v for v in d.get("templating", {}).get("list", [])}
    c.expect("pipeline" in variables, "dashboard has the template variable `pipeline`")
    panels = [p for p in dashboard_panels(d) if p.get("type") != "row"]
    no_targets = [p.get("title") for p in panels if not any(t.get("expr") for t in p.get("targets", []))]
    c.expect(not no_targets, f"dashboard: all {len(panels)} panels have queries", f"none in {no_targets}")
    ids = [p.get("id") for p in dashboard_panels(d)]
    c.expect(len(ids) == len(set(ids)), "dashboard: panel ids are unique")
    used: set[str] = set()
    for title, expr in dashboard_exprs(d):
        names = metric_names(expr)
        used |= names
        unknown = names - SERIES
        c.expect(not unknown, f"dashboard `{title}`: metric names {', '.join(sorted(names)) or '(none)'}",
                 f"not leadflow metrics: {sorted(unknown)}")
        if not title.startswith("variable"):
            bare = unfiltered_pipeline_selectors(expr)
            c.expect(not bare, f"dashboard `{title}`: per-pipeline series filtered by $pipeline",
                     f"unfiltered: {sorted(bare)}")
    families = {re.sub(r"_(bucket|sum|count)$", "", n) if re.sub(r"_(bucket|sum|count)$", "", n) in HISTOGRAMS
                else n for n in used}
    missing = METRICS - families
    c.expect(not missing, "dashboard: every leadflow metric family is on a panel", f"missing {sorted(missing)}")


def write_dashboard_rules(out: Path) -> None:
    d = json.loads((DEPLOY / "grafana/dashboards/leadflow.json").read_text(encoding="utf-8"))
    rules = []
    for i, (title, expr) in enumerate(dashboard_exprs(d)):
        for var, value in sorted(GRAFANA_VARS.items(), key=lambda kv: -len(kv[0])):
            expr = expr.replace(var, value)
        rules.append({"record": f"dashboard_query_{i}", "expr": expr, "labels": {"panel": title}})
    out.write_text(yaml.safe_dump({"groups": [{"name": "dashboard-queries", "rules": rules}]}, sort_keys=False))


# -------------------------------------------------------------- Kubernetes --
def k8s_docs() -> dict[str, list[dict]]:
    out = {}
    for p in sorted((DEPLOY / "k8s").rglob("*.yaml")):
        if p.name in ("kustomization.yaml", "leadflow.yaml"):
            continue
        out[rel(p)] = load_yaml_docs(p)
    return out


def check_kustomizations(c: Checks) -> None:
    for k in sorted((DEPLOY / "k8s").rglob("kustomization.yaml")):
        doc = load_yaml(k)
        c.expect(doc.get("kind") == "Kustomization", f"{rel(k)}: kind Kustomization")
        for r in doc.get("resources", []):
            target = (k.parent / r).resolve()
            exists = target.is_file() or (target / "kustomization.yaml").is_file()
            c.expect(exists, f"{rel(k)}: resource {r} exists")
        for g in doc.get("configMapGenerator", []):
            for f in g.get("files", []):
                f = f.split("=", 1)[-1]
                target = (k.parent / f).resolve()
                c.expect(target.is_file() and k.parent in target.parents,
                         f"{rel(k)}: configMapGenerator file {f} exists inside the folder")
        listed = {(k.parent / r).resolve() for r in doc.get("resources", [])}
        for m in sorted(k.parent.glob("*.yaml")):
            if m.name in ("kustomization.yaml", "leadflow.yaml"):
                continue
            c.expect(m.resolve() in listed, f"{rel(k)}: lists {m.name}")


def pod_checks(c: Checks, where: str, pod: dict, grace: float, daemon: bool) -> None:
    sc = pod.get("securityContext", {})
    c.expect(sc.get("runAsNonRoot") is True and sc.get("runAsUser") == 10001,
             f"{where}: pod runs as non-root UID 10001")
    c.expect(sc.get("seccompProfile", {}).get("type") == "RuntimeDefault", f"{where}: seccomp RuntimeDefault")
    c.expect(sc.get("fsGroup") == 10001, f"{where}: fsGroup 10001 (volume writable)")
    c.expect(pod.get("terminationGracePeriodSeconds", 30) > grace,
             f"{where}: terminationGracePeriodSeconds {pod.get('terminationGracePeriodSeconds', 30)} > "
             f"shutdown_grace {grace:.0f}s")
    c.expect(pod.get("automountServiceAccountToken") is False, f"{where}: no service account token")
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    for ctr in pod.get("initContainers", []) + pod.get("containers", []):
        name = f"{where} container {ctr['name']}"
        csc = ctr.get("securityContext", {})
        c.expect(csc.get("readOnlyRootFilesystem") is True and csc.get("allowPrivilegeEscalation") is False
                 and csc.get("capabilities", {}).get("drop") == ["ALL"],
                 f"{name}: read-only root, no privilege escalation, drops ALL capabilities")
        c.expect("memory" in ctr.get("resources", {}).get("limits", {}), f"{name}: memory limit")
        for vm in ctr.get("volumeMounts", []):
            c.expect(vm["name"] in volumes, f"{name}: volume {vm['name']} is defined")
    main = pod["containers"][0]
    mounts = {vm["mountPath"]: vm["name"] for vm in main.get("volumeMounts", [])}
    c.expect(mounts.get("/var/lib/leadflow") == "data" and "persistentVolumeClaim" in volumes.get("data", {}),
             f"{where}: /var/lib/leadflow on the PVC")
    c.expect("/tmp" in mounts, f"{where}: writable /tmp (read-only root)")
    c.expect(volumes.get("config", {}).get("configMap", {}).get("name") == "leadflow-config"
             and mounts.get("/etc/leadflow") == "config", f"{where}: config from ConfigMap leadflow-config")
    if daemon:
        c.expect(main.get("args") == ["daemon", "/etc/leadflow/leadflow.yaml"], f"{where}: runs `leadflow daemon`")
        ports = {p.get("name"): p.get("containerPort") for p in main.get("ports", [])}
        c.expect(ports.get("http") == 8080, f"{where}: container port http 8080")
        probes = {k: main.get(k, {}).get("httpGet", {}) for k in ("livenessProbe", "readinessProbe")}
        c.expect(probes["livenessProbe"].get("path") == "/healthz", f"{where}: liveness probe /healthz")
        c.expect(probes["readinessProbe"].get("path") == "/readyz", f"{where}: readiness probe /readyz")
        env = {e["name"]: e for e in main.get("env", [])}
        ref = env.get("LEADFLOW_API_TOKEN", {}).get("valueFrom", {}).get("secretKeyRef", {})
        c.expect(ref.get("name") == "leadflow-api-token" and ref.get("key") == "token",
                 f"{where}: LEADFLOW_API_TOKEN from Secret leadflow-api-token (key token)")


def check_k8s(c: Checks) -> None:
    check_kustomizations(c)
    generated = {g.get("name") for k in (DEPLOY / "k8s").rglob("kustomization.yaml")
                 for g in load_yaml(k).get("configMapGenerator", [])}
    c.expect("leadflow-config" in generated, "k8s: ConfigMap leadflow-config is generated (the pods mount it)",
             f"generated: {sorted(generated)}")
    grace = shutdown_grace(c)
    docs = k8s_docs()
    by_kind: dict[str, list[tuple[str, dict]]] = {}
    for path, ds in docs.items():
        for d in ds:
            by_kind.setdefault(d.get("kind"), []).append((path, d))
            c.expect("namespace" not in d.get("metadata", {}), f"{path}: {d.get('kind')} is namespace-agnostic")
    c.expect(not by_kind.get("Secret"), "no Secret committed (created with kubectl create secret)")
    pvcs = {d["metadata"]["name"] for _, d in by_kind.get("PersistentVolumeClaim", [])}
    for path, dep in by_kind.get("Deployment", []):
        spec = dep["spec"]
        c.expect(spec.get("replicas") == 1, f"{path}: 1 replica")
        c.expect(spec.get("strategy", {}).get("type") == "Recreate", f"{path}: strategy Recreate")
        pod = spec["template"]["spec"]
        pod_checks(c, path, pod, grace, daemon=True)
        claim = next((v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"]
                      if "persistentVolumeClaim" in v), None)
        c.expect(claim in pvcs, f"{path}: PVC {claim} is defined")
        labels = spec["template"]["metadata"]["labels"]
        c.expect(all(labels.get(k) == v for k, v in spec["selector"]["matchLabels"].items()),
                 f"{path}: selector matches the pod labels")
        ann = spec["template"]["metadata"].get("annotations", {})
        c.expect(ann.get("prometheus.io/port") == "8080" and ann.get("prometheus.io/path") == "/metrics",
                 f"{path}: Prometheus scrape annotations")
        for spath, svc in by_kind.get("Service", []):
            sel = svc["spec"]["selector"]
            c.expect(all(labels.get(k) == v for k, v in sel.items()), f"{spath}: selector matches the daemon pods")
            c.expect(any(p.get("targetPort") == "http" for p in svc["spec"]["ports"]),
                     f"{spath}: targets the named port http")
    for path, cj in by_kind.get("CronJob", []):
        spec = cj["spec"]
        c.expect(spec.get("concurrencyPolicy") == "Forbid", f"{path}: concurrencyPolicy Forbid")
        pod = spec["jobTemplate"]["spec"]["template"]["spec"]
        pod_checks(c, path, pod, grace, daemon=False)
        c.expect(pod["containers"][0].get("args", [])[:2] == ["run", "/etc/leadflow/leadflow.yaml"],
                 f"{path}: runs `leadflow run`")
        claim = next((v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"]
                      if "persistentVolumeClaim" in v), None)
        c.expect(claim in pvcs, f"{path}: PVC {claim} is defined")
    c.expect("create secret generic leadflow-api-token" in (DEPLOY / "README.md").read_text(),
             "README documents creating the Secret")


def write_configmap(out: Path) -> None:
    out.write_text(yaml.safe_dump({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "leadflow-config"},
        "data": {"leadflow.yaml": (DEPLOY / "k8s/base/leadflow.yaml").read_text(encoding="utf-8")},
    }))


def check_rendered(paths: list[str]) -> int:
    """The output of `kubectl kustomize`: the generated (hash-named) ConfigMap
    is what the pods mount and holds deploy/leadflow.yaml; every claim exists."""
    c = Checks(verbose=False)
    want = (DEPLOY / "leadflow.yaml").read_text(encoding="utf-8")
    for path in paths:
        docs = load_yaml_docs(Path(path))
        name = Path(path).stem
        maps = {d["metadata"]["name"]: d for d in docs if d.get("kind") == "ConfigMap"}
        claims = {d["metadata"]["name"] for d in docs if d.get("kind") == "PersistentVolumeClaim"}
        pods = []
        for d in docs:
            if d.get("kind") == "Deployment":
                pods.append(d["spec"]["template"]["spec"])
            elif d.get("kind") == "CronJob":
                pods.append(d["spec"]["jobTemplate"]["spec"]["template"]["spec"])
        c.expect(bool(pods), f"{name}: has a workload")
        for pod in pods:
            for v in pod.get("volumes", []):
                if "configMap" in v:
                    cm = maps.get(v["configMap"]["name"])
                    c.expect(cm is not None, f"{name}: volume {v['name']} mounts a generated ConfigMap",
                             f"{v['configMap']['name']} not in {sorted(maps)}")
                    if cm is not None:
                        c.expect(cm.get("data", {}).get("leadflow.yaml") == want,
                                 f"{name}: ConfigMap {cm['metadata']['name']} holds deploy/leadflow.yaml")
                if "persistentVolumeClaim" in v:
                    c.expect(v["persistentVolumeClaim"]["claimName"] in claims,
                             f"{name}: claim {v['persistentVolumeClaim']['claimName']} is in the output")
    print(f"   rendered kustomizations: {c.passed} checks passed, {len(c.problems)} failed")
    return 1 if c.problems else 0


# ----------------------------------------------------------------- compose --
def check_compose(c: Checks) -> None:
    path = DEPLOY / "docker-compose.yml"
    doc = load_yaml(path)
    services = doc.get("services", {})
    c.expect({"leadflow", "prometheus", "grafana"} <= services.keys(),
             "compose: services leadflow, prometheus, grafana")
    grace = shutdown_grace(c)
    for name, svc in services.items():
        for v in svc.get("volumes", []):
            src = str(v).split(":")[0]
            if src.startswith("./"):
                c.expect((DEPLOY / src).exists(), f"compose {name}: bind-mounted {src} exists")
        c.expect(not any(str(p).split(":")[0] not in ("127.0.0.1",) for p in svc.get("ports", [])),
                 f"compose {name}: ports published on 127.0.0.1 only")
    lf = services.get("leadflow", {})
    c.expect(lf.get("build", {}).get("dockerfile") == "deploy/Dockerfile" and lf.get("build", {}).get("context") == "..",
             "compose leadflow: builds deploy/Dockerfile from the repo root")
    c.expect(duration_seconds(lf.get("stop_grace_period", "10s")) > grace,
             f"compose leadflow: stop_grace_period {lf.get('stop_grace_period')} > shutdown_grace {grace:.0f}s")
    c.expect("LEADFLOW_API_TOKEN" in lf.get("environment", {}), "compose leadflow: token from the environment")
    c.expect(lf.get("read_only") is True and lf.get("cap_drop") == ["ALL"], "compose leadflow: read-only, no caps")
    vols = [str(v) for v in lf.get("volumes", [])]
    c.expect("./leadflow.yaml:/etc/leadflow/leadflow.yaml:ro" in vols, "compose leadflow: mounts deploy/leadflow.yaml")
    c.expect(any(v.endswith(":/var/lib/leadflow") for v in vols), "compose leadflow: data volume at /var/lib/leadflow")
    c.expect(any(":/var/lib/leadflow/drops" in v for v in vols), "compose leadflow: drop folder mounted")
    prom = load_yaml(DEPLOY / "prometheus/prometheus.yml")
    jobs = {j["job_name"]: j for j in prom.get("scrape_configs", [])}
    targets = [t for sc in jobs.get("leadflow", {}).get("static_configs", []) for t in sc.get("targets", [])]
    c.expect(targets == ["leadflow:8080"], "prometheus.yml: job leadflow scrapes leadflow:8080 (compose service)")
    c.expect(prom.get("rule_files") == ["alerts.yml"], "prometheus.yml: loads alerts.yml")
    pvols = [str(v) for v in services.get("prometheus", {}).get("volumes", [])]
    c.expect("./prometheus/alerts.yml:/etc/prometheus/alerts.yml:ro" in pvols,
             "compose prometheus: alerts.yml beside prometheus.yml")
    ds = load_yaml(DEPLOY / "grafana/provisioning/datasources/prometheus.yml")
    c.expect(ds["datasources"][0].get("url") == "http://prometheus:9090", "grafana datasource: compose Prometheus")
    prov = load_yaml(DEPLOY / "grafana/provisioning/dashboards/leadflow.yml")
    gvols = [str(v) for v in services.get("grafana", {}).get("volumes", [])]
    dash_path = prov["providers"][0]["options"]["path"]
    c.expect(f"./grafana/dashboards:{dash_path}:ro" in gvols, f"compose grafana: dashboards mounted at {dash_path}")


# -------------------------------------------------------------- Dockerfile --
def check_dockerfile(c: Checks) -> None:
    text = (DEPLOY / "Dockerfile").read_text(encoding="utf-8")
    froms = re.findall(r"^FROM\s+(\S+)", text, flags=re.MULTILINE)
    c.expect(len(froms) >= 2 and "rust:${RUST_VERSION}-slim-bookworm" in froms[0],
             "Dockerfile: multi-stage, rust slim-bookworm builder")
    c.expect(re.search(r"^ARG RUST_VERSION=1\.95$", text, flags=re.MULTILINE) is not None, "Dockerfile: Rust 1.95")
    c.expect("distroless/cc" in froms[-1] or "debian:bookworm-slim" in froms[-1],
             f"Dockerfile: slim runtime ({froms[-1]})")
    c.expect(all(m in text for m in ("target=/usr/local/cargo/registry", "target=/src/target")),
             "Dockerfile: BuildKit cache mounts for the cargo registry and target")
    c.expect("cargo build --release --locked -p leadflow --bin leadflow" in text, "Dockerfile: builds the leadflow bin")
    c.expect(re.search(r"^USER 10001:10001$", text, flags=re.MULTILINE) is not None, "Dockerfile: USER 10001")
    c.expect(re.search(r"^EXPOSE 8080$", text, flags=re.MULTILINE) is not None, "Dockerfile: EXPOSE 8080")
    c.expect('CMD ["daemon", "/etc/leadflow/leadflow.yaml"]' in text, "Dockerfile: runs the daemon by default")
    ignore = (REPO / ".dockerignore").read_text(encoding="utf-8").split()
    for needed in ("!Cargo.toml", "!Cargo.lock", "!pipeline/", "!connectors/", "!transforms/", "!sinks/",
                   "!deploy/leadflow.yaml"):
        c.expect(needed in ignore, f".dockerignore keeps {needed[1:]} in the build context")
    members = re.search(r"members\s*=\s*\[([^\]]*)\]", (REPO / "Cargo.toml").read_text())
    for m in re.findall(r'"([^"]+)"', members.group(1) if members else ""):
        c.expect(f"!{m}/" in ignore, f".dockerignore keeps workspace member {m}/")


# ----------------------------------------------------------------- systemd --
SYSTEMD_REQUIRED = {
    "ExecStart": "/usr/local/bin/leadflow daemon /etc/leadflow/leadflow.yaml",
    "ExecReload": "/bin/kill -HUP $MAINPID",
    "DynamicUser": "yes",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "NoNewPrivileges": "yes",
    "CapabilityBoundingSet": "",
    "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
    "MemoryDenyWriteExecute": "yes",
    "Restart": "on-failure",
    "EnvironmentFile": "/etc/leadflow/leadflow.env",
}


def check_systemd(c: Checks) -> None:
    path = DEPLOY / "systemd/leadflow.service"
    keys: dict[str, list[str]] = {}
    section = None
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line
            continue
        k, _, v = line.partition("=")
        keys.setdefault(f"{section}{k.strip()}", []).append(v.strip())
    svc = {k[len("[Service]"):]: v for k, v in keys.items() if k.startswith("[Service]")}
    for k, want in SYSTEMD_REQUIRED.items():
        c.expect(want in svc.get(k, []), f"leadflow.service: {k}={want}", f"got {svc.get(k)}")
    c.expect(any("@system-service" in v for v in svc.get("SystemCallFilter", [])),
             "leadflow.service: SystemCallFilter=@system-service")
    c.expect(any("leadflow" in v.split() for v in svc.get("StateDirectory", [])), "leadflow.service: StateDirectory")
    grace = shutdown_grace(c)
    stop = duration_seconds(svc.get("TimeoutStopSec", ["90"])[0])
    c.expect(stop > grace, f"leadflow.service: TimeoutStopSec {stop:.0f}s > shutdown_grace {grace:.0f}s")
    c.expect("[Install]WantedBy" in keys, "leadflow.service: [Install] WantedBy")
    env = (DEPLOY / "systemd/leadflow.env.example").read_text()
    c.expect(re.search(r"^LEADFLOW_API_TOKEN=$", env, flags=re.MULTILINE) is not None,
             "leadflow.env.example: LEADFLOW_API_TOKEN (empty, no secret committed)")


def main(argv: list[str]) -> int:
    if len(argv) == 3 and argv[1] == "dashboard-rules":
        write_dashboard_rules(Path(argv[2]))
        return 0
    if len(argv) >= 3 and argv[1] == "rendered":
        return check_rendered(argv[2:])
    if len(argv) == 3 and argv[1] == "configmap":
        write_configmap(Path(argv[2]))
        return 0
    if len(argv) not in (2, 3) or argv[1] != "static" or argv[2:] not in ([], ["-v"]):
        print(__doc__, file=sys.stderr)
        return 2
    c = Checks(verbose=argv[2:] == ["-v"])
    for title, fn in [
        ("YAML files parse", check_yaml_parses),
        ("sample config", check_sample_config),
        ("sample config against the config JSON Schema", check_config_schema),
        ("alert rules: names, labels, runbooks, tests", check_alerts),
        ("Grafana dashboard: panels and metric names", check_dashboard),
        ("Kubernetes: kustomizations, security, probes, references", check_k8s),
        ("compose, Prometheus and Grafana provisioning agree", check_compose),
        ("Dockerfile and .dockerignore", check_dockerfile),
        ("systemd unit keys", check_systemd),
    ]:
        before = c.passed
        if c.verbose:
            print(f"-- {title}")
        try:
            fn(c)
        except Exception as e:  # noqa: BLE001  (a malformed file: a failure line, not a traceback)
            c.fail(f"{title}: {type(e).__name__}: {e}")
        if not c.verbose:
            print(f"  {c.passed - before:3d} ok  {title}")
    print(f"  structural checks: {c.passed} passed, {len(c.problems)} failed")
    return 1 if c.problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
