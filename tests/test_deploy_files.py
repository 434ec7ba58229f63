"""Static checks of the production-shaped stack: docker-compose.yml, the Prometheus and
Grafana files under deploy/ and their docs agree with each other and with the code."""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Iterator, Mapping
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import typer.core
import typer.main
import yaml

from recsys.api_keys import new_key
from recsys.settings import Settings
from recsys_cli.main import app as cli_app

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"
PROMETHEUS = ROOT / "deploy" / "prometheus" / "prometheus.yml"
GRAFANA = ROOT / "deploy" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "recommendation-system.json"
CONFIGURATION_DOC = ROOT / "docs" / "configuration.md"
COMPOSE_SECTION = "Running the production-shaped stack (Docker Compose)"
COMPOSE_DOCS = (ROOT / "README.md", ROOT / "docs" / "compose.md")

APP_SERVICES = ("api", "updater", "archiver", "batch")
SERVICES = ("kafka", "redis", "qdrant", "jaeger", "prometheus", "grafana", *APP_SERVICES)
# Each application service's role: the CLI command (and options) it runs.
ROLES = {
    "api": ["serve", "--host", "0.0.0.0"],
    "updater": ["updater"],
    "archiver": ["archiver"],
    "batch": ["batch", "--input"],
}
# What the dashboard promises to show, one series per panel family.
DASHBOARD_METRICS = (
    "http_request_duration_seconds_count",
    "http_request_duration_seconds_bucket",
    "recommendation_fallback_total",
    "recommendation_requests_total",
    "events_processed_total",
    "event_processing_duration_seconds_bucket",
    "updater_consumer_lag",
    "events_dead_lettered_total",
    "events_duplicates_skipped_total",
)


# ---- reading the files ----------------------------------------------------------------


def _load_yaml(path: Path) -> dict[str, Any]:
    loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(loaded, dict), f"{path.name} is not a YAML mapping"
    return loaded


@cache
def _compose() -> dict[str, Any]:
    return _load_yaml(COMPOSE)


def _services() -> dict[str, dict[str, Any]]:
    services: dict[str, dict[str, Any]] = _compose()["services"]
    return services


# ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?error}, ${NAME?error}, ${NAME:+alt},
# $NAME and $$ (a literal $), as Compose interpolates them.
_VARIABLE = re.compile(r"\$\$|\$\{(\w+)(?:(:?[-?+])([^}]*))?\}|\$(\w+)")


def interpolate(text: str, variables: Mapping[str, str]) -> str:
    """`text` as Compose reads it with `variables` set; a required variable that is
    missing raises ValueError with the file's message, as `docker compose` fails."""

    def one(match: re.Match[str]) -> str:
        if match.group() == "$$":
            return "$"
        name = match.group(1) or match.group(4)
        operator, argument = match.group(2) or "", match.group(3) or ""
        value = variables.get(name)
        missing = value is None or (operator.startswith(":") and value == "")
        if operator.endswith("-"):
            return argument if missing else str(value)
        if operator.endswith("?"):
            if missing:
                raise ValueError(f"{name}: {argument}")
            return str(value)
        if operator.endswith("+"):
            return "" if missing else argument
        return value or ""

    return _VARIABLE.sub(one, text)


def required_variables(text: str) -> set[str]:
    """Variables a Compose file cannot do without: those it reads as ${NAME:?error}."""
    return {m.group(1) for m in _VARIABLE.finditer(text) if (m.group(2) or "").endswith("?")}


@cache
def sample_secrets() -> dict[str, str]:
    """A value for each variable compose requires, shaped like the real ones: the API's
    keys as their JSON entries, the rest as random URL-safe passwords."""
    values = {}
    for name in sorted(required_variables(COMPOSE.read_text(encoding="utf-8"))):
        if name.endswith("API_KEYS"):
            _, entry = new_key("sample", "events")
            values[name] = json.dumps([entry.model_dump(mode="json")])
        else:
            values[name] = secrets.token_urlsafe(32)
    return values


