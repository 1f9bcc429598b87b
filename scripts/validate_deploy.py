#!/usr/bin/env python3
"""Checks of scripts/validate-deploy.sh that need a program: run it through that script, which
installs the tools this uses (kubernetes-validate, pykustomize, dockerfile-parse, PyYAML) into
.tools/venv.

Writes to --work: crds.json (prometheus-operator objects for the npm schema check) and
rules-*.yml (PromQL for promtool). Prints one line per failure; exits 1 if there was any.
"""

from __future__ import annotations

import argparse
import base64
import asyncio
import copy
import json
import re
import shutil
import sys
import tomllib
from pathlib import Path

import kubernetes_validate
import yaml
from dockerfile_parse import DockerfileParser

ROOT = Path(__file__).resolve().parent.parent
# The oldest Kubernetes the manifests support (preStop `sleep` needs 1.30) and the newest schema
# kubernetes-validate ships.
K8S_VERSIONS = ["1.30.0", kubernetes_validate.utils.latest_version()]
CRD_GROUPS = {"monitoring.coreos.com"}
# Read by the object-store clients (object_store's from_env) under the providers' own names.
PROVIDER_ENV = re.compile(r"^(AWS_[A-Z0-9_]+|AZURE_[A-Z0-9_]+)$")
# Metrics every scrape has besides the services' own.
PROMETHEUS_BUILTIN = {"up", "scrape_duration_seconds", "scrape_samples_scraped"}
# Metrics the dashboard must show.
DASHBOARD_REQUIRED = {
    "api_service_messages_persisted_total": "messages per second",
    "ws_gateway_sockets_open": "open sockets per gateway",
    "api_service_http_request_duration_seconds_bucket": "REST latency percentiles by route",
    "api_service_http_requests_total": "error rates",
    "api_service_event_publish_failures_total": "event publish failures",
    "ws_gateway_send_queue_overflows_total": "send-queue overflows",
    "process_resident_memory_bytes": "resident memory per process",
    "process_cpu_seconds_total": "CPU per process",
    "process_open_fds": "open file descriptors per process",
    "process_threads": "threads per process",
    "api_service_build_info": "running builds",
    "ws_gateway_build_info": "running builds",
}

errors: list[str] = []


def fail(msg: str) -> None:
    errors.append(msg)
    print(f"FAIL {msg}")


def ok(msg: str) -> None:
    print(f"ok   {msg}")


def rel(p: Path) -> str:
    try:
        return str(p.relative_to(ROOT))
    except ValueError:
        return str(p)


# ---------------------------------------------------------------------------------------------
# What the code reads and exports


def code_env_names() -> dict[str, set[str]]:
    """Variables each binary reads, from its config.rs: the clap declarations
    (`env = "NAME"`) and the variables read directly (`lookup("NAME")`, `get("NAME")`)."""
    call = re.compile(
        r'(?:\benv\s*=\s*|\b(?:lookup|get|var)\(\s*)"([A-Z][A-Z0-9_]*)"'
    )
    out = {}
    for svc in ("api-service", "ws-gateway"):
        src = (ROOT / svc / "src" / "config.rs").read_text()
        names = set(call.findall(src))
        if len(names) < 10:
            fail(f"{svc}/src/config.rs: found only {sorted(names)}; did the env helpers change?")
        out[svc] = names
    return out


# Prefix of every metric a service defines itself; `process_*` (metrics-process) is shared.
METRIC_PREFIX = {"api-service": "api_service_", "ws-gateway": "ws_gateway_"}
# A handle registration in */src/metrics.rs on a shared_ops::metrics::Registry: the method, then
# the name.
METRIC_DEF = re.compile(
    r"\.(counter|gauge|histogram|counter_vec|gauge_vec|histogram_vec)"
    r'\(\s*"([a-z_:][a-z0-9_:]*)"'
)
# The registry itself: `Registry::new("<prefix>", …)` exports `<prefix>_build_info`.
REGISTRY_DEF = re.compile(r'Registry::new\(\s*"([a-z_]+)"')


def code_metric_names() -> set[str]:
    """Metric names registered in */src/metrics.rs (histograms expand to _bucket/_sum/_count),
    plus the process metrics each lists in PROCESS_METRICS."""
    names: set[str] = set()
    for svc in ("api-service", "ws-gateway"):
        src = (ROOT / svc / "src" / "metrics.rs").read_text()
        src_nc = re.sub(r"//[^\n]*", "", src)
        own = set()
        for ctor, name in METRIC_DEF.findall(src_nc):
            own.add(name)
            if ctor in ("histogram", "histogram_vec"):
                names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
            else:
                names.add(name)
        if len(own) < 10:
            fail(f"{svc}/src/metrics.rs: found only {sorted(own)}; did the registration helpers change?")
        stray = sorted(n for n in own if not n.startswith(METRIC_PREFIX[svc]))
        if stray:
            fail(f"{svc}/src/metrics.rs: metric names without the {METRIC_PREFIX[svc]} prefix: {stray}")
        build_info = f"{METRIC_PREFIX[svc]}build_info"
        registry = REGISTRY_DEF.search(src_nc)
        if not registry or f"{registry.group(1)}_build_info" != build_info:
            fail(f"{svc}/src/metrics.rs: no {build_info} gauge")
        names.add(build_info)
        shared = re.sub(r"//[^\n]*", "", (ROOT / "shared-ops" / "src" / "metrics.rs").read_text())
        listed = re.search(r"PROCESS_METRICS: \[&str; \d+\] = \[(.*?)\];", shared, re.S)
        process = set(re.findall(r'"([a-z_]+)"', listed.group(1))) if listed else set()
        for required in ("process_resident_memory_bytes", "process_cpu_seconds_total",
                         "process_open_fds", "process_threads"):
            if required not in process:
                fail(f"{svc}/src/metrics.rs: PROCESS_METRICS does not list {required}")
        names |= process
    if "ws_gateway_sockets_open" not in names or "api_service_http_requests_total" not in names:
        fail(f"metrics.rs: expected metric names not found (got {sorted(names)})")
    return names


