"""The cluster deployment in `infra/`: the files parse, every setting they pass is one the
settings object knows and accepts, the engine pins match the client pins, and the helper
scripts work against real servers (PostgreSQL, SeaweedFS).

No Docker engine runs here: these tests read the files; nothing starts the containers.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from collections.abc import Iterable, Iterator, Mapping
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import pytest
import yaml
from govlake_tools.pgserver import PostgresServer
from govlake_tools.s3server import SeaweedS3
from packaging.requirements import Requirement
from pydantic import AliasChoices, AliasPath

from govlake.core.settings import Settings, get_settings

REPO = Path(__file__).resolve().parents[2]
INFRA = REPO / "infra"
COMPOSE = INFRA / "compose.yaml"
ENV_EXAMPLE = INFRA / ".env.example"
DOCKERFILE = INFRA / "Dockerfile"

REQUIRED_SERVICES = {
    "s3", "s3-init", "postgres", "spark-connect", "airflow-init", "airflow-api-server",
    "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer", "sharing",
}  # fmt: skip
DELTA_EXTENSION = "io.delta.sql.DeltaSparkSessionExtension"
DELTA_CATALOG = "org.apache.spark.sql.delta.catalog.DeltaCatalog"
SCALA = "2.13"

# -- reading the deployment files ---------------------------------------------------------------

_INTERPOLATION = re.compile(
    r"\$\$|\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}"
    r"|\$(?P<bare>[A-Za-z_][A-Za-z0-9_]*)"
)


class InterpolationError(ValueError):
    """A `${VAR:?message}` whose variable is unset (or empty)."""


def interpolate(text: str, variables: Mapping[str, str]) -> str:
    """Compose's variable interpolation (`${VAR}`, `${VAR:-default}`, `${VAR-default}`,
    `${VAR:?message}`, `${VAR?message}`, `${VAR:+alt}`, `$VAR`, `$$`) over `variables`."""

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group("name") or match.group("bare")
        op, arg = match.group("op") or "", match.group("arg") or ""
        value = variables.get(name)
        present = value is not None and (value != "" or not op.startswith(":"))
        if op.endswith("-"):
            return value if present and value is not None else arg
        if op.endswith("?"):
            if not present or value is None:
                raise InterpolationError(f"{name}: {arg}")
            return value
        if op.endswith("+"):
            return arg if present else ""
        return value or ""

    return _INTERPOLATION.sub(replace, text)


def interpolated_names(text: str) -> set[str]:
    """The variables a text interpolates."""
    return {
        m.group("name") or m.group("bare")
        for m in _INTERPOLATION.finditer(text)
        if m.group(0) != "$$"
    }


def required_names(text: str) -> set[str]:
    """The variables a text interpolates with `${VAR:?message}` or `${VAR?message}`."""
    return {
        m.group("name")
        for m in _INTERPOLATION.finditer(text)
        if m.group("op") and m.group("op").endswith("?")
    }


def parse_env_file(text: str) -> dict[str, str]:
    """`KEY=value` lines (comments, blanks and `export ` ignored; one level of quotes removed)."""
    values: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.removeprefix("export ").partition("=")
        if not sep:
            raise ValueError(f"not a KEY=value line: {raw!r}")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key.strip()] = value
    return values


def service_environment(service: Mapping[str, Any], base: Path) -> dict[str, str | None]:
    """Everything a service sets in its containers' environment: its `env_file`s, then
    `environment` (mapping or `KEY=value` list); None for a name passed without a value."""
    env: dict[str, str | None] = {}
    env_files = service.get("env_file") or []
    for entry in [env_files] if isinstance(env_files, str | dict) else env_files:
        path = entry["path"] if isinstance(entry, dict) else entry
        env.update(parse_env_file((base / path).read_text(encoding="utf-8")))
    environment = service.get("environment") or {}
    if isinstance(environment, list):
        for item in environment:
            key, sep, value = str(item).partition("=")
            env[key] = value if sep else None
    else:
        env.update({k: None if v is None else str(v) for k, v in environment.items()})
    return env


def compose_environments(
    compose: Mapping[str, Any], base: Path
) -> dict[str, dict[str, str | None]]:
    return {name: service_environment(svc, base) for name, svc in compose["services"].items()}


def setting_fields(settings_class: type[Settings] = Settings) -> dict[str, str]:
    """Environment variable -> field, for every variable the settings object reads: derived
    from its fields (the prefixed field name, or the names of a validation alias)."""
    prefix = str(settings_class.model_config.get("env_prefix", "")).upper()
    variables: dict[str, str] = {}
    for field_name, field in settings_class.model_fields.items():
        alias = field.validation_alias
        choices = alias.choices if isinstance(alias, AliasChoices) else [alias]
        names = [
            c.upper() if isinstance(c, str) else str(c.path[0]).upper()
            for c in choices
            if isinstance(c, str | AliasPath)
        ]
        for name in names or [f"{prefix}{(field.alias or field_name).upper()}"]:
            variables[name] = field_name
    return variables


def known_setting_names(settings_class: type[Settings] = Settings) -> set[str]:
    return set(setting_fields(settings_class))


def unknown_settings(names: Iterable[str], settings_class: type[Settings] = Settings) -> list[str]:
    """The `GOVLAKE_*` names among `names` that the settings object does not know."""
    prefix = str(settings_class.model_config.get("env_prefix", "")).upper()
    known = known_setting_names(settings_class)
    return sorted({n for n in names if n.upper().startswith(prefix) and n.upper() not in known})


def settings_variables(names: Iterable[str], settings_class: type[Settings] = Settings) -> set[str]:
    prefix = str(settings_class.model_config.get("env_prefix", "")).upper()
    known = known_setting_names(settings_class)
    return {n for n in names if n.upper().startswith(prefix) or n.upper() in known}


def published_ports(
    service: Mapping[str, Any], variables: Mapping[str, str]
) -> list[tuple[str, int]]:
    """(host address, host port) of each published port of a service."""
    found: list[tuple[str, int]] = []
    for entry in service.get("ports") or []:
        if isinstance(entry, dict):
            if entry.get("published") is not None:
                found.append((str(entry.get("host_ip", "0.0.0.0")), int(entry["published"])))
            continue
        spec = interpolate(str(entry), variables).split("/")[0]
        parts = spec.rsplit(":", 2)
        if len(parts) == 3:
            found.append((parts[0] or "0.0.0.0", int(parts[1])))
        elif len(parts) == 2:
            found.append(("0.0.0.0", int(parts[0])))
    return found


def depends_on(service: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):
        return {name: {"condition": "service_started"} for name in deps}
    return {name: dict(spec or {}) for name, spec in deps.items()}


def command_args(service: Mapping[str, Any]) -> list[str]:
    command = service.get("command") or []
    return [str(a) for a in command] if isinstance(command, list) else str(command).split()


def option_values(args: list[str], option: str) -> list[str]:
    return [args[i + 1] for i, arg in enumerate(args[:-1]) if arg == option]


def spark_defaults(text: str) -> dict[str, str]:
    confs: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition(" ")
            confs[key] = value.strip()
    return confs


def pyproject() -> dict[str, Any]:
    return tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))


def pinned(requirements: Iterable[str], name: str) -> str:
    """The `==` version of `name` among PEP 508 requirement strings."""
    for text in requirements:
        requirement = Requirement(text)
        if requirement.name.lower().replace("_", "-") == name:
            pins = [s.version for s in requirement.specifier if s.operator == "=="]
            assert pins, f"{name} is not pinned with == in pyproject.toml: {text}"
            return pins[0]
    raise AssertionError(f"{name} is not among {list(requirements)}")


def dockerfile_copies(text: str) -> list[tuple[list[str], str]]:
    """(sources, absolute destination) of each COPY, with WORKDIR applied."""
    workdir, copies = "/", []
    for raw in text.replace("\\\n", " ").splitlines():
        words = raw.split()
        if not words or words[0].startswith("#"):
            continue
        if words[0].upper() == "WORKDIR":
            workdir = os.path.join(workdir, words[1])
        elif words[0].upper() == "COPY":
            args = [w for w in words[1:] if not w.startswith("--")]
            *sources, dest = args
            copies.append(
                (sources, os.path.normpath(os.path.join(workdir, dest)) + "/" * dest.endswith("/"))
            )
    return copies


def repo_path_in_image(container_path: str, copies: list[tuple[list[str], str]]) -> Path | None:
    """The repository file or folder a path inside the govlake image comes from, or None."""
    target = os.path.normpath(container_path)
    for sources, dest in copies:
        for source in sources:
            local = REPO / source
            if local.is_dir():
                # A folder's contents land in dest.
                root = dest.rstrip("/") or "/"
            elif dest.endswith("/") or len(sources) > 1:
                root = os.path.join(dest, local.name)
                if target == root:
                    return local
                continue
            else:
                if target == dest.rstrip("/"):
                    return local
                continue
            if target == root:
                return local
            if target.startswith(root.rstrip("/") + "/"):
                candidate = local / os.path.relpath(target, root)
                if candidate.exists():
                    return candidate
    return None


def airflow_spark_remote(connection: str, home: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """The Spark Connect URL the DAG tasks get from this Airflow connection (through the
    apache-spark provider's hook; the test skips without the provider)."""
    if find_spec("airflow.providers.apache.spark") is None:
        pytest.skip("the apache-spark provider is not installed")
    from govlake_app.orchestration import spark_remote

    monkeypatch.setenv("AIRFLOW_HOME", str(home))
    monkeypatch.delenv("SPARK_REMOTE", raising=False)
    monkeypatch.setenv("AIRFLOW_CONN_SPARK_CONNECT_DEFAULT", connection)
    return spark_remote()


# -- fixtures -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    assert isinstance(loaded, dict)
    return loaded


@pytest.fixture(scope="module")
def env_example() -> dict[str, str]:
    return parse_env_file(ENV_EXAMPLE.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def environments(compose: dict[str, Any]) -> dict[str, dict[str, str | None]]:
    return compose_environments(compose, INFRA)


@pytest.fixture
def clean_settings_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """No settings variable from the outer environment leaks into the Settings under test."""
    for name in settings_variables(os.environ):
        monkeypatch.delenv(name)
    get_settings.cache_clear()
    yield monkeypatch
    get_settings.cache_clear()


def resolved(env: Mapping[str, str | None], variables: Mapping[str, str]) -> dict[str, str]:
    return {k: interpolate(v, variables) for k, v in env.items() if v is not None}


def settings_from(
    env: Mapping[str, str], monkeypatch: pytest.MonkeyPatch
) -> tuple[Settings, dict[str, str]]:
    mine = {k: v for k, v in env.items() if k in settings_variables(env)}
    for name, value in mine.items():
        monkeypatch.setenv(name, value)
    return Settings(), mine


# -- the files parse and hang together ------------------------------------------------------------


def test_compose_parses_and_has_every_service(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) >= REQUIRED_SERVICES
    for name, service in compose["services"].items():
        assert "image" in service or "build" in service, name
    assert all(isinstance(v, dict) for v in compose["services"].values())


def test_every_dependency_names_a_service_that_can_satisfy_it(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, service in services.items():
        for dependency, spec in depends_on(service).items():
            assert dependency in services, f"{name} depends on unknown service {dependency}"
            condition = spec.get("condition", "service_started")
            target = services[dependency]
            if condition == "service_healthy":
                assert "healthcheck" in target, f"{name} waits for {dependency}'s health"
            if condition == "service_completed_successfully":
                assert target.get("restart", "no") == "no", f"{dependency} must run once"
            if spec.get("required", True):
                assert set(target.get("profiles") or []) <= set(service.get("profiles") or []), (
                    f"{name} requires {dependency}, which only runs in a profile"
                )


def test_long_running_services_have_healthchecks(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        if service.get("restart", "no") != "no" and not service.get("profiles"):
            assert "healthcheck" in service, f"{name} has no healthcheck"


def test_published_ports_do_not_collide(
    compose: dict[str, Any], env_example: dict[str, str]
) -> None:
    seen: dict[tuple[str, int], str] = {}
    for name, service in compose["services"].items():
        for address, port in published_ports(service, env_example):
            for (other_address, other_port), other in seen.items():
                wildcard = "0.0.0.0" in (address, other_address)
                assert not (port == other_port and (address == other_address or wildcard)), (
                    f"{name} and {other} both publish {port}"
                )
            seen[(address, port)] = name
    assert seen, "nothing is published"


def test_bind_mounts_and_volumes_exist(compose: dict[str, Any]) -> None:
    declared = set(compose.get("volumes") or {})
    for name, service in compose["services"].items():
        for volume in service.get("volumes") or []:
            source = volume["source"] if isinstance(volume, dict) else str(volume).split(":")[0]
            if source.startswith((".", "/")):
                assert (INFRA / source).resolve().exists(), f"{name} mounts missing {source}"
            else:
                assert source in declared, f"{name} uses undeclared volume {source}"


def test_every_interpolated_variable_is_documented(
    compose: dict[str, Any], env_example: dict[str, str]
) -> None:
    used = interpolated_names(COMPOSE.read_text(encoding="utf-8"))
    assert used, "compose.yaml interpolates nothing: secrets would be hard-coded"
    assert sorted(used - set(env_example)) == [], "document these in infra/.env.example"
    assert sorted(set(env_example) - used) == [], "infra/.env.example documents unused names"


def test_compose_interpolates_with_the_example_and_refuses_missing_secrets(
    env_example: dict[str, str],
) -> None:
    text = COMPOSE.read_text(encoding="utf-8")
    yaml.safe_load(interpolate(text, env_example))
    for secret in ("S3_SECRET_KEY", "PLATFORM_DB_PASSWORD", "GOVLAKE_SHARING_SIGNING_KEY"):
        with pytest.raises(InterpolationError, match=secret):
            interpolate(text, {k: v for k, v in env_example.items() if k != secret})


# -- the settings they pass ----------------------------------------------------------------------


def test_the_checker_derives_names_from_the_settings_object() -> None:
    known = known_setting_names()
    for name in Settings.model_fields:
        assert f"GOVLAKE_{name.upper()}" in known
    assert "SPARK_REMOTE" in known  # the validation alias


def test_the_checker_reports_an_unknown_settings_variable(tmp_path: Path) -> None:
    (tmp_path / "extra.env").write_text("GOVLAKE_SMTP_HOSTT=mail\nGOVLAKE_LANDING=s3://b/l\n")
    compose = {
        "services": {
            "job": {
                "image": "x",
                "env_file": ["extra.env"],
                "environment": {"GOVLAKE_WAREHOUSEE": "s3://b/w", "SPARK_REMOTE": "sc://s:15002"},
            },
            "web": {"image": "x", "environment": ["GOVLAKE_SHARING_ENDPOINTS=http://x", "PATH"]},
        }
    }
    names = [n for env in compose_environments(compose, tmp_path).values() for n in env]
    assert unknown_settings(names) == [
        "GOVLAKE_SHARING_ENDPOINTS", "GOVLAKE_SMTP_HOSTT", "GOVLAKE_WAREHOUSEE",
    ]  # fmt: skip


def test_every_settings_variable_in_infra_is_a_settings_field(
    environments: dict[str, dict[str, str | None]], env_example: dict[str, str]
) -> None:
    set_names = [n for env in environments.values() for n in env] + list(env_example)
    assert unknown_settings(set_names) == []
    # Anywhere in infra/ (scripts, Dockerfile, README): a GOVLAKE_ name must be a setting.
    mentioned: set[str] = set()
    for path in INFRA.rglob("*"):
        if path.is_file():
            mentioned |= set(re.findall(r"\bGOVLAKE_[A-Z0-9_]+", path.read_text(encoding="utf-8")))
    assert unknown_settings(mentioned) == [], "mentioned in infra/ but not a setting"


@pytest.mark.parametrize("variables", ["example", "defaults"])
def test_every_service_environment_is_accepted_by_the_settings_object(
    variables: str,
    environments: dict[str, dict[str, str | None]],
    env_example: dict[str, str],
    clean_settings_env: pytest.MonkeyPatch,
) -> None:
    """With the example .env file, and with only its required variables (so the defaults
    written in compose.yaml are what the services get)."""
    if variables == "defaults":
        required = required_names(COMPOSE.read_text(encoding="utf-8"))
        env_example = {k: v for k, v in env_example.items() if k in required}
    fields = setting_fields()
    checked = 0
    for name, env in environments.items():
        values = resolved(env, env_example)
        with clean_settings_env.context() as patch:
            settings, mine = settings_from(values, patch)
        if not mine:
            continue
        checked += 1
        # Each variable reached its field (a misspelt or ignored one would leave the default).
        for variable in mine:
            assert fields[variable.upper()] in settings.model_fields_set, f"{name}: {variable}"
        assert settings.session_timezone == "UTC"
    assert checked >= 6, "the Airflow services and the sharing server pass settings"


def test_the_example_env_file_is_accepted_by_the_settings_object(
    env_example: dict[str, str], clean_settings_env: pytest.MonkeyPatch
) -> None:
    settings, mine = settings_from(env_example, clean_settings_env)
    assert mine, "the example documents the GOVLAKE_ settings"
    assert settings.retention_days >= 30


def test_the_platform_services_share_one_configuration(
    environments: dict[str, dict[str, str | None]], env_example: dict[str, str]
) -> None:
    platform = ["airflow-scheduler", "airflow-dag-processor", "airflow-triggerer", "sharing"]
    views = {name: resolved(environments[name], env_example) for name in platform}
    first = views[platform[0]]
    for name, view in views.items():
        mine = {k: v for k, v in view.items() if k in settings_variables(view)}
        assert mine == {k: v for k, v in first.items() if k in settings_variables(first)}, name
    assert first["GOVLAKE_WAREHOUSE"].startswith("s3://")
    assert first["GOVLAKE_LANDING"].startswith("s3://")


def test_the_database_urls_name_the_init_script_databases(
    environments: dict[str, dict[str, str | None]], env_example: dict[str, str]
) -> None:
    from sqlalchemy.engine import make_url

    for name in ("sharing", "airflow-scheduler"):
        env = resolved(environments[name], env_example)
        url = make_url(env["GOVLAKE_DATABASE_URL"])
        assert url.drivername == "postgresql+psycopg" and url.get_dialect().driver == "psycopg"
        assert (url.host, url.username, url.database) == ("postgres", "govlake", "govlake")
        assert url.password == env_example["PLATFORM_DB_PASSWORD"]
    for name, raw in environments.items():
        if not name.startswith("airflow-"):
            continue
        env = resolved(raw, env_example)
        airflow = make_url(env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"])
        assert airflow.drivername == "postgresql+psycopg", name
        assert (airflow.host, airflow.username, airflow.database) == (
            "postgres", "airflow", "airflow",
        ), name  # fmt: skip
        assert airflow.password == env_example["AIRFLOW_DB_PASSWORD"], name
        # The async engine would otherwise be derived as asyncpg, which the image lacks.
        assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC"] == str(
            env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
        ), name


def test_aws_variables_are_the_standard_ones_and_agree(
    environments: dict[str, dict[str, str | None]], env_example: dict[str, str]
) -> None:
    # The variables the project's own S3 server hands to boto3, pyarrow, delta-rs and Sail.
    server: Any = SeaweedS3(None, "http://s3:8333", "a", "b", Path("weed.log"))  # type: ignore[arg-type]
    allowed = set(server.environment())
    for name, env in environments.items():
        aws = {k for k in env if k.startswith("AWS_")}
        assert aws <= allowed, f"{name}: unexpected {sorted(aws - allowed)}"
        values = resolved(env, env_example)
        if "AWS_ENDPOINT_URL" in values or "AWS_ENDPOINT" in values:
            # delta-rs and boto3 read AWS_ENDPOINT_URL, Sail AWS_ENDPOINT: the same store.
            assert values.get("AWS_ENDPOINT_URL") == values.get("AWS_ENDPOINT"), name
            assert values["AWS_ENDPOINT_URL"] == "http://s3:8333", name
    assert {k for k in env_example if k.startswith("AWS_")} <= allowed


def test_airflow_settings_are_options_airflow_knows(
    environments: dict[str, dict[str, str | None]],
) -> None:
    spec = find_spec("airflow")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("Airflow is not installed (pip install '.[airflow]')")
    config = Path(next(iter(spec.submodule_search_locations))) / "config_templates" / "config.yml"
    options = {
        (section, option)
        for section, body in yaml.safe_load(config.read_text(encoding="utf-8")).items()
        for option in (body.get("options") or {})
    }
    for name, env in environments.items():
        for variable in env:
            if variable.startswith("AIRFLOW__"):
                section, _, option = variable.removeprefix("AIRFLOW__").lower().partition("__")
                assert (section, option) in options, f"{name}: {variable} is not an Airflow option"


# -- Spark Connect + Delta --------------------------------------------------------------------


def spark_confs(service: Mapping[str, Any]) -> dict[str, str]:
    """spark-defaults.conf as mounted, then the `--conf` arguments on top."""
    confs: dict[str, str] = {}
    for volume in service.get("volumes") or []:
        source, _, target = str(volume).partition(":")
        if target.split(":")[0] == "/opt/spark/conf/spark-defaults.conf":
            confs.update(spark_defaults((INFRA / source).read_text(encoding="utf-8")))
    for conf in option_values(command_args(service), "--conf"):
        key, _, value = conf.partition("=")
        confs[key] = value
    return confs


def test_spark_runs_a_connect_server_with_delta(compose: dict[str, Any]) -> None:
    spark = compose["services"]["spark-connect"]
    args = command_args(spark)
    assert args[0] == "/opt/spark/sbin/start-connect-server.sh"
    assert spark["environment"]["SPARK_NO_DAEMONIZE"]  # foreground, so the container lives
    confs = spark_confs(spark)
    assert confs["spark.sql.extensions"] == DELTA_EXTENSION
    assert confs["spark.sql.catalog.spark_catalog"] == DELTA_CATALOG
    assert confs["spark.sql.session.timeZone"] == "UTC"
    assert confs["spark.hadoop.fs.s3.impl"] == "org.apache.hadoop.fs.s3a.S3AFileSystem"
    assert confs["spark.hadoop.fs.s3a.path.style.access"] == "true"
    assert confs["spark.hadoop.fs.s3a.endpoint"] == "http://s3:8333"
    assert not any("access.key" in k or "secret.key" in k for k in confs), "keys via env only"


def test_spark_versions_match_the_client_pins(compose: dict[str, Any]) -> None:
    project = pyproject()
    pyspark = pinned(project["project"]["dependencies"], "pyspark")
    delta = pinned(project["project"]["optional-dependencies"]["cluster"], "delta-spark")
    spark_minor = ".".join(pyspark.split(".")[:2])
    for name in ("spark-connect", "spark-master", "spark-worker"):
        image = compose["services"][name]["image"]
        repository, _, tag = image.partition(":")
        assert repository == "apache/spark" and tag.split("-")[0] == pyspark, (name, image)
        assert f"scala{SCALA}" in tag, image
    packages = ",".join(
        option_values(command_args(compose["services"]["spark-connect"]), "--packages")
    )
    coordinates = dict(p.rsplit(":", 1) for p in packages.split(","))
    # The artifact delta-spark's own configure_spark_with_delta_pip names for this pyspark.
    assert coordinates.get(f"io.delta:delta-spark_{spark_minor}_{SCALA}") == delta, packages
    hadoop_aws = coordinates["org.apache.hadoop:hadoop-aws"]
    jars = Path(find_spec("pyspark").origin or "").parent / "jars"  # type: ignore[union-attr]
    bundled = sorted(jars.glob("hadoop-client-api-*.jar"))
    if not bundled:
        pytest.skip("pyspark without jars (pyspark-client): cannot read Spark's Hadoop version")
    assert hadoop_aws == bundled[0].name.removeprefix("hadoop-client-api-").removesuffix(".jar")


def test_the_platform_reaches_the_spark_connect_server(
    compose: dict[str, Any],
    environments: dict[str, dict[str, str | None]],
    env_example: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    port = spark_confs(compose["services"]["spark-connect"])["spark.connect.grpc.binding.port"]
    expected = f"sc://spark-connect:{port}"
    env = resolved(environments["airflow-scheduler"], env_example)
    assert env["SPARK_REMOTE"] == expected
    # The provider's hook reads the compose connection (not the SPARK_REMOTE fallback).
    connection = env["AIRFLOW_CONN_SPARK_CONNECT_DEFAULT"]
    assert airflow_spark_remote(connection, tmp_path, monkeypatch) == expected + "/"


# -- the govlake image ----------------------------------------------------------------------------


def test_the_image_installs_the_extras_the_services_need(compose: dict[str, Any]) -> None:
    text = DOCKERFILE.read_text(encoding="utf-8")
    assert re.search(r"^FROM python:3\.11-slim", text, re.M)
    installs = re.findall(r"pip install '\.\[([a-z,\s-]+)\]'", text)
    assert installs, "the Dockerfile does not pip install the repository with extras"
    extras = {e.strip() for e in installs[0].split(",")}
    assert {"airflow", "cluster"} <= extras
    assert extras <= set(pyproject()["project"]["optional-dependencies"])
    built = compose["services"]["airflow-init"]["build"]
    assert (INFRA / built["context"] / built["dockerfile"]).resolve() == DOCKERFILE
    for name, service in compose["services"].items():
        if name.startswith("airflow-") or name in ("sharing", "s3-init"):
            assert service["image"] == compose["services"]["airflow-init"]["image"], name


def test_every_path_the_services_use_in_the_image_is_copied_in(
    compose: dict[str, Any], environments: dict[str, dict[str, str | None]]
) -> None:
    copies = dockerfile_copies(DOCKERFILE.read_text(encoding="utf-8"))
    for sources, _ in copies:
        for source in sources:
            assert (REPO / source).exists(), f"COPY {source}: no such file in the repository"
    image = compose["services"]["airflow-init"]["image"]
    for name, service in compose["services"].items():
        if service.get("image") != image:
            continue
        env = environments[name]
        paths = [a for a in command_args(service) if a.startswith("/opt/govlake/")]
        paths += [
            v
            for k, v in env.items()
            if k in ("GOVLAKE_CATALOG_DIR", "AIRFLOW__CORE__DAGS_FOLDER") and v
        ]
        for path in paths:
            assert repo_path_in_image(path, copies) is not None, (
                f"{name}: {path} is not in the image"
            )
    assert repo_path_in_image("/opt/govlake/schemas", copies) == REPO / "schemas"
    assert repo_path_in_image("/opt/govlake/dags", copies) == REPO / "dags"


# -- the helper scripts, against real servers ----------------------------------------------------


def test_the_postgres_init_script_creates_both_databases(postgres: PostgresServer) -> None:
    import psycopg

    env = {
        **os.environ, "PGHOST": "127.0.0.1", "PGPORT": str(postgres.port),
        "PGPASSWORD": postgres.password, "POSTGRES_USER": postgres.user, "POSTGRES_DB": "postgres",
        "AIRFLOW_DB_USER": "infra_airflow", "AIRFLOW_DB_PASSWORD": "it's-airflow",
        "PLATFORM_DB_USER": "infra_platform", "PLATFORM_DB_PASSWORD": 'plat"form',
    }  # fmt: skip
    script = INFRA / "postgres" / "init-databases.sh"
    for _ in range(2):  # idempotent: a second run changes nothing and does not fail
        run = subprocess.run(["sh", str(script)], env=env, capture_output=True, text=True)
        assert run.returncode == 0, run.stderr
    for user, password in (("infra_airflow", "it's-airflow"), ("infra_platform", 'plat"form')):
        with psycopg.connect(host="127.0.0.1", port=postgres.port, user=user,
                             password=password, dbname=user) as connection:  # fmt: skip
            connection.execute("CREATE TABLE owned (id int)")
            row = connection.execute("SELECT current_user, current_database()").fetchone()
            assert row == (user, user)
    # The Airflow role cannot open the platform database (consumer tokens, audit journal).
    with pytest.raises(psycopg.OperationalError, match="permission denied"):
        psycopg.connect(host="127.0.0.1", port=postgres.port, user="infra_airflow",
                        password="it's-airflow", dbname="infra_platform")  # fmt: skip


def test_the_bucket_init_creates_the_bucket_and_refuses_wrong_keys(s3: SeaweedS3) -> None:
    script = INFRA / "seaweedfs" / "create_bucket.py"
    env = {**os.environ, **s3.environment(), "S3_BUCKET": "infra-init", "S3_WAIT_SECONDS": "20"}
    first = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True)
    assert first.returncode == 0 and "created bucket infra-init" in first.stdout, first.stderr
    again = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True)
    assert again.returncode == 0 and "exists" in again.stdout, again.stderr
    assert any(b["Name"] == "infra-init" for b in s3.client().list_buckets()["Buckets"])
    wrong = {**env, "AWS_SECRET_ACCESS_KEY": "not-the-secret"}
    refused = subprocess.run(
        [sys.executable, str(script)], env=wrong, capture_output=True, text=True
    )
    assert refused.returncode == 2 and "refused" in refused.stderr


def test_the_seaweedfs_identities_are_written_from_the_environment(tmp_path: Path) -> None:
    """start.sh's identities file (run up to the exec, with a stand-in for weed)."""
    fake = tmp_path / "weed"
    fake.write_text('#!/bin/sh\necho "$@" > "$(dirname "$0")/args"\n')
    fake.chmod(0o755)
    config = tmp_path / "s3.json"
    env = {**os.environ, "S3_ACCESS_KEY": "govlakekey", "S3_SECRET_KEY": "0123abcd",
           "S3_IDENTITIES_FILE": str(config), "WEED": str(fake)}  # fmt: skip
    run = subprocess.run(["sh", str(INFRA / "seaweedfs" / "start.sh")], env=env,
                         capture_output=True, text=True)  # fmt: skip
    assert run.returncode == 0, run.stderr
    (identity,) = json.loads(config.read_text())["identities"]
    assert identity["credentials"] == [{"accessKey": "govlakekey", "secretKey": "0123abcd"}]
    assert oct(config.stat().st_mode & 0o777) == "0o600"
    args = (tmp_path / "args").read_text().split()
    assert args[0] == "server" and "-s3" in args and f"-s3.config={config}" in args
    no_secret = {**env, "S3_SECRET_KEY": ""}
    missing = subprocess.run(
        ["sh", str(INFRA / "seaweedfs" / "start.sh")], env=no_secret, capture_output=True, text=True
    )
    assert missing.returncode != 0 and "S3_SECRET_KEY" in missing.stderr


# -- Sail in kubernetes-cluster mode --------------------------------------------------------------

KUBERNETES = INFRA / "kubernetes"
SAIL_MANIFESTS = KUBERNETES / "sail.yaml"
SAIL_DOCKERFILE = KUBERNETES / "Dockerfile"


@pytest.fixture(scope="module")
def sail_objects() -> dict[tuple[str, str], dict[str, Any]]:
    """The objects of sail.yaml by (kind, name)."""
    documents = [d for d in yaml.safe_load_all(SAIL_MANIFESTS.read_text(encoding="utf-8")) if d]
    objects = {(d["kind"], d["metadata"]["name"]): d for d in documents}
    assert len(objects) == len(documents), "two objects share a kind and name"
    return objects


def _sail_config(objects: Mapping[tuple[str, str], dict[str, Any]]) -> dict[str, str]:
    return dict(objects[("ConfigMap", "sail-config")]["data"])


def test_the_sail_manifests_validate_against_the_kubernetes_schemas(
    sail_objects: dict[tuple[str, str], dict[str, Any]],
) -> None:
    from kubernetes_validate import utils as kubernetes

    version = kubernetes.latest_version()
    for (kind, name), obj in sail_objects.items():
        # strict: a misspelt or misplaced field fails too.
        kubernetes.validate(obj, version, strict=True)
        if kind != "Namespace":
            assert obj["metadata"]["namespace"] == "govlake", (kind, name)
    # The worker pod template Sail merges into its worker pods is a PodTemplateSpec.
    template = json.loads(_sail_config(sail_objects)["SAIL_KUBERNETES__WORKER_POD_TEMPLATE"])
    kubernetes.validate(
        {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "sail-worker"},
         "template": template},
        version, strict=True,
    )  # fmt: skip
    broken = json.loads(json.dumps(sail_objects[("Deployment", "sail-spark-connect")]))
    broken["spec"]["template"]["spec"]["containers"][0]["port"] = 15002
    with pytest.raises(kubernetes.ValidationError):
        kubernetes.validate(broken, version, strict=True)


def test_sail_runs_its_driver_in_kubernetes_cluster_mode_with_what_it_needs(
    sail_objects: dict[tuple[str, str], dict[str, Any]],
) -> None:
    config = _sail_config(sail_objects)
    assert config["SAIL_MODE"] == "kubernetes-cluster"
    assert config["SAIL_KUBERNETES__NAMESPACE"] == "govlake"
    assert config["SAIL_CLUSTER__DRIVER_LISTEN_HOST"] == "0.0.0.0"
    deployment = sail_objects[("Deployment", "sail-spark-connect")]
    assert deployment["spec"]["replicas"] == 1  # a session lives in one server
    pod = deployment["spec"]["template"]["spec"]
    (server,) = pod["containers"]
    args = server["command"] + server["args"]
    assert args[:3] == ["sail", "spark", "server"]
    assert option_values(args, "--ip") == ["0.0.0.0"]  # the default, 127.0.0.1, is unreachable
    port = int(option_values(args, "--port")[0])
    ports = {p["name"]: p["containerPort"] for p in server["ports"]}
    assert ports == {
        "spark-connect": port,
        "driver": int(config["SAIL_CLUSTER__DRIVER_LISTEN_PORT"]),
    }
    env = {e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"] for e in server["env"]}
    assert env == {"SAIL_CLUSTER__DRIVER_EXTERNAL_HOST": "status.podIP",
                   "SAIL_KUBERNETES__DRIVER_POD_NAME": "metadata.name"}  # fmt: skip
    sources = [next(iter(s.values()))["name"] for s in server["envFrom"]]
    assert sources == ["sail-config", "sail-object-store", "govlake-s3"]
    # The image the workers run is the driver's, built from infra/kubernetes/Dockerfile.
    assert config["SAIL_KUBERNETES__IMAGE"] == server["image"]
    assert server["readinessProbe"]["tcpSocket"]["port"] == "spark-connect"
    service = sail_objects[("Service", "sail-spark-connect")]["spec"]
    assert (
        service["selector"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    )
    assert [(p["port"], p["targetPort"]) for p in service["ports"]] == [(port, "spark-connect")]


def test_the_driver_may_manage_worker_pods_and_the_workers_nothing(
    sail_objects: dict[tuple[str, str], dict[str, Any]],
) -> None:
    config = _sail_config(sail_objects)
    pod = sail_objects[("Deployment", "sail-spark-connect")]["spec"]["template"]["spec"]
    driver_account = pod["serviceAccountName"]
    binding = sail_objects[("RoleBinding", "sail-driver")]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": driver_account, "namespace": "govlake"}
    ]
    (rule,) = sail_objects[("Role", binding["roleRef"]["name"])]["rules"]
    assert rule["resources"] == ["pods"] and rule["apiGroups"] == [""]
    # Sail's worker manager: get the driver pod, create and list workers, delete them.
    assert {"get", "list", "watch", "create", "delete", "deletecollection"} == set(rule["verbs"])
    worker_account = config["SAIL_KUBERNETES__WORKER_SERVICE_ACCOUNT_NAME"]
    assert worker_account != driver_account
    assert sail_objects[("ServiceAccount", worker_account)]["automountServiceAccountToken"] is False
    bound = {s["name"] for (kind, _), o in sail_objects.items() if kind.endswith("RoleBinding")
             for s in o["subjects"]}  # fmt: skip
    assert worker_account not in bound


def test_the_driver_and_every_worker_reach_the_object_store(
    sail_objects: dict[tuple[str, str], dict[str, Any]],
) -> None:
    """The workers read and write the warehouse themselves: they get the same store settings
    and credentials as the driver, the keys from a Secret, never in a manifest."""
    store = sail_objects[("ConfigMap", "sail-object-store")]["data"]
    server: Any = SeaweedS3(None, "http://s3:8333", "a", "b", Path("weed.log"))  # type: ignore[arg-type]
    allowed = set(server.environment())
    assert set(store) <= allowed and store["AWS_ENDPOINT"] == store["AWS_ENDPOINT_URL"]
    assert not {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} & set(store)
    assert ("Secret", "govlake-s3") not in sail_objects  # created outside (infra/README.md)
    template = json.loads(_sail_config(sail_objects)["SAIL_KUBERNETES__WORKER_POD_TEMPLATE"])
    (worker,) = template["spec"]["containers"]
    assert worker["name"] == "worker"  # Sail's container: the template merges into it
    worker_sources = [next(iter(s.values()))["name"] for s in worker["envFrom"]]
    assert worker_sources == ["sail-object-store", "govlake-s3"]
    for (kind, name), obj in sail_objects.items():
        assert kind != "Secret" and "AWS_SECRET_ACCESS_KEY" not in (obj.get("data") or {}), name
    readme = (INFRA / "README.md").read_text(encoding="utf-8")
    assert "kubectl -n govlake create secret generic govlake-s3" in readme
    assert "AWS_ACCESS_KEY_ID" in readme and "AWS_SECRET_ACCESS_KEY" in readme


def test_only_govlake_s_pods_reach_the_spark_connect_port(
    sail_objects: dict[tuple[str, str], dict[str, Any]],
) -> None:
    policy = sail_objects[("NetworkPolicy", "sail")]["spec"]
    pod_labels = sail_objects[("Deployment", "sail-spark-connect")]["spec"]["template"]["metadata"][
        "labels"
    ]
    assert policy["podSelector"]["matchLabels"].items() <= pod_labels.items()
    # Sail labels its worker pods app.kubernetes.io/name=sail: the same policy covers them.
    assert policy["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "sail"}
    rules = {json.dumps(r["from"], sort_keys=True): r.get("ports") for r in policy["ingress"]}
    among_sail = json.dumps([{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "sail"}}}],
                            sort_keys=True)  # fmt: skip
    assert rules.pop(among_sail) is None  # driver and worker RPC, shuffle: any port
    ((clients, ports),) = rules.items()
    assert "govlake.gov.example/engine-client" in clients and ports == [{"port": 15002}]


def test_govlake_pods_reach_the_sail_server_through_the_settings_and_airflow(
    sail_objects: dict[tuple[str, str], dict[str, Any]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    clean_settings_env: pytest.MonkeyPatch,
) -> None:
    engine = sail_objects[("ConfigMap", "govlake-engine")]["data"]
    service = sail_objects[("Service", "sail-spark-connect")]
    (port,) = service["spec"]["ports"]
    expected = (
        f"sc://{service['metadata']['name']}.{service['metadata']['namespace']}"
        f".svc.cluster.local:{port['port']}"
    )
    settings, _ = settings_from(engine, clean_settings_env)
    assert settings.spark_remote == expected and settings.sail_mode == "local"
    connection = engine["AIRFLOW_CONN_SPARK_CONNECT_DEFAULT"]
    assert airflow_spark_remote(connection, tmp_path, monkeypatch) == expected + "/"


def test_the_sail_image_pins_the_project_s_engine_and_client(
    sail_objects: dict[tuple[str, str], dict[str, Any]],
) -> None:
    project = pyproject()["project"]["dependencies"]
    text = SAIL_DOCKERFILE.read_text(encoding="utf-8")
    installs = re.findall(r"pip install ([^\n\\]+)", text)
    assert installs, "the Sail image installs nothing"
    requirements = [Requirement(r) for r in installs[0].split()]
    pins = {r.name.lower(): str(r.specifier).removeprefix("==") for r in requirements}
    assert pins["pysail"] == pinned(project, "pysail")
    assert pins["pyspark-client"] == pinned(project, "pyspark")
    assert re.search(r"^FROM python:3\.11-slim", text, re.M)
    assert re.search(r"^USER 10001$", text, re.M)  # the pods' runAsUser
    image = _sail_config(sail_objects)["SAIL_KUBERNETES__IMAGE"]
    assert image.rsplit(":", 1)[1] == pins["pysail"], "tag the image with its Sail version"
