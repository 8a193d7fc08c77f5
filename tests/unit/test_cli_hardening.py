"""The `govlake` command as a person and an Airflow task meet it: the true exit status every
time (no abort at exit), one clear line per error and never a traceback, refused decisions
in the audit journal, and the engine's own log kept off the terminal unless asked for."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import NoReturn

import pyarrow as pa
import pytest
from deltalake import write_deltalake
from sqlalchemy import select
from support import lake_settings

from govlake.core.catalog import Catalog
from govlake.core.settings import Settings, get_settings
from govlake.lake.tables import ops_tables
from govlake.platform import audit
from govlake.platform.database import AccessRequest, AuditEntry, session
from govlake.sharing import access
from govlake_app.cli import app, console

REPO = Path(__file__).resolve().parents[2]
GOVLAKE = [sys.executable, "-c", "from govlake_app.cli import app; app()"]


def _env(root: Path, **extra: str) -> dict[str, str]:
    """A lakehouse of the test's own; this checkout's sources first on the path."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GOVLAKE_", "AWS_"))}
    env.pop("SPARK_REMOTE", None)
    env.pop("RUST_LOG", None)
    env.update(
        PYTHONPATH=os.pathsep.join([str(REPO / "src"), str(REPO)]),
        GOVLAKE_WAREHOUSE=str(root / "lakehouse"),
        GOVLAKE_LANDING=str(root / "landing"),
        GOVLAKE_DATABASE_URL=f"sqlite:///{root / 'govlake.db'}",
        GOVLAKE_REPORTS_DIR=str(root / "reports"),
        GOVLAKE_CATALOG_DIR=str(REPO / "schemas"),
    )
    env.update(extra)
    return env