PROMQL_WORDS = {
    # aggregations, functions and keywords that may appear in our expressions
    "sum", "min", "max", "avg", "count", "stddev", "stdvar", "topk", "bottomk", "quantile",
    "count_values", "group", "by", "without", "on", "ignoring", "group_left", "group_right",
    "and", "or", "unless", "bool", "offset", "rate", "irate", "increase", "delta", "idelta",
    "deriv", "histogram_quantile", "clamp_min", "clamp_max", "clamp", "abs", "ceil", "floor",
    "round", "vector", "scalar", "time", "absent", "absent_over_time", "changes", "resets",
    "label_replace", "label_join", "sort", "sort_desc", "avg_over_time", "max_over_time",
    "min_over_time", "sum_over_time", "count_over_time", "last_over_time", "predict_linear",
    "e", "inf", "nan", "le",
}


def promql_metrics(expr: str) -> set[str]:
    """Metric names used in a PromQL expression (good enough for our dashboards and rules)."""
    s = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # strings
    s = re.sub(r"\{[^}]*\}", "", s)  # label matchers
    s = re.sub(r"\[[^\]]*\]", "", s)  # ranges
    s = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", s)
    s = re.sub(r"\b\d+(ms|s|m|h|d|w|y)\b", " ", s)  # durations (offset 5m)
    s = re.sub(r"\b\d+(\.\d+)?(e[+-]?\d+)?\b", " ", s)  # numbers
    words = set(re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", s))
    return {w for w in words if w.lower() not in PROMQL_WORDS}


# ---------------------------------------------------------------------------------------------
# Kubernetes


def load_yaml_docs(text: str, source: str) -> list[dict]:
    try:
        return [d for d in yaml.safe_load_all(text) if d]
    except yaml.YAMLError as e:
        fail(f"{source}: not valid YAML: {e}")
        return []


def kustomize_build(path: Path) -> str | None:
    import pykustomize

    try:
        return asyncio.run(pykustomize.build(str(path))).yaml
    except Exception as e:  # noqa: BLE001 - report any build error
        fail(f"kustomize build {path}: {e}")
        return None


def validate_k8s_doc(doc: dict, source: str, crds: list) -> None:
    api = doc.get("apiVersion", "")
    kind = doc.get("kind", "?")
    name = (doc.get("metadata") or {}).get("name", "?")
    if api.split("/")[0] in CRD_GROUPS:
        crds.append({"source": source, "doc": doc})
        return
    for version in K8S_VERSIONS:
        try:
            kubernetes_validate.validate(copy.deepcopy(doc), version, strict=True)
        except kubernetes_validate.ValidationError as e:
            path = ".".join(str(p) for p in e.path)
            fail(f"{source}: {kind}/{name} invalid for Kubernetes {version}: {path}: {e.message}")
            return
        except kubernetes_validate.SchemaNotFoundError:
            fail(f"{source}: {kind}/{name}: no schema for {api} {kind} in Kubernetes {version}")
            return
        except Exception as e:  # noqa: BLE001
            fail(f"{source}: {kind}/{name}: cannot validate: {e}")
            return


def by_kind(docs: list[dict], kind: str) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in docs if d.get("kind") == kind}


def strip_hash(name: str) -> str:
    """retich-common-9d77f9tk9c -> retich-common (kustomize generator suffix)."""
    return re.sub(r"-[a-z0-9]{10}$", "", name)


def container_env(c: dict, cms: dict, secrets: dict, source: str, who: str) -> dict[str, str]:
    """Environment names -> values ('' when from a secret/field) of one container."""
    env: dict[str, str] = {}
    for ef in c.get("envFrom", []):
        if "configMapRef" in ef:
            n = ef["configMapRef"]["name"]
            if n not in cms:
                fail(f"{source}: {who}: envFrom ConfigMap {n} is not in the output")
                continue
            env.update({k: str(v) for k, v in (cms[n].get("data") or {}).items()})
        elif "secretRef" in ef:
            n = ef["secretRef"]["name"]
            if n not in secrets:
                fail(f"{source}: {who}: envFrom Secret {n} is not in the output")
                continue
            env.update({k: "" for k in (secrets[n].get("data") or {})})
    for e in c.get("env", []):
        vf = e.get("valueFrom") or {}
        if "secretKeyRef" in vf:
            ref = vf["secretKeyRef"]
            s = secrets.get(ref["name"])
            if s is None:
                fail(f"{source}: {who}: env {e['name']}: Secret {ref['name']} is not in the output")
            elif ref["key"] not in {**(s.get("data") or {}), **(s.get("stringData") or {})} and not ref.get(
                "optional"
            ):
                fail(f"{source}: {who}: env {e['name']}: key {ref['key']} missing from Secret {ref['name']}")
        elif "configMapKeyRef" in vf:
            ref = vf["configMapKeyRef"]
            if ref["name"] not in cms:
                fail(f"{source}: {who}: env {e['name']}: ConfigMap {ref['name']} is not in the output")
        env[e["name"]] = str(e.get("value", ""))
    return env


