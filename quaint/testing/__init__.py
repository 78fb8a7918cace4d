"""Test support: real database servers and throwaway databases (used by tests/conftest.py)."""

from quaint.testing.database import (
    CRON_DATABASE,
    DEFAULT_TEMPLATE,
    TIMESCALE_IMAGE,
    HarnessError,
    PgServer,
    SchemaApplier,
    TemplateDatabases,
    cron_database_url,
    docker_available,
    quote_ident,
    running_server,
)

__all__ = [
    "CRON_DATABASE",
    "DEFAULT_TEMPLATE",
    "TIMESCALE_IMAGE",
    "HarnessError",
    "PgServer",
    "SchemaApplier",
    "TemplateDatabases",
    "cron_database_url",
    "docker_available",
    "quote_ident",
    "running_server",
]