def _raw_environment(service: dict[str, Any]) -> dict[str, str]:
    """A service's environment as written, from either of Compose's two forms."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        return dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {key: "" if value is None else str(value) for key, value in env.items()}


def _environment(service: dict[str, Any]) -> dict[str, str]:
    """A service's environment as its container sees it, the secrets set to samples."""
    return {k: interpolate(v, sample_secrets()) for k, v in _raw_environment(service).items()}


def _recsys_env(service: dict[str, Any]) -> dict[str, str]:
    return {k: v for k, v in _environment(service).items() if k.startswith("RECSYS_")}


def _settings_of(service: dict[str, Any]) -> Settings:
    """The settings a service's RECSYS_* variables make (defaults for the rest)."""
    values = {k.removeprefix("RECSYS_").lower(): v for k, v in _recsys_env(service).items()}
    return Settings.model_validate(values)


def _command(service: dict[str, Any]) -> list[str]:
    command = service.get("command", [])
    return command.split() if isinstance(command, str) else [str(c) for c in command]


def _listening_ports(service: dict[str, Any]) -> set[int]:
    """Container ports a service declares: `expose` and the container side of `ports`."""
    ports = {int(str(p).split("/")[0]) for p in service.get("expose", [])}
    for mapping in service.get("ports", []):
        container = str(mapping["target"] if isinstance(mapping, dict) else mapping)
        ports.add(int(container.split("/")[0].rsplit(":", 1)[-1]))
    return ports


def _volume_mounts(service: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(source, target) of each short-syntax volume; source may be a named volume."""
    for volume in service.get("volumes", []):
        if isinstance(volume, dict):
            yield str(volume.get("source", "")), str(volume["target"])
        else:
            short = re.match(r"^(\$\{[^}]*\}|[^:]+):([^:]+)", str(volume))
            assert short, f"cannot read the volume {volume!r}"
            yield short.group(1), short.group(2)


def _is_bind(source: str) -> bool:
    return source.startswith((".", "/", "~", "$"))


def _settings_variables() -> set[str]:
    return {f"RECSYS_{name.upper()}" for name in Settings.model_fields}


# ---- metric names ----------------------------------------------------------------------

_CONSTRUCTOR = re.compile(
    r"\b(Counter|Gauge|Histogram|Summary)\(\s*(?:name\s*=\s*)?[\"']([A-Za-z_:][A-Za-z0-9_:]*)[\"']"
)


def _exposed_names(kind: str, name: str) -> set[str]:
    """The series names prometheus_client exposes for one metric."""
    if kind == "Counter":
        base = name.removesuffix("_total")
        return {f"{base}_total", f"{base}_created"}
    if kind == "Histogram":
        return {f"{name}{suffix}" for suffix in ("_bucket", "_count", "_sum", "_created")}
    if kind == "Summary":
        return {name, f"{name}_count", f"{name}_sum", f"{name}_created"}
    return {name}


def _metric_sources() -> tuple[Path, ...]:
    """Where the code defines its Prometheus metrics: observability, every part's."""
    return tuple(sorted((ROOT / "src" / "observability").glob("*_metrics.py")))


def defined_metric_names(sources: tuple[Path, ...] | None = None) -> set[str]:
    names: set[str] = set()
    for path in _metric_sources() if sources is None else sources:
        for kind, name in _CONSTRUCTOR.findall(path.read_text(encoding="utf-8")):
            names |= _exposed_names(kind, name)
    return names


_PROMQL_KEYWORDS = {
    *("and", "or", "unless", "atan2", "bool", "offset", "inf", "nan"),
    *("by", "without", "on", "ignoring", "group_left", "group_right"),
}


def promql_metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression: identifiers that are not functions,
    aggregations, keywords, label names or Grafana variables."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)  # label values
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # ranges and subqueries
    expr = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    expr = re.sub(r"\$\{?\w+\}?", "", expr)  # Grafana variables
    names = set()
    for match in re.finditer(r"(?<![\w.])[A-Za-z_:][A-Za-z0-9_:]*", expr):
        followed_by = expr[match.end() :].lstrip()[:1]
        if followed_by != "(" and match.group().lower() not in _PROMQL_KEYWORDS:
            names.add(match.group())
    return names


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))


