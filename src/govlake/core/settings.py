"""The one typed settings object: `GOVLAKE_*` variables over embedded defaults."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from govlake.core.location import Location

#: The components of the yearly department scorecard (51号 art. 17; 宝鸡 art. 23).
SCORECARD_COMPONENTS = ("catalogue", "provision", "quality", "timeliness")
DEFAULT_SCORECARD_WEIGHTS = {"catalogue": 0.2, "provision": 0.2, "quality": 0.3, "timeliness": 0.3}

_REPO_SCHEMAS = Path(__file__).resolve().parents[3] / "schemas"


def _default_catalog_dir() -> Path:
    # A checkout (editable install) carries the catalogue next to src/; otherwise use ./schemas.
    return _REPO_SCHEMAS if _REPO_SCHEMAS.is_dir() else Path("schemas")


class Settings(BaseSettings):
    """Where govlake keeps its data and which engine it talks to.

    Storage locations are URIs: a local path (relative paths resolve against the working
    directory) or `s3://bucket/prefix`, so jobs never care which.
    """

    model_config = SettingsConfigDict(env_prefix="GOVLAKE_", extra="ignore")

    warehouse: str = Field(default="./lakehouse", description="Root URI of the Delta tables.")
    landing: str = Field(default="./landing", description="Root URI of the landing zone.")
    database_url: str = Field(
        default="sqlite:///./govlake.db", description="SQLAlchemy URL of the platform database."
    )
    catalog_dir: Path = Field(
        default_factory=_default_catalog_dir, description="Folder of catalogue YAML files."
    )
    spark_remote: str | None = Field(
        default=None,
        validation_alias=AliasChoices("SPARK_REMOTE", "GOVLAKE_SPARK_REMOTE"),
        description="Spark Connect URL; unset starts the embedded Sail engine in-process.",
    )
    sail_mode: Literal["local", "local-cluster", "kubernetes-cluster"] = Field(
        default="local",
        validation_alias=AliasChoices("GOVLAKE_SAIL_MODE", "SAIL_MODE"),
        description="How the embedded Sail engine runs: 'local' (one process, threads) or "
        "'local-cluster' (a driver and workers exchanging tasks and data over RPC, in this "
        "process: the execution path of a cluster). Sail's own SAIL_MODE is honoured when "
        "GOVLAKE_SAIL_MODE is unset; 'kubernetes-cluster' is the mode of a Sail server "
        "deployed in Kubernetes (infra/kubernetes/), which govlake reaches through "
        "SPARK_REMOTE. Read when the engine starts; other SAIL_* variables (worker count, "
        "task slots) go to Sail unchanged.",
    )
    session_timezone: str = Field(default="UTC", description="Engine session time zone.")
    timeliness_grace: float = Field(
        default=0.25,
        ge=0,
        description="Share of the update cycle after the due time during which a resource is "
        "'due' rather than 'overdue' (at least one hour).",
    )
    retention_days: int = Field(
        default=30,
        ge=30,
        description="Days every table version stays readable before vacuum may remove its "
        "files (at least 30; ops tables keep `records_retention_days`).",
    )
    records_retention_days: int = Field(
        default=3 * 365 + 1,
        ge=3 * 365 + 1,
        description="Days every version of an ops.* table (the platform's records: extracts, "
        "publications, quality runs, the audit archive) stays readable before vacuum may "
        "remove its files (at least 3 years, 宝鸡 art. 21).",
    )
    lease_minutes: int = Field(
        default=180,
        ge=1,
        description="Minutes a pipeline stage may hold its resource before another run may "
        "take the resource over (a crashed run's lease ends then).",
    )
    lease_wait_minutes: float = Field(
        default=60,
        ge=0,
        description="Minutes a pipeline stage waits for another run of the same resource "
        "before it fails.",
    )
    reports_dir: Path = Field(
        default=Path("./reports"), description="Folder the steward reports and scorecards go to."
    )
    smtp_host: str = Field(default="localhost", description="Mail server for steward reports.")
    smtp_port: int = Field(default=25, ge=1, le=65535, description="Mail server port.")
    smtp_user: str | None = Field(default=None, description="Mail server login, if it needs one.")
    smtp_password: SecretStr | None = Field(default=None, description="Mail server password.")
    smtp_starttls: bool = Field(default=False, description="Upgrade the connection with STARTTLS.")
    smtp_sender: str = Field(
        default="govlake@platform.gov.example", description="From address of the reports."
    )
    sharing_signing_key: SecretStr | None = Field(
        default=None,
        description="Secret that signs the sharing server's local file URLs; unset: a random "
        "key per server (shared by its workers; URLs die with the server).",
    )
    open_record_key: SecretStr | None = Field(
        default=None,
        description="Secret of the open variants' record pseudonyms (`record_id`); unset: a "
        "random key kept in the warehouse (ops/open-record.key), made on first use. Changing it "
        "gives every record a new pseudonym at the next publication.",
    )
    sharing_url_minutes: int = Field(
        default=15, ge=1, le=24 * 60, description="Minutes a signed or presigned file URL lives."
    )
    sharing_endpoint: str = Field(
        default="http://127.0.0.1:8765/delta-sharing",
        description="The sharing server's public endpoint, written into profile files.",
    )
    sharing_s3_endpoint: str | None = Field(
        default=None,
        description="S3 endpoint written into presigned file URLs, as consumers reach the "
        "store; unset: AWS_ENDPOINT_URL, the one the platform itself uses.",
    )
    open_endpoint: str = Field(
        default="http://127.0.0.1:8765/open",
        description="The public open-data endpoint of the sharing server (no token), written "
        "into the DCAT export's download and access URLs.",
    )
    publisher_name: str = Field(
        default="Big Data Bureau (大数据局)",
        description="The competent authority named as publisher of the open catalogue.",
    )
    publisher_url: str = Field(
        default="https://data.gov.example", description="Home page of the open-data portal."
    )
    backup: str = Field(
        default="./backups",
        description="Root URI backups of the lakehouse tables go to (a local path or s3://).",
    )
    webhook_attempts: int = Field(
        default=4, ge=1, le=20, description="Attempts per subscription webhook delivery."
    )
    webhook_backoff_seconds: float = Field(
        default=2.0,
        ge=0,
        description="Pause before the second webhook attempt; it doubles after each failure.",
    )
    webhook_timeout_seconds: float = Field(
        default=10.0, gt=0, description="How long one webhook attempt may take."
    )
    scorecard_weights: dict[str, float] = Field(
        default_factory=lambda: dict(DEFAULT_SCORECARD_WEIGHTS),
        description="Weight of each scorecard component (catalogue, provision, quality, "
        "timeliness); the weights sum to 1.",
    )

    @field_validator("scorecard_weights")
    @classmethod
    def _weights(cls, value: dict[str, float]) -> dict[str, float]:
        expected = set(SCORECARD_COMPONENTS)
        if set(value) != expected:
            missing = sorted(expected - set(value))
            unknown = sorted(set(value) - expected)
            raise ValueError(
                f"scorecard weights need exactly the keys {', '.join(SCORECARD_COMPONENTS)}; "
                f"missing: {', '.join(missing) or 'none'}; unknown: {', '.join(unknown) or 'none'}"
            )
        negative = sorted(name for name, weight in value.items() if weight < 0)
        if negative:
            raise ValueError(f"scorecard weights cannot be negative: {', '.join(negative)}")
        total = sum(value.values())
        if abs(total - 1) > 1e-6:
            raise ValueError(f"scorecard weights must sum to 1, got {total:g}: {value}")
        return {name: float(value[name]) for name in SCORECARD_COMPONENTS}

    @model_validator(mode="after")
    def _embedded_engine_mode(self) -> Settings:
        if self.sail_mode == "kubernetes-cluster" and self.spark_remote is None:
            raise ValueError(
                "sail_mode 'kubernetes-cluster' runs in a Sail server deployed in Kubernetes "
                "(infra/kubernetes/): set SPARK_REMOTE to its Spark Connect address; the "
                "embedded engine runs 'local' or 'local-cluster'"
            )
        return self

    @property
    def warehouse_location(self) -> Location:
        return Location.parse(self.warehouse)

    @property
    def landing_location(self) -> Location:
        return Location.parse(self.landing)

    @property
    def backup_location(self) -> Location:
        return Location.parse(self.backup)

    # -- Subscription webhooks: where they may go, and how their secrets are kept --------
    webhook_allowed_receivers: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Internal webhook receivers a deployment allows, comma-separated: host "
        "names, IP addresses, CIDR networks or host:port ([v6]:port). Every other receiver "
        "must resolve to public (globally routable) addresses only.",
    )
    secrets_key: SecretStr | None = Field(
        default=None,
        description="Fernet keys that seal the webhook secrets in the platform database, "
        "comma-separated, newest first (the newest seals, each opens); unset: the key file.",
    )
    secrets_key_file: Path | None = Field(
        default=None,
        description="File of Fernet keys, one a line, newest first, used when secrets_key is "
        "unset; unset: <database file stem>-secrets.key next to a SQLite database, created "
        "(mode 0600) on first use. A server database (PostgreSQL) needs one of the two set.",
    )

    @field_validator("webhook_allowed_receivers", mode="before")
    @classmethod
    def _comma_list(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    # -- Sharing server: request limits ---------------------------------------------------
    sharing_max_body_bytes: int = Field(
        default=1024 * 1024,
        ge=1024,
        description="Largest request body the sharing server reads (query and REST bodies); "
        "a larger one is refused with 413 before it is parsed.",
    )
    sharing_max_header_bytes: int = Field(
        default=16 * 1024,
        ge=1024,
        description="Largest request line plus headers the sharing server accepts; a larger "
        "request is refused with 431 (uvicorn's h11 `h11_max_incomplete_event_size`).",
    )

    # -- Sharing server: OAuth client credentials (profile version 2) -----------------------
    sharing_oauth_token_seconds: int = Field(
        default=900,
        ge=1,
        le=24 * 60 * 60,
        description="Seconds an access token from the OAuth token endpoint lives. The official "
        "client renews a token once it has less than 10 minutes left: at 900 it keeps one for "
        "5 minutes; at 600 or less it asks for a new one before every call.",
    )

    # -- Sharing server: rate limits and monitoring ----------------------------------------
    sharing_rate_per_second: float = Field(
        default=50.0,
        ge=0,
        description="Calls per second a consumer department may make to the sharing server, "
        "per worker process, on average (a token bucket refilled at this rate); beyond it the "
        "call is refused with 429 and Retry-After. 0 disables the consumers' limit.",
    )
    sharing_rate_burst: int = Field(
        default=500,
        ge=1,
        description="Calls a consumer department may make at once before its rate applies.",
    )
    sharing_anonymous_rate_per_second: float = Field(
        default=5.0,
        ge=0,
        description="Calls per second one client address may make without a valid credential "
        "(no token, an invalid one, open data, unknown paths), per worker process; 0 disables.",
    )
    sharing_anonymous_burst: int = Field(
        default=50,
        ge=1,
        description="Calls without a valid credential one client address may make at once.",
    )
    sharing_metrics_allow: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["127.0.0.0/8", "::1"],
        description="Addresses and CIDR networks that may read the sharing server's /metrics, "
        "comma-separated; any other caller is refused with 403.",
    )

    @field_validator("sharing_metrics_allow", mode="before")
    @classmethod
    def _metrics_allow(cls, value: object) -> object:
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        if isinstance(value, list):
            import ipaddress

            for network in value:  # a typo refuses to start, not every scrape
                ipaddress.ip_network(str(network), strict=False)
        return value

    # -- Sharing server: caches under load ---------------------------------------------------
    sharing_cache_seconds: float = Field(
        default=1.0,
        ge=0,
        le=1,
        description="Seconds of real time a server worker keeps what it looked up (a token's "
        "consumer, an access decision, a table's latest version) before asking again; at most "
        "1, so a revocation, a suspension or a new grant made elsewhere takes effect within a "
        "second on every worker; 0 looks everything up on every call.",
    )

    # -- What a person sees in the terminal ------------------------------------------------
    engine_log: str = Field(
        default="error",
        description="Filter of the embedded Sail engine's own log lines on stderr, in RUST_LOG "
        "syntax ('error', 'info', 'warn,sail_delta_lake=debug', 'off'). The default keeps a "
        "person's terminal to govlake's output; `govlake --verbose` and the Airflow tasks "
        "(whose task logs keep the engine's lines) use 'info'. Read when the engine starts, "
        "once per process.",
    )
    debug: bool = Field(
        default=False,
        description="A failing command prints its traceback after the one-line error (as "
        "`govlake --verbose` does). Read from GOVLAKE_DEBUG directly, so that it works even "
        "when other settings are invalid.",
    )


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