def check_env_names(names: set[str], allowed: set[str], where: str) -> None:
    unknown = sorted(n for n in names if n not in allowed and not PROVIDER_ENV.match(n))
    if unknown:
        fail(f"{where}: environment variables the binary does not read: {', '.join(unknown)}")


def check_pod_security(spec: dict, source: str, who: str) -> None:
    psc = spec.get("securityContext") or {}
    if psc.get("runAsNonRoot") is not True:
        fail(f"{source}: {who}: pod securityContext.runAsNonRoot must be true")
    if not isinstance(psc.get("runAsUser"), int) or psc.get("runAsUser") == 0:
        fail(f"{source}: {who}: pod securityContext.runAsUser must be a non-zero UID")
    if (psc.get("seccompProfile") or {}).get("type") != "RuntimeDefault":
        fail(f"{source}: {who}: pod seccompProfile must be RuntimeDefault")
    if spec.get("automountServiceAccountToken") is not False:
        fail(f"{source}: {who}: automountServiceAccountToken must be false")
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    for c in spec.get("containers", []) + spec.get("initContainers", []):
        cw = f"{who}/{c['name']}"
        sc = c.get("securityContext") or {}
        if sc.get("allowPrivilegeEscalation") is not False:
            fail(f"{source}: {cw}: allowPrivilegeEscalation must be false")
        if sc.get("readOnlyRootFilesystem") is not True:
            fail(f"{source}: {cw}: readOnlyRootFilesystem must be true")
        if "ALL" not in ((sc.get("capabilities") or {}).get("drop") or []):
            fail(f"{source}: {cw}: capabilities.drop must contain ALL")
        if sc.get("privileged"):
            fail(f"{source}: {cw}: must not be privileged")
        res = c.get("resources") or {}
        for kind in ("requests", "limits"):
            for r in ("cpu", "memory"):
                if r not in (res.get(kind) or {}):
                    fail(f"{source}: {cw}: resources.{kind}.{r} missing")
        mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}
        tmp = mounts.get("/tmp")
        if tmp is None or "emptyDir" not in volumes.get(tmp, {}):
            fail(f"{source}: {cw}: read-only root filesystem needs an emptyDir on /tmp")


def probe_path(c: dict, probe: str) -> str | None:
    return ((c.get(probe) or {}).get("httpGet") or {}).get("path")


def prestop_seconds(c: dict) -> int:
    pre = ((c.get("lifecycle") or {}).get("preStop")) or {}
    return int((pre.get("sleep") or {}).get("seconds", 0))


def selector_matches(selector: dict, labels: dict) -> bool:
    ml = (selector or {}).get("matchLabels") or {}
    return bool(ml) and all(labels.get(k) == v for k, v in ml.items())