@cache
def _dashboard() -> dict[str, Any]:
    loaded = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert isinstance(loaded, dict)
    return loaded


def _dashboard_exprs() -> list[str]:
    return [
        target["expr"]
        for panel in _panels(_dashboard()["panels"])
        for target in panel.get("targets", [])
        if target.get("expr")
    ]


# ---- docs ------------------------------------------------------------------------------


def _section(text: str, title: str) -> str | None:
    """The text under a Markdown heading, up to the next heading of its level or above."""
    heading = re.search(rf"^(#+) {re.escape(title)}\s*$", text, re.MULTILINE)
    if heading is None:
        return None
    level = len(heading.group(1))
    after = text[heading.end() :]
    end = re.search(rf"^#{{1,{level}}} ", after, re.MULTILINE)
    return after[: end.start()] if end else after


def _table_column(section: str, header: str) -> list[str]:
    """The backticked first cells of the table whose first header cell is `header`."""
    cells: list[str] = []
    in_table = False
    for line in section.splitlines():
        if re.match(rf"^\|\s*{re.escape(header)}\s*\|", line):
            in_table = True
        elif in_table and line.startswith("|"):
            cell = re.match(r"^\|\s*`([^`]+)`\s*\|", line)
            if cell:
                cells.append(cell.group(1))
        elif in_table:
            break
    return cells


def _documented_services() -> dict[str, list[str]]:
    """Service names listed in the compose section, by document that has it."""
    found = {}
    for path in COMPOSE_DOCS:
        if path.exists():
            section = _section(path.read_text(encoding="utf-8"), COMPOSE_SECTION)
            if section is not None:
                found[path.name] = _table_column(section, "service")
    return found


# ---- the checks: helpers first, so a broken helper is not mistaken for a good file ---


def test_promql_metric_names_keeps_metrics_only() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (le, route) (rate(a_bucket{route="/x"}[1m])))'
        " / on (route) group_left sum without (status) (b_total offset 5m) > bool 1e3"
    )
    assert promql_metric_names(expr) == {"a_bucket", "b_total"}


def test_defined_metric_names_reads_the_constructors(tmp_path: Path) -> None:
    source = tmp_path / "metrics.py"
    source.write_text(
        'Counter("hits", "h")\nHistogram(\n    "took_seconds", "t")\n'
        'Gauge(name="lag", documentation="l")\nCounter("misses_total", "m")\n',
        encoding="utf-8",
    )
    names = defined_metric_names((source,))
    assert {
        "hits_total",
        "took_seconds_bucket",
        "took_seconds_count",
        "lag",
        "misses_total",
    } <= names
    assert "hits" not in names and "took_seconds" not in names
    # The real sources: the API's request histogram is found.
    assert "http_request_duration_seconds_bucket" in defined_metric_names()


def test_compose_has_every_service() -> None:
    missing = sorted(set(SERVICES) - set(_services()))
    assert not missing, f"docker-compose.yml lacks services {missing}"


