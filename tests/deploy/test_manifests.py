"""docker-compose.yml and k8s/ validated offline by the real tools (scripts/validate-deploy.sh)."""

from __future__ import annotations

import shutil
import subprocess

import pytest
import yaml

from tests.conftest import IN_CI
from tests.helpers import REPO


def test_validate_deploy_script_passes() -> None:
    tools = ("check-jsonschema", "kubernetes-validate", "kubectl", "docker-compose")
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if missing and not IN_CI:
        pytest.skip(f"missing validators: {missing}")
    result = subprocess.run(["bash", "scripts/validate-deploy.sh"], cwd=REPO, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_describes_the_same_system() -> None:
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"gateway", "nlp", "dialogue", "llm", "redis", "postgres"} <= set(services)
    for name, port in (("gateway", 8000), ("nlp", 8001), ("dialogue", 8002), ("llm", 8003)):
        service = services[name]
        assert "healthcheck" in service
        assert service["command"][:2] == ["serve", name]
        assert service["command"][service["command"].index("--port") + 1] == str(port)
        for dependency, condition in service.get("depends_on", {}).items():
            assert condition["condition"] == "service_healthy", (name, dependency)
    assert services["dialogue"]["depends_on"].keys() >= {"nlp", "llm"}
    assert "dialogue" in services["gateway"]["depends_on"]


def test_k8s_has_a_deployment_and_service_per_service() -> None:
    kinds: dict[str, set[str]] = {}
    for path in (REPO / "k8s").glob("*.yaml"):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and "kind" in doc and "metadata" in doc:
                kinds.setdefault(doc["kind"], set()).add(doc["metadata"]["name"])
    for name in ("gateway", "nlp", "dialogue", "llm"):
        assert any(name in n for n in kinds["Deployment"]), name
        assert any(name in n for n in kinds["Service"]), name
    assert kinds.get("ConfigMap") and kinds.get("Secret")
