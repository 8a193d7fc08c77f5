"""The one typed settings object: `GOVLAKE_*` variables over embedded defaults."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from govlake.storage import Location

_REPO_SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"


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
    session_timezone: str = Field(default="UTC", description="Engine session time zone.")
    timeliness_grace: float = Field(
        default=0.25,
        ge=0,
        description="Share of the update cycle after the due time during which a resource is "
        "'due' rather than 'overdue' (at least one hour).",
    )

    @property
    def warehouse_location(self) -> Location:
        return Location.parse(self.warehouse)

    @property
    def landing_location(self) -> Location:
        return Location.parse(self.landing)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