def _govlake(
    env: dict[str, str], *args: str, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*GOVLAKE, *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def _settings(root: Path) -> Settings:
    return lake_settings(root)


# -- item 15: the true exit status, every time ------------------------------------------------
@pytest.fixture(scope="module")
def small_lake(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ops.publications with open versions (what the DCAT export reads) and an archived audit
    journal (what `audit verify` reads through pyarrow), made with the CLI's own commands."""
    root = tmp_path_factory.mktemp("exit")
    _, publications = ops_tables(_settings(root).warehouse_location)
    at = datetime(2026, 12, 1, 8, tzinfo=UTC)
    schema = pa.schema(
        [
            ("resource", pa.string()), ("sharing_class", pa.string()),
            ("table_name", pa.string()), ("version", pa.int64()),
            ("published_at", pa.timestamp("us", tz="UTC")), ("rows", pa.int64()),
            ("silver_version", pa.int64()), ("source_extracts", pa.string()),
        ]
    )  # fmt: skip
    # Several files, as a lakehouse's table has after a few runs: the scan of one file
    # hardly ever left a thread behind, the scan of eight did in about half the runs.
    for version in range(8):
        rows = [
            {"resource": name, "sharing_class": kind, "table_name": f"{name}_{kind}",
             "version": version, "published_at": at, "rows": 10, "silver_version": version,
             "source_extracts": "e1"}
            for name in ("legal_entity.enterprises", "credit.records")
            for kind in ("open", "unconditional")
        ]  # fmt: skip
        write_deltalake(
            publications.location.uri, pa.Table.from_pylist(rows, schema=schema), mode="append"
        )
    env = _env(root)
    for args in (["share", "consumer", "add", "civil_affairs"], ["audit", "archive"]):
        done = _govlake(env, *args)
        assert done.returncode == 0, done.stdout + done.stderr
    return root


RUNS = 20  # of each command; two at a time


@pytest.mark.slow
def test_commands_that_read_delta_tables_exit_with_their_true_status(small_lake: Path) -> None:
    """Before the exit path was made safe, these aborted at exit (134, "terminate called
    without an active exception") in roughly one run in eight to two in three, after
    printing everything."""
    env = _env(small_lake)
    commands = [
        (["catalog", "export", "--format", "dcat"], 0),
        (["audit", "verify"], 0),
        (["catalog", "export", "--format", "rdfxml"], 2),  # a refusal keeps its own status
    ]
    jobs = [(args, code) for args, code in commands for _ in range(RUNS if code == 0 else 2)]
    with ThreadPoolExecutor(max_workers=2) as pool:
        done = list(pool.map(lambda job: (job, _govlake(env, *job[0])), jobs))
    outcomes = Counter((" ".join(args), p.returncode) for (args, _), p in done)
    expected = Counter((" ".join(args), code) for args, code in jobs)
    assert outcomes == expected
    for (args, code), p in done:
        assert "terminate called" not in p.stderr
        if args[:2] == ["catalog", "export"] and code == 0:
            assert p.stdout.rstrip().endswith("}")  # the whole document was written


SCAN = """
import sys
from deltalake import DeltaTable
{ending}
rows = DeltaTable(sys.argv[1]).to_pyarrow_table().num_rows  # leaves Arrow threads behind
print("read", rows, flush=True)
end(int(sys.argv[2]))
"""


@pytest.mark.slow
def test_the_exit_path_survives_the_threads_a_pyarrow_scan_leaves(small_lake: Path) -> None:
    """The CLI's exit path itself, under the reading that aborted: a pyarrow dataset scan over
    delta-rs, then `finish(code)`. (With `sys.exit` instead, the same script aborted here.)"""
    _, publications = ops_tables(_settings(small_lake).warehouse_location)
    script = SCAN.format(ending="from govlake_app.cli.console import finish as end")
    env = _env(small_lake)

    def once(code: int) -> tuple[int, int, str]:
        done = subprocess.run([sys.executable, "-c", script, publications.location.uri,
                               str(code)], env=env, capture_output=True, text=True,
                              timeout=60, check=False)  # fmt: skip
        return code, done.returncode, done.stdout

    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(once, [0, 3] * RUNS))
    assert [(code, got) for code, got, _ in results if got != code] == []
    assert all(out.startswith("read 32") for _, _, out in results)


IDLE_EXECUTOR = """
import concurrent.futures, sys
from govlake_app.cli.console import finish
pool = concurrent.futures.ThreadPoolExecutor(max_workers=2)
print(sum(pool.map(abs, [-1, -2, -3])))
finish(int(sys.argv[1]))
"""


@pytest.mark.parametrize("code", [0, 3])
def test_the_exit_path_ends_a_process_that_left_an_idle_thread_pool(code: int) -> None:
    """A command that used a ThreadPoolExecutor and never shut it down (the engine's client
    and Great Expectations do) leaves idle non-daemon workers: the exit path stops them as
    the interpreter would, instead of waiting for them for ever."""
    done = subprocess.run([sys.executable, "-c", IDLE_EXECUTOR, str(code)], capture_output=True,
                          text=True, timeout=60, check=False)  # fmt: skip
    assert (done.returncode, done.stdout.strip()) == (code, "6")


# -- item 18: one clear line, never a traceback ----------------------------------------------
@pytest.fixture
def cli_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    for name in list(os.environ):
        if name.startswith("GOVLAKE_"):
            monkeypatch.delenv(name)
    for name, value in _env(tmp_path).items():
        if name.startswith("GOVLAKE_"):
            monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    yield tmp_path
    get_settings.cache_clear()


def _finish(code: int) -> NoReturn:
    raise SystemExit(code)


@pytest.fixture
def cli(
    cli_env: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> Callable[[list[str]], tuple[int, str, str]]:
    """Run `govlake ARGS` in this process through the console entry point, as the `govlake`
    program does, but end with SystemExit instead of ending pytest's process."""
    monkeypatch.setattr(console, "finish", _finish)

    def invoke(args: list[str]) -> tuple[int, str, str]:
        with pytest.raises(SystemExit) as exited:
            app(args=args, prog_name="govlake")
        captured = capsys.readouterr()
        return int(exited.value.code or 0), captured.out, captured.err

    return invoke


Cli = Callable[[list[str]], tuple[int, str, str]]
BAD = "2026-12-010"
SWEEP = [
    # (arguments, exit code, what the one line says)
    (["generate", "--as-of", BAD], 2,
     f"invalid date '{BAD}' for --as-of: expected YYYY-MM-DD"),
    (["generate", "--resource", "population.nobody"], 1, "unknown resource 'population.nobody'"),
    (["generate", "--encoding", "latin1"], 2, "encoding must be utf-8 or gbk"),
    (["generate", "--rows", "many"], 2, "Invalid value for '--rows'"),
    (["ingest", "--resource", "population.nobody"], 1, "unknown resource"),
    (["catalog", "show", "population.nobody"], 1, "unknown resource 'population.nobody'"),
    (["catalog", "nothing"], 2, "No such command 'nothing'"),
    (["catalog", "validate", "/nonexistent/schemas"], 2, "/nonexistent/schemas"),
    (["catalog", "export", "--out", "/nonexistent/dir/catalog.jsonld"], 2, "cannot write"),
    (["catalog", "status", "--at", BAD], 2, f"invalid date-time '{BAD}' for --at"),
    (["catalog", "history", "population.nobody"], 2, "unknown resource"),
    (["quality", "timeliness", "--at", "yesterday"], 2, "invalid date-time 'yesterday' for --at"),
    (["report", "quality", "--provider", "nobody"], 2, "unknown provider department 'nobody'"),
    (["report", "quality", "--provider", "public_security", "--since", BAD], 2, BAD),
    (["report", "sharing", "--year", "next"], 2, "Invalid value for '--year'"),
    (["share", "consumer", "add", "nobody"], 2, "nobody"),
    (["share", "request", "approve", "999", "--provider", "public_security"], 2,
     "no access request 999"),
    (["share", "request", "refuse", "999", "--provider", "public_security", "--reason", "no"],
     2, "no access request 999"),
    (["audit", "export", "--department", "civil_affairs", "--since", BAD], 2, BAD),
    (["audit", "purge", "--before", BAD], 2, BAD),
    (["restore", "population.nobody_unconditional"], 2, "population.nobody_unconditional"),
    (["sql"], 2, "Missing argument 'QUERY'"),
    (["catalog", "change", "population.nobody", "--reason", "x", "--effective", "2026-01-01"],
     2, "unknown resource 'population.nobody'; catalogued: credit.records"),
    (["catalog", "duty-change", "public_security", "--basis", "b", "--reason", "r",
      "--effective", "tomorrow"], 2, "--effective must be a date YYYY-MM-DD"),
    (["share", "request", "list", "--status", "weird"], 2, "unknown status 'weird'"),
    (["share", "serve", "--port", "99999"], 2, "Invalid value for '--port'"),
    (["share", "token", "issue", "nobody"], 2, "no consumer nobody"),
    (["backup", "--resource", "population.nobody"], 2, "unknown resource 'population.nobody'"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("args", "code", "says"), SWEEP, ids=[" ".join(a[:3]) for a, _, _ in SWEEP]
)
def test_a_command_with_wrong_arguments_says_why_in_one_line(
    cli: Cli, args: list[str], code: int, says: str
) -> None:
    got, out, err = cli(args)
    assert got == code, out + err
    assert "Traceback" not in out + err
    lines = [line for line in (out + err).splitlines() if says.lower() in line.lower()]
    assert len(lines) == 1, out + err  # said once, on one line
    assert len(err.strip().splitlines()) <= 1, err


def test_a_group_without_a_command_shows_its_help_and_no_error(cli: Cli) -> None:
    code, out, err = cli(["catalog"])
    assert (code, err) == (2, "") and "Read and check the information-resource catalogue" in out


def test_an_unexpected_error_is_one_line_and_verbose_shows_the_traceback(
    cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    import govlake.core.catalog

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("the disk said no\nsecond line of detail")

    monkeypatch.setattr(govlake.core.catalog.Catalog, "load", broken)
    code, out, err = cli(["catalog", "list"])
    assert (code, out) == (1, "")
    assert err.strip() == "error: the disk said no"
    monkeypatch.setenv("GOVLAKE_DEBUG", "1")
    code, out, err = cli(["catalog", "list"])
    assert code == 1 and "Traceback" in err and err.strip().endswith("error: the disk said no")


def test_unreachable_database_is_one_line_without_the_password(
    cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GOVLAKE_DATABASE_URL", "postgresql://govlake:s3cret@127.0.0.1:1/platform")
    get_settings.cache_clear()
    code, out, err = cli(["share", "consumer", "list"])
    assert code == 1 and "Traceback" not in out + err and "s3cret" not in out + err
    assert err.count("\n") == 1 and err.startswith(
        "error: platform database postgresql://govlake:***@127.0.0.1:1/platform"
    )


@pytest.mark.slow
def test_real_processes_give_one_line_for_bad_dates_and_unreachable_storage(
    tmp_path: Path,
) -> None:
    cases = [
        (_env(tmp_path), ["generate", "--as-of", BAD], 2,
         f"invalid date '{BAD}' for --as-of: expected YYYY-MM-DD"),
        (_env(tmp_path, GOVLAKE_DATABASE_URL="postgresql://u:p@127.0.0.1:1/x"),
         ["audit", "verify"], 1, "error: platform database postgresql://u:***@127.0.0.1:1/x"),
        (_env(tmp_path, GOVLAKE_WAREHOUSE="s3://bucket/lake", AWS_ENDPOINT_URL="http://127.0.0.1:1",
              AWS_ACCESS_KEY_ID="k", AWS_SECRET_ACCESS_KEY="s", AWS_REGION="us-east-1",
              AWS_ALLOW_HTTP="true", AWS_EC2_METADATA_DISABLED="true"),
         ["catalog", "export"], 1, "127.0.0.1:1"),
        (_env(tmp_path, GOVLAKE_BACKUP="s3://bucket/backups", AWS_ENDPOINT_URL="http://127.0.0.1:1",
              AWS_ACCESS_KEY_ID="k", AWS_SECRET_ACCESS_KEY="s", AWS_REGION="us-east-1",
              AWS_ALLOW_HTTP="true", AWS_EC2_METADATA_DISABLED="true"),
         ["backup-status"], 1, "127.0.0.1:1"),
    ]  # fmt: skip
    for env, args, code, says in cases:
        done = _govlake(env, *args, timeout=90)
        assert done.returncode == code, (args, done.stdout, done.stderr)
        assert "Traceback" not in done.stdout + done.stderr, args
        error = done.stderr.strip().splitlines()
        assert len(error) == 1 and error[0].startswith("error: ") and says in error[0], (
            args,
            done.stderr,
        )


def test_a_decision_by_a_department_that_is_not_the_provider_is_journaled(cli: Cli) -> None:
    settings = get_settings()
    at = datetime(2026, 12, 1, 9)
    with session(settings) as s:
        access.register_consumer(s, Catalog.load(settings.catalog_dir), "civil_affairs",
                                 email=None, at=at)  # fmt: skip
        request = AccessRequest(
            resource="population.residents", provider="public_security",
            items='["citizen_id"]', consumer="civil_affairs", applicant_name="Li Wei",
            applicant_phone="010-1234", applicant_email="li@civil.gov.example",
            using_department="civil affairs", using_contact="Li Wei",
            service_scenario="assistance", usage_scope="other", business_system="aid",
            justification="checks", filed_at=at, due_on=at.date(), due_basis="test",
        )  # fmt: skip
        s.add(request)
        s.flush()
        request_id = request.id
    refuse = ["share", "request", "refuse", str(request_id), "--provider", "taxation",
              "--reason", "not needed", "--by", "mallory"]  # fmt: skip
    code, out, err = cli(refuse)
    assert code == 2 and "only the provider public_security decides" in out + err
    code, out, err = cli(["share", "request", "approve", str(request_id), "--provider",
                          "taxation"])  # fmt: skip
    assert code == 2
    with session(settings) as s:
        entries = list(s.scalars(select(AuditEntry).order_by(AuditEntry.seq)))
        assert s.get(AccessRequest, request_id).status == "pending"  # type: ignore[union-attr]
    assert [(e.action, e.actor, e.outcome, e.consumer, e.resource) for e in entries] == [
        ("request.refuse", "taxation", "refused", "civil_affairs", "population.residents"),
        ("request.approve", "taxation", "refused", "civil_affairs", "population.residents"),
    ]
    detail = json.loads(entries[0].detail)
    assert detail["by"] == "mallory" and detail["request"] == request_id
    assert detail["reason"].startswith("only the provider public_security decides")
    with session(settings) as s:
        assert audit.verify(s, settings).ok


# -- item 20: the engine's log stays off the terminal -----------------------------------------
ENGINE_LINES = ("Persist operation is not yet supported", "sail_python::spark::server")
PERSIST = "df = spark.range(3); df.persist(); df.count()"


@pytest.mark.slow
def test_the_engine_log_is_off_the_terminal_unless_verbose(tmp_path: Path) -> None:
    env = _env(tmp_path)
    quiet = _govlake(env, "sql", "SELECT 1 AS one")
    assert quiet.returncode == 0, quiet.stderr
    assert "1 row(s) shown" in quiet.stdout
    assert not any(line in quiet.stdout + quiet.stderr for line in ENGINE_LINES), quiet.stderr
    loud = _govlake(env, "--verbose", "sql", "SELECT 1 AS one")
    assert loud.returncode == 0 and "sail_python::spark::server" in loud.stderr
    # A DAG task's settings keep the engine's lines for the task log; `persist` is what
    # makes the ingestion print "Persist operation ... is a no-op".
    task = (
        "from govlake_app.orchestration import settings_for_task; from govlake.lake.engine import "
        f"get_spark; spark = get_spark(settings_for_task()); {PERSIST}"
    )
    for settings_of, shown in (("settings_for_task()", True), ("get_settings()", False)):
        code = task.replace("settings_for_task()", settings_of).replace(
            "import settings_for_task", "import settings_for_task; "
            "from govlake.core.settings import get_settings"
        )  # fmt: skip
        done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                              text=True, timeout=120, check=False)  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert (ENGINE_LINES[0] in done.stderr) is shown, (settings_of, done.stderr)