def check_k8s_output(name: str, docs: list[dict], env_names: dict[str, set[str]], overlay: str) -> None:
    src = f"kustomize build {name}"
    deps = by_kind(docs, "Deployment")
    svcs = by_kind(docs, "Service")
    hpas = by_kind(docs, "HorizontalPodAutoscaler")
    pdbs = by_kind(docs, "PodDisruptionBudget")
    jobs = by_kind(docs, "Job")
    ings = by_kind(docs, "Ingress")
    cms = by_kind(docs, "ConfigMap")
    secrets = by_kind(docs, "Secret")
    sms = by_kind(docs, "ServiceMonitor")
    image = None

    for svc, port in (("api-service", 8082), ("ws-gateway", 8085)):
        d = deps.get(svc)
        if d is None:
            fail(f"{src}: Deployment {svc} missing")
            continue
        pod = d["spec"]["template"]
        spec = pod["spec"]
        labels = pod["metadata"].get("labels") or {}
        if not selector_matches(d["spec"]["selector"], labels):
            fail(f"{src}: Deployment {svc}: selector does not match its pod labels")
        check_pod_security(spec, src, f"Deployment/{svc}")
        c = next((c for c in spec["containers"] if c["name"] == svc), None)
        if c is None:
            fail(f"{src}: Deployment {svc}: no container named {svc}")
            continue
        cmd = (c.get("command") or []) + (c.get("args") or [])
        if cmd[:2] != [f"/usr/local/bin/{svc}", "serve"]:
            fail(f"{src}: Deployment {svc}: runs {cmd}, expected /usr/local/bin/{svc} serve")
        if image is None:
            image = c["image"]
        elif c["image"] != image:
            fail(f"{src}: api-service and ws-gateway must run the same image ({image} vs {c['image']})")
        if probe_path(c, "livenessProbe") != "/health":
            fail(f"{src}: {svc}: livenessProbe must GET /health")
        if probe_path(c, "readinessProbe") != "/ready":
            fail(f"{src}: {svc}: readinessProbe must GET /ready")
        ports = {p.get("name"): p["containerPort"] for p in c.get("ports", [])}
        if ports.get("http") != port:
            fail(f"{src}: {svc}: container port http must be {port}")
        env = container_env(c, cms, secrets, src, f"Deployment/{svc}")
        check_env_names(set(env), env_names[svc], f"{src}: Deployment/{svc}")
        if env.get("PORT", str(port)) != str(port):
            fail(f"{src}: {svc}: PORT={env.get('PORT')} but the container port is {port}")
        if env.get("AUTO_MIGRATE", "false").lower() in ("1", "true", "yes", "on"):
            fail(f"{src}: {svc}: AUTO_MIGRATE must be off in Kubernetes (the migration Job migrates)")
        grace = int(spec.get("terminationGracePeriodSeconds", 30))
        pre = prestop_seconds(c)
        if svc == "ws-gateway":
            drain = int(env.get("WS_DRAIN_SECONDS") or 20)
            if grace <= drain + pre:
                fail(f"{src}: ws-gateway terminationGracePeriodSeconds {grace} must exceed "
                     f"WS_DRAIN_SECONDS {drain} + preStop {pre}")
            else:
                ok(f"{src}: ws-gateway grace {grace}s > drain {drain}s + preStop {pre}s")
            if "GATEWAY_ID" not in env:
                fail(f"{src}: ws-gateway should set GATEWAY_ID (the pod name)")
        else:
            shut = int(env.get("SHUTDOWN_TIMEOUT_SECONDS") or 25)
            if grace <= shut + pre:
                fail(f"{src}: api-service terminationGracePeriodSeconds {grace} must exceed "
                     f"SHUTDOWN_TIMEOUT_SECONDS {shut} + preStop {pre}")
        # Service selecting the pods, port named http
        s = svcs.get(svc)
        if s is None or not selector_matches({"matchLabels": s["spec"].get("selector")}, labels):
            fail(f"{src}: Service {svc} missing or not selecting the {svc} pods")
        elif not any(p.get("port") == port and p.get("name") == "http" for p in s["spec"]["ports"]):
            fail(f"{src}: Service {svc} must expose port {port} named http")
        # HPA and PDB
        h = hpas.get(svc)
        if h is None or h["spec"]["scaleTargetRef"].get("name") != svc or h["spec"]["scaleTargetRef"].get("kind") != "Deployment":
            fail(f"{src}: HorizontalPodAutoscaler {svc} missing or not targeting Deployment {svc}")
        elif svc == "ws-gateway" and overlay != "dev":
            kinds = {m["type"] for m in h["spec"].get("metrics", [])}
            pods_metrics = [m["pods"]["metric"]["name"] for m in h["spec"]["metrics"] if m["type"] == "Pods"]
            if not kinds & {"Pods", "Object", "External"}:
                fail(f"{src}: ws-gateway HPA needs a connection-based metric, not only CPU/memory")
            for m in pods_metrics:
                if m not in METRICS:
                    fail(f"{src}: ws-gateway HPA metric {m} is not exported by the code")
            HPA_METRICS.update(pods_metrics)
        if not any(selector_matches(p["spec"].get("selector"), labels) for p in pdbs.values()):
            fail(f"{src}: no PodDisruptionBudget selects the {svc} pods")
        # Scraping: a ServiceMonitor for the Service, or prometheus.io annotations
        ann = pod["metadata"].get("annotations") or {}
        scraped_by_annotation = ann.get("prometheus.io/scrape") == "true" and ann.get("prometheus.io/port") == str(port)
        scraped_by_sm = s is not None and any(
            selector_matches(sm["spec"].get("selector"), s["metadata"].get("labels") or {}) for sm in sms.values()
        )
        if not (scraped_by_annotation or scraped_by_sm):
            fail(f"{src}: {svc} is not scraped (no prometheus.io annotations, no ServiceMonitor)")
        if overlay == "production" and not scraped_by_sm:
            fail(f"{src}: production should have a ServiceMonitor for {svc}")

    # Migration Job
    mig = [j for j in jobs.values()
           if any(((c.get("command") or []) + (c.get("args") or []))[-2:] == ["migrate", "up"]
                  for c in j["spec"]["template"]["spec"]["containers"])]
    if not mig:
        fail(f"{src}: no Job runs `api-service migrate up`")
    for j in mig:
        jspec = j["spec"]["template"]["spec"]
        check_pod_security(jspec, src, f"Job/{j['metadata']['name']}")
        for c in jspec["containers"]:
            if c["image"] != image:
                fail(f"{src}: migration Job must use the services' image {image}, not {c['image']}")
            env = container_env(c, cms, secrets, src, f"Job/{j['metadata']['name']}")
            check_env_names(set(env), env_names["api-service"], f"{src}: Job/{j['metadata']['name']}")
            if "DATABASE_URL" not in env:
                fail(f"{src}: migration Job has no DATABASE_URL")

    # Ingress: /ws -> ws-gateway, / -> api-service, WebSocket timeouts on /ws
    routes = {}
    for ing in ings.values():
        for rule in ing["spec"].get("rules", []):
            for p in (rule.get("http") or {}).get("paths", []):
                be = p["backend"]["service"]
                routes[p["path"]] = (be["name"], be["port"], ing)
    for path, svc in (("/ws", "ws-gateway"), ("/", "api-service")):
        if path not in routes or routes[path][0] != svc:
            fail(f"{src}: Ingress must route {path} to {svc} (got {routes.get(path, [None])[0]})")
    if "/ws" in routes:
        ann = routes["/ws"][2]["metadata"].get("annotations") or {}
        rt = int(ann.get("nginx.ingress.kubernetes.io/proxy-read-timeout", "60"))
        if rt < 600:
            fail(f"{src}: the /ws Ingress needs a long proxy-read-timeout for WebSockets (has {rt})")
    if overlay == "production":
        check_nats_cluster(src, docs, pdbs, secrets)
    if image and overlay == "production" and (image.endswith(":latest") or ":" not in image.split("/")[-1]):
        fail(f"{src}: production must pin an image tag or digest, not {image}")
    ok(f"{src}: {len(docs)} objects; deployments, services, HPAs, PDBs, job, ingress, security, env")