def test_compose_engines_are_the_production_ones() -> None:
    services = _services()
    assert services["kafka"]["image"].startswith("apache/kafka:")
    kafka_env = _environment(services["kafka"])
    assert set(kafka_env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert not any("ZOOKEEPER" in key for key in kafka_env), "KRaft needs no ZooKeeper"
    assert not any("zookeeper" in str(s.get("image", "")) for s in services.values())
    assert services["redis"]["image"].startswith(("redis:", "valkey/valkey:"))
    assert services["qdrant"]["image"].startswith("qdrant/qdrant:")
    assert services["jaeger"]["image"].startswith("jaegertracing/all-in-one:")
    assert _environment(services["jaeger"]).get("COLLECTOR_OTLP_ENABLED") == "true"
    assert 4318 in _listening_ports(services["jaeger"]), "OTLP over HTTP"


def test_app_services_run_one_image_by_role() -> None:
    commands = typer.main.get_command(cli_app)
    assert isinstance(commands, typer.core.TyperGroup)
    for name in APP_SERVICES:
        service = _services()[name]
        build = service["build"]
        assert (ROOT / build["context"] / build["dockerfile"]) == ROOT / "docker" / "Dockerfile"
        command = _command(service)
        assert command[: len(ROLES[name])] == ROLES[name], f"{name} runs {command}"
        role = commands.commands.get(command[0])
        assert role is not None, f"{name}: `recsys {command[0]}` is not a CLI command"
        options = {opt for param in role.params for opt in (*param.opts, *param.secondary_opts)}
        unknown = [arg for arg in command[1:] if arg.startswith("--") and arg not in options]
        assert not unknown, f"{name}: `recsys {command[0]}` has no option {unknown}"
    assert _services()["batch"].get("profiles") == ["batch"], "the batch is one-shot"
    assert all("profiles" not in _services()[name] for name in ("api", "updater", "archiver"))


def test_compose_recsys_variables_are_settings() -> None:
    known = _settings_variables()
    for name, service in _services().items():
        unknown = sorted(set(_recsys_env(service)) - known)
        assert not unknown, f"{name} sets {unknown}, which no Settings field reads"
        _settings_of(service)  # and their values pass the fields' validation


def test_app_services_reach_the_compose_engines() -> None:
    services = _services()
    for name in APP_SERVICES:
        settings = _settings_of(services[name])
        assert settings.redis_url and settings.kafka_bootstrap_servers and settings.qdrant_url
        assert settings.otlp_endpoint, f"{name} sends no traces"
        addresses = [
            urlsplit(settings.redis_url),
            *(urlsplit(f"//{b}") for b in settings.kafka_bootstrap_servers.split(",")),
            urlsplit(settings.qdrant_url),
            urlsplit(settings.otlp_endpoint),
        ]
        for address in addresses:
            host, port = address.hostname, address.port
            assert host in services, f"{name} points at {host}, not a compose service"
            assert port in _listening_ports(services[host]), f"{host} does not listen on {port}"


def test_app_services_share_the_data_volume() -> None:
    named_volumes = set(_compose().get("volumes") or {})
    sources = set()
    for name in APP_SERVICES:
        data_dir = str(_settings_of(_services()[name]).data_dir)
        mounted = {target: source for source, target in _volume_mounts(_services()[name])}
        assert data_dir in mounted, f"{name} mounts nothing at RECSYS_DATA_DIR={data_dir}"
        sources.add(mounted[data_dir])
    assert len(sources) == 1, f"the data dir is not one volume: {sorted(sources)}"
    assert sources <= named_volumes


def test_app_listeners_are_reachable_in_the_network() -> None:
    api = _services()["api"]
    command = _command(api)
    host = command[command.index("--host") + 1] if "--host" in command else None
    settings = _settings_of(api)
    assert (host or settings.api_host) == "0.0.0.0"
    assert settings.api_port in _listening_ports(api)
    updater = _settings_of(_services()["updater"])
    assert updater.updater_metrics_host == "0.0.0.0"
    assert updater.updater_metrics_port in _listening_ports(_services()["updater"])
    archiver = _settings_of(_services()["archiver"])
    assert archiver.archiver_metrics_host == "0.0.0.0"
    assert archiver.archiver_metrics_port in _listening_ports(_services()["archiver"])


def test_health_gated_dependencies_have_healthchecks() -> None:
    services = _services()
    for name, service in services.items():
        depends_on = service.get("depends_on") or {}
        # The list form waits for nothing but the start.
        targets = depends_on if isinstance(depends_on, dict) else dict.fromkeys(depends_on)
        for target, spec in targets.items():
            assert target in services, f"{name} depends on unknown service {target}"
            if (spec or {}).get("condition") == "service_healthy":
                assert "healthcheck" in services[target], f"{target} has no healthcheck"
    api_check = " ".join(services["api"]["healthcheck"]["test"])
    assert "/health/ready" in api_check
    for name in ("api", "updater", "archiver"):
        assert services[name]["depends_on"]["kafka"]["condition"] == "service_healthy"


def test_compose_mounts_only_paths_that_exist() -> None:
    for name, service in _services().items():
        build = service.get("build")
        if build:
            assert (ROOT / build["context"]).is_dir()
            assert (ROOT / build["context"] / build.get("dockerfile", "Dockerfile")).is_file()
        for source, _ in _volume_mounts(service):
            if _is_bind(source) and "${" not in source:  # ${…}: the user's own folder
                assert (ROOT / source).exists(), f"{name} mounts missing {source}"


def test_docs_name_exactly_the_compose_services() -> None:
    documented = _documented_services()
    assert documented, f"no document has the section {COMPOSE_SECTION!r}"
    for document, names in documented.items():
        assert names, f"{document}: no `service` table in the compose section"
        assert not set(names) - set(_services()), f"{document} names services compose lacks"
        assert not set(_services()) - set(names), f"{document} leaves services out"


def test_every_setting_is_documented() -> None:
    text = CONFIGURATION_DOC.read_text(encoding="utf-8")
    named = set(re.findall(r"\bRECSYS_[A-Z0-9_]*[A-Z0-9]\b", text))
    missing = sorted(_settings_variables() - named)
    assert not missing, f"docs/configuration.md does not document {missing}"
    stale = sorted(named - _settings_variables())
    assert not stale, f"docs/configuration.md names variables no field reads: {stale}"


def test_prometheus_scrapes_compose_services() -> None:
    config = _load_yaml(PROMETHEUS)
    interval = config.get("global", {}).get("scrape_interval")
    targets = set()
    for job in config["scrape_configs"]:
        assert job.get("scrape_interval", interval) == "5s", job["job_name"]
        assert job.get("metrics_path", "/metrics") == "/metrics", job["job_name"]
        for static in job["static_configs"]:
            for target in static["targets"]:
                host, port = target.rsplit(":", 1)
                assert host in _services(), f"{target}: no compose service {host}"
                assert int(port) in _listening_ports(_services()[host]), f"{host} not on {port}"
                targets.add(target)
    assert {"api:8000", "updater:9101", "archiver:9102"} <= targets


def test_grafana_provisioning_matches_compose() -> None:
    grafana = _services()["grafana"]
    mounts = {(ROOT / source).resolve(): target for source, target in _volume_mounts(grafana)}
    assert mounts.get((GRAFANA / "provisioning").resolve()) == "/etc/grafana/provisioning"
    datasources = _load_yaml(GRAFANA / "provisioning" / "datasources" / "prometheus.yml")
    (source,) = datasources["datasources"]
    url = urlsplit(source["url"])
    assert url.hostname == "prometheus"
    assert url.port in _listening_ports(_services()["prometheus"])
    providers = _load_yaml(GRAFANA / "provisioning" / "dashboards" / "dashboards.yml")
    path = providers["providers"][0]["options"]["path"]
    assert mounts.get(DASHBOARD.parent.resolve()) == path, "dashboards are not where Grafana looks"
    uids = {
        panel["datasource"]["uid"]
        for panel in _panels(_dashboard()["panels"])
        if "datasource" in panel
    }
    assert uids == {source["uid"]}, "panels name a data source that is not provisioned"


def test_dashboard_is_the_recommendation_system_one() -> None:
    assert _dashboard()["title"] == "Recommendation System"
    used = set().union(*(promql_metric_names(expr) for expr in _dashboard_exprs()))
    missing = [name for name in DASHBOARD_METRICS if name not in used]
    assert not missing, f"the dashboard shows nothing of {missing}"


def test_dashboard_queries_only_metrics_the_code_defines() -> None:
    exprs = _dashboard_exprs()
    assert exprs
    defined = defined_metric_names()
    undefined = {
        name: expr for expr in exprs for name in promql_metric_names(expr) if name not in defined
    }
    assert not undefined, f"metrics no code defines: {undefined}"