def check_nats_cluster(src: str, docs: list[dict], pdbs: dict, secrets: dict) -> None:
    """Production runs NATS as a cluster: 3+ nodes routed to each other, one per machine, a PDB
    that keeps a majority, and NATS_URL listing every node."""
    sts = by_kind(docs, "StatefulSet").get("nats")
    if sts is None:
        fail(f"{src}: production needs the NATS cluster (StatefulSet nats)")
        return
    replicas = int(sts["spec"].get("replicas", 1))
    if replicas < 3:
        fail(f"{src}: StatefulSet nats has {replicas} replicas; a cluster needs 3")
    spec = sts["spec"]["template"]["spec"]
    check_pod_security(spec, src, "StatefulSet/nats")
    labels = sts["spec"]["template"]["metadata"].get("labels") or {}
    anti = (((spec.get("affinity") or {}).get("podAntiAffinity") or {})
            .get("requiredDuringSchedulingIgnoredDuringExecution") or [])
    if not any(t.get("topologyKey") == "kubernetes.io/hostname" for t in anti):
        fail(f"{src}: NATS nodes must be on different machines (podAntiAffinity on hostname)")
    if not any(selector_matches(p["spec"].get("selector"), labels) for p in pdbs.values()):
        fail(f"{src}: no PodDisruptionBudget selects the NATS pods")
    conf = next((cm["data"].get("nats.conf", "") for cm in by_kind(docs, "ConfigMap").values()
                 if "nats.conf" in (cm.get("data") or {})), "")
    svc = sts["spec"].get("serviceName", "")
    for i in range(replicas):
        if f"nats-{i}.{svc}:6222" not in conf:
            fail(f"{src}: nats.conf does not route to nats-{i}.{svc}:6222")
    secret = next((s for name, s in secrets.items() if strip_hash(name) == "retich-secrets"), None)
    if secret is not None:
        data = {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}
        data.update(secret.get("stringData") or {})
        urls = data.get("NATS_URL", "").split(",")
        for i in range(replicas):
            if not any(f"nats-{i}.{svc}" in u for u in urls):
                fail(f"{src}: NATS_URL does not list nats-{i}.{svc}")
    ok(f"{src}: NATS cluster of {replicas} nodes, routed, spread, PDB, NATS_URL lists every node")


# ---------------------------------------------------------------------------------------------


def check_kubernetes(work: Path, env_names: dict[str, set[str]]) -> None:
    k8s = ROOT / "k8s"
    build_root = work / "k8s"
    shutil.copytree(k8s, build_root)
    # Overlays whose real secrets.env is not committed build with the example values.
    for example in build_root.glob("overlays/*/secrets.env.example"):
        target = example.with_name("secrets.env")
        if not target.exists():
            shutil.copy(example, target)
    kdirs = sorted(p.parent for p in build_root.rglob("kustomization.yaml"))
    if not any(p.name == "production" for p in kdirs):
        fail("k8s/overlays/production is missing")
    crds: list[dict] = []
    for kdir in kdirs:
        name = str(kdir.relative_to(work))
        # every resource file as written
        kust = yaml.safe_load((kdir / "kustomization.yaml").read_text())
        for res in kust.get("resources", []):
            f = kdir / res
            if f.is_file():
                for d in load_yaml_docs(f.read_text(), name + "/" + res):
                    validate_k8s_doc(d, f"{name}/{res}", [])
        out = kustomize_build(kdir)
        if out is None:
            continue
        docs = load_yaml_docs(out, f"kustomize build {name}")
        for d in docs:
            validate_k8s_doc(d, f"kustomize build {name}", crds)
        overlay = kdir.name if kdir.parent.name == "overlays" else "base"
        check_k8s_output(name, docs, env_names, overlay)
        if overlay == "production":
            check_prometheus_rule(docs, work)
    (work / "crds.json").write_text(json.dumps(crds))
    ok(f"Kubernetes schemas ({', '.join(K8S_VERSIONS)}, strict) for {len(kdirs)} kustomizations")


def check_prometheus_rule(docs: list[dict], work: Path) -> None:
    rules = by_kind(docs, "PrometheusRule")
    alerts = yaml.safe_load((ROOT / "deploy/prometheus/alerts.yml").read_text())
    if not rules:
        fail("k8s/overlays/production: no PrometheusRule")
        return
    for name, r in rules.items():
        if r["spec"].get("groups") != alerts.get("groups"):
            fail(f"PrometheusRule {name} differs from deploy/prometheus/alerts.yml (keep them identical)")
        f = work / f"rules-prometheusrule-{name}.yml"
        f.write_text(f"# PrometheusRule {name} (k8s/overlays/production)\n" + yaml.safe_dump({"groups": r["spec"]["groups"]}))


# ---------------------------------------------------------------------------------------------
# docker compose


def interpolate(text: str) -> str:
    """${VAR:-default} / ${VAR-default} -> default; ${VAR} -> '' (as with an empty environment)."""
    return re.sub(r"\$\{[A-Za-z_][A-Za-z0-9_]*(?::?-([^}]*))?\}", lambda m: m.group(1) or "", text)


def check_compose(env_names: dict[str, set[str]]) -> None:
    src = "docker-compose.yml"
    doc = yaml.safe_load(interpolate((ROOT / src).read_text()))
    services = doc.get("services") or {}
    volumes = set((doc.get("volumes") or {}).keys())

    def img(s: str) -> str:
        return str(services.get(s, {}).get("image", ""))

    for s, prefix in (("postgres", "postgres:16"), ("redis", "redis:7"), ("nats", "nats:2.10"),
                      ("prometheus", "prom/prometheus"), ("grafana", "grafana/grafana")):
        if not img(s).startswith(prefix):
            fail(f"{src}: service {s} must use {prefix}* (has {img(s) or 'nothing'})")
    nats_cmd = services.get("nats", {}).get("command") or []
    if "-js" not in nats_cmd and "--jetstream" not in nats_cmd:
        fail(f"{src}: nats must run with JetStream (-js)")

    retich = {n: s for n, s in services.items() if "build" in s}
    binaries = {}
    for n, s in retich.items():
        ep = s.get("entrypoint") or ["/usr/local/bin/api-service"]
        binaries[n] = Path(ep[0]).name
    for want in ("api-service", "ws-gateway"):
        if want not in services or binaries.get(want) != want:
            fail(f"{src}: service {want} must run the {want} binary of the project's image")
    if len({s.get("image") for s in retich.values()}) != 1:
        fail(f"{src}: the project's services must share one image (one image, two entry points)")

    for n, s in services.items():
        deps = s.get("depends_on") or {}
        if isinstance(deps, list):
            deps = {d: {} for d in deps}
        for dep, cond in deps.items():
            if dep not in services:
                fail(f"{src}: {n} depends on unknown service {dep}")
            c = (cond or {}).get("condition")
            if c == "service_healthy" and "healthcheck" not in services.get(dep, {}):
                fail(f"{src}: {n} waits for {dep} to be healthy but {dep} has no healthcheck")
        for v in s.get("volumes") or []:
            source = v.split(":")[0] if isinstance(v, str) else v.get("source")
            if source.startswith("."):
                if not (ROOT / source).exists():
                    fail(f"{src}: {n} mounts {source}, which does not exist")
            elif source not in volumes:
                fail(f"{src}: {n} uses volume {source}, not declared under volumes:")
        one_shot = str(s.get("restart", "")) == "no"
        if not one_shot and "healthcheck" not in s:
            fail(f"{src}: service {n} has no healthcheck")

    for n, s in retich.items():
        binary = binaries[n]
        env = s.get("environment") or {}
        if isinstance(env, list):
            env = dict(e.split("=", 1) for e in env)
        check_env_names(set(env), env_names[binary], f"{src}: {n}")
        if str(s.get("restart", "")) != "no":
            hc = (s.get("healthcheck") or {}).get("test") or []
            if hc[:1] != ["CMD"] or Path(hc[1]).name != binary or hc[2:] != ["healthcheck"]:
                fail(f"{src}: {n}: healthcheck must be [CMD, /usr/local/bin/{binary}, healthcheck] "
                     "(the image has no shell or wget)")
        if s.get("read_only") is not True or "ALL" not in (s.get("cap_drop") or []):
            fail(f"{src}: {n}: run read_only with cap_drop [ALL], as in Kubernetes")

    api = services.get("api-service", {})
    api_env = api.get("environment") or {}
    migrates = str(api_env.get("AUTO_MIGRATE", "false")).lower() in ("1", "true", "yes", "on")
    migrate_svc = [n for n, s in retich.items() if (s.get("command") or [])[:2] == ["migrate", "up"]]
    waits = any((api.get("depends_on") or {}).get(m, {}).get("condition") == "service_completed_successfully"
                for m in migrate_svc)
    if not (migrates or waits):
        fail(f"{src}: api-service must migrate before serving (AUTO_MIGRATE=true, or depend on a "
             "`migrate up` service with condition service_completed_successfully)")

    gw = services.get("ws-gateway", {})
    nofile = ((gw.get("ulimits") or {}).get("nofile"))
    hard = nofile if isinstance(nofile, int) else (nofile or {}).get("hard", 0)
    if int(hard) < 110000:
        fail(f"{src}: ws-gateway needs ulimits.nofile >= 110000 for 100K sockets (has {hard})")
    drain = int((gw.get("environment") or {}).get("WS_DRAIN_SECONDS") or 20)
    grace = str(gw.get("stop_grace_period", "10s"))
    m = re.fullmatch(r"(\d+)s", grace)
    if not m or int(m.group(1)) <= drain:
        fail(f"{src}: ws-gateway stop_grace_period ({grace}) must exceed WS_DRAIN_SECONDS ({drain}s)")

    # Prometheus scrapes both services on their ports
    prom = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    targets = set()
    for job in prom.get("scrape_configs", []):
        for sd in job.get("dns_sd_configs", []):
            targets |= {(nm, sd.get("port")) for nm in sd.get("names", [])}
        for sc in job.get("static_configs", []):
            for t in sc.get("targets", []):
                h, _, p = t.partition(":")
                targets.add((h, int(p) if p else None))
    for svc, port in (("api-service", 8082), ("ws-gateway", 8085)):
        if (svc, port) not in targets:
            fail(f"deploy/prometheus/prometheus.yml: does not scrape {svc}:{port}")
    mounts = " ".join(str(v) for v in services.get("grafana", {}).get("volumes") or [])
    for d in ("deploy/grafana/provisioning", "deploy/grafana/dashboards"):
        if d not in mounts:
            fail(f"{src}: grafana must mount ./{d}")
    ok(f"{src}: services, health checks, env names, migration order, nofile, drain, scraping")


# ---------------------------------------------------------------------------------------------
# Dockerfile


def check_dockerfile() -> None:
    src = "Dockerfile"
    text = (ROOT / src).read_text()
    if not text.startswith("# syntax="):
        fail(f"{src}: the `# syntax=` parser directive must be the first line")
    dfp = DockerfileParser(path=str(ROOT / src))
    instr = dfp.structure
    froms = [i for i in instr if i["instruction"] == "FROM"]
    if len(froms) < 2:
        fail(f"{src}: expected a multi-stage build (build stage + runtime stage)")
    final_from = froms[-1]["value"]
    if "distroless" not in final_from:
        fail(f"{src}: the runtime stage should be distroless (is {final_from})")
    last_from_idx = instr.index(froms[-1])
    final = instr[last_from_idx:]
    users = [i["value"] for i in final if i["instruction"] == "USER"]
    if not users or not re.fullmatch(r"[1-9][0-9]*(:[0-9]+)?", users[-1]):
        fail(f"{src}: the runtime stage must end with a numeric non-root USER (Kubernetes checks runAsNonRoot)")
    copies = " ".join(i["value"] for i in final if i["instruction"] == "COPY")
    for b in ("api-service", "ws-gateway"):
        if b not in copies:
            fail(f"{src}: the runtime image must contain the {b} binary")
    build = instr[:last_from_idx]
    build_copies = " ".join(i["value"] for i in build if i["instruction"] == "COPY")
    cargo = tomllib.loads((ROOT / "Cargo.toml").read_text())
    for member in cargo["workspace"]["members"] + ["migrations", "Cargo.lock"]:
        if not re.search(rf"(^|\s){re.escape(member)}(\s|$)", build_copies):
            fail(f"{src}: the build stage does not COPY {member} (a workspace member or build input)")
    if not any("cargo build" in i["value"] and "--locked" in i["value"] for i in build if i["instruction"] == "RUN"):
        fail(f"{src}: the build stage must run `cargo build --locked`")
    di = (ROOT / ".dockerignore").read_text().split() if (ROOT / ".dockerignore").exists() else []
    if not any(p in di for p in ("target", "/target", "**/target")):
        fail(".dockerignore must exclude target/")
    ok(f"{src}: multi-stage, distroless, numeric non-root user, both binaries, all members copied")


# ---------------------------------------------------------------------------------------------
# Grafana, Prometheus rules, adapter


def grafana_exprs(dash: dict) -> list[tuple[str, str]]:
    out = []

    def walk(panels):
        for p in panels:
            for t in p.get("targets", []):
                if t.get("expr"):
                    out.append((f"panel {p.get('id')} '{p.get('title')}' {t.get('refId')}", t["expr"]))
            walk(p.get("panels", []))

    walk(dash.get("panels", []))
    return out


def substitute_grafana(expr: str) -> str:
    expr = re.sub(r"\$__(rate_interval|interval|range)", "5m", expr)
    return re.sub(r"\$\{?[A-Za-z_][A-Za-z0-9_]*\}?", ".*", expr)


def check_grafana(work: Path) -> None:
    src = "deploy/grafana/dashboards/retich-messaging.json"
    try:
        dash = json.loads((ROOT / src).read_text())
    except (OSError, json.JSONDecodeError) as e:
        fail(f"{src}: {e}")
        return
    for key in ("uid", "title", "panels", "schemaVersion"):
        if key not in dash:
            fail(f"{src}: missing {key}")
    ids = []

    def collect(panels):
        for p in panels:
            ids.append(p.get("id"))
            if "gridPos" not in p:
                fail(f"{src}: panel {p.get('title')} has no gridPos")
            collect(p.get("panels", []))

    collect(dash.get("panels", []))
    if len(ids) != len(set(ids)) or None in ids:
        fail(f"{src}: panel ids must be present and unique")
    exprs = grafana_exprs(dash)
    variables = dash.get("templating", {}).get("list", [])
    for v in variables:
        q = v.get("query")
        q = q.get("query") if isinstance(q, dict) else q
        if v.get("type") == "query" and q:
            m = re.fullmatch(r"label_values\((\w+),\s*\w+\)", q)
            if not m:
                fail(f"{src}: variable {v['name']}: unexpected query {q}")
            else:
                exprs.append((f"variable {v['name']}", m.group(1)))
    used = set()
    for where, e in exprs:
        for m in promql_metrics(substitute_grafana(e)):
            used.add(m)
            if m not in METRICS and m not in PROMETHEUS_BUILTIN:
                fail(f"{src}: {where}: metric {m} is not exported by api-service or ws-gateway")
    for m, what in DASHBOARD_REQUIRED.items():
        if m not in used:
            fail(f"{src}: no panel uses {m} ({what})")
    # Datasource: the provisioned uid is the dashboard's default
    ds_prov = yaml.safe_load((ROOT / "deploy/grafana/provisioning/datasources/prometheus.yml").read_text())
    uids = {d.get("uid") for d in ds_prov.get("datasources", [])}
    dsvar = next((v for v in variables if v.get("type") == "datasource"), None)
    if dsvar is None or (dsvar.get("current") or {}).get("value") not in uids:
        fail(f"{src}: the datasource variable's default must be a provisioned datasource uid {sorted(uids)}")
    prov = yaml.safe_load((ROOT / "deploy/grafana/provisioning/dashboards/retich.yml").read_text())
    paths = [p.get("options", {}).get("path") for p in prov.get("providers", [])]
    compose = (ROOT / "docker-compose.yml").read_text()
    for p in paths:
        if f"./deploy/grafana/dashboards:{p}" not in compose:
            fail(f"deploy/grafana/provisioning/dashboards/retich.yml: {p} is not where compose mounts the dashboards")
    # PromQL syntax: promtool parses them as recording rules
    rules = [{"record": f"dashboard:expr_{i}", "expr": substitute_grafana(e)} for i, (_, e) in enumerate(exprs)]
    (work / "rules-dashboard.yml").write_text(
        f"# {src} ({len(rules)} expressions)\n" + yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]})
    )
    ok(f"{src}: {len(ids)} panels, {len(exprs)} expressions, metric names exist in the code")


def check_alert_and_adapter_metrics() -> None:
    src = "deploy/prometheus/alerts.yml"
    alerts = yaml.safe_load((ROOT / src).read_text())
    n = 0
    for g in alerts.get("groups", []):
        for r in g.get("rules", []):
            n += 1
            for m in promql_metrics(str(r.get("expr", ""))):
                if m not in METRICS and m not in PROMETHEUS_BUILTIN:
                    fail(f"{src}: {r.get('alert') or r.get('record')}: metric {m} is not exported by the code")
    ok(f"{src}: {n} rules on existing metric names")
    src = "deploy/prometheus-adapter/values.yaml"
    vals = yaml.safe_load((ROOT / src).read_text())
    served = set()
    for rule in (vals.get("rules") or {}).get("custom", []):
        metric = re.match(r"\s*'?([a-z_:][a-z0-9_:]*)", rule["seriesQuery"]).group(1)
        if metric not in METRICS:
            fail(f"{src}: seriesQuery metric {metric} is not exported by the code")
        served.add((rule.get("name") or {}).get("as") or metric)
    for m in HPA_METRICS:
        if m not in served:
            fail(f"{src}: the HPA metric {m} is not served by a prometheus-adapter rule")
    ok(f"{src}: serves {sorted(served)}")


# ---------------------------------------------------------------------------------------------
# docs/deployment.md environment table


def check_docs(env_names: dict[str, set[str]]) -> None:
    src = "docs/deployment.md"
    path = ROOT / src
    if not path.exists():
        fail(f"{src} is missing")
        return
    documented = set()
    text = path.read_text()
    if "\n## Environment variables\n" not in text:
        fail(f"{src}: no '## Environment variables' section")
        return
    section = text.split("\n## Environment variables\n", 1)[1].split("\n## ", 1)[0]
    for line in section.splitlines():
        if line.startswith("| `"):
            first = line.split("|")[1]
            documented |= set(re.findall(r"`([A-Z][A-Z0-9_]*)`", first))
    everything = env_names["api-service"] | env_names["ws-gateway"]
    missing = sorted(everything - documented)
    if missing:
        fail(f"{src}: the environment table lacks {', '.join(missing)}")
    extra = sorted(n for n in documented - everything if not PROVIDER_ENV.match(n))
    if extra:
        fail(f"{src}: the environment table names variables the code does not read: {', '.join(extra)}")
    ok(f"{src}: environment table covers the {len(everything)} variables the code reads")


METRICS: set[str] = set()
HPA_METRICS: set[str] = set()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", required=True, type=Path)
    args = ap.parse_args()
    env_names = code_env_names()
    METRICS.update(code_metric_names())
    check_kubernetes(args.work, env_names)
    check_compose(env_names)
    check_dockerfile()
    check_grafana(args.work)
    check_alert_and_adapter_metrics()
    check_docs(env_names)
    if errors:
        print(f"\n{len(errors)} problem(s) found", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
