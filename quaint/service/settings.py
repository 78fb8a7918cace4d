"""Configuration shared by every service, read from the environment.

One ``Settings`` object is built in each service's ``main()`` and passed down; tests
build them directly (``FeederSettings(db_host=...)``). Invalid configuration stops
the process with one line per bad variable (see :func:`load_settings`).
"""

from __future__ import annotations

import sys
from typing import Annotated, Any, Literal, TypeVar
from urllib.parse import unquote, urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from quaint.binance.universe import UniverseError, UniverseSpec, parse_entries, parse_spec

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]
SessionAttrs = Literal["any", "primary", "standby", "prefer-standby", "read-write", "read-only"]
# What a writing service may be pointed at when DB_HOST lists several hosts: anything else could
# land its writes on a standby.
WRITABLE_ATTRS = ("read-write", "primary")
LogFormat = Literal["json", "console", "auto"]

# The seed's names (those of the official postgres image) for three database settings: either name of a
# pair works, and both set to different values is refused rather than one silently winning.
DB_ALIASES = {"db_user": "postgres_user", "db_password": "postgres_password", "db_name": "postgres_db"}


def parse_universe_entries(value: object, *, allow_all: bool) -> object:
    """SYMBOLS / SYMBOLS_EXCLUDE: names, ``*QUOTE`` patterns and (SYMBOLS only) ``ALL``."""
    if not isinstance(value, str | list | tuple):
        return value
    try:
        return parse_entries(value, allow_all=allow_all)
    except UniverseError as exc:
        raise ValueError(str(exc)) from None


def parse_host_list(value: str) -> list[tuple[str, int | None]]:
    """``"a, b:5433"`` -> ``[("a", None), ("b", 5433)]``; ``[v6]:port`` for IPv6 literals."""
    entries = []
    for raw in value.split(","):
        part = raw.strip()
        if not part:
            raise ValueError("empty host in the list (expected e.g. db1,db2:5433)")
        host, port = part, ""
        if part.startswith("["):
            host, _, rest = part[1:].partition("]")
            port = rest.removeprefix(":")
        elif part.count(":") == 1:
            host, _, port = part.partition(":")
        if not host or (port and not (port.isdigit() and 1 <= int(port) <= 65535)):
            raise ValueError(f"bad host {part!r} (expected host or host:port, port 1..65535)")
        entries.append((host, int(port) if port else None))
    return entries


class Settings(BaseSettings):
    """Environment names follow the seed (``DB_HOST``, ``SYMBOLS``, ...)."""

    model_config = SettingsConfigDict(
        env_file=None, extra="ignore", case_sensitive=False, validate_default=True
    )

    # One host, or several (``a,b:5433``; a host without a port uses DB_PORT): each connection
    # goes to the first that answers with DB_TARGET_SESSION_ATTRS (asyncpg's multi-host
    # connect), so after a promotion the services find the new primary by themselves.
    db_host: str = "localhost"
    db_port: int = Field(default=5432, ge=1, le=65535)
    db_target_session_attrs: SessionAttrs = "any"
    db_user: str = "postgres"
    db_password: SecretStr = SecretStr("")
    db_name: str = Field(default="btc_ml_production", min_length=1, max_length=63)
    db_pool_min_size: int = Field(default=1, ge=0, le=100)
    db_pool_max_size: int = Field(default=5, ge=1, le=100)
    # How long start-up keeps retrying an unreachable database before giving up.
    db_connect_timeout_s: float = Field(default=60.0, gt=0, le=3600)
    # Input-only aliases of db_user, db_password and db_name (see DB_ALIASES): validation moves a value
    # given under one of these names to its DB_* field, so these always read None afterwards.
    postgres_user: str | None = None
    postgres_password: SecretStr | None = None
    postgres_db: str | None = None

    # Market data needs no key; kept for the seed's compatibility and never logged.
    binance_api_key: SecretStr | None = None
    binance_api_secret: SecretStr | None = None
    # Names, or patterns resolved from exchangeInfo: ALL, *USDT (quote asset); see quaint.binance.universe.
    symbols: Annotated[list[str], NoDecode] = Field(default_factory=lambda: ["BTCUSDT"])
    symbols_exclude: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # How often a pattern's set is resolved again (listings, halts, delistings at run time).
    universe_refresh_s: float = Field(default=300.0, ge=1.0, le=86_400.0)
    binance_ws_url: str = "wss://stream.binance.com:9443"
    binance_rest_url: str = "https://api.binance.com"
    # What the BINANCE_* URLs serve: the database is marked with it, and a service refuses
    # to write one origin's candles into a database the other fed (deploy.sh --simulate
    # sets "simulated").
    data_origin: Literal["binance", "simulated"] = "binance"

    log_level: LogLevel = "INFO"
    log_format: LogFormat = "auto"
    use_uvloop: bool = True

    @model_validator(mode="before")
    @classmethod
    def _merge_db_aliases(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        for field, alias in DB_ALIASES.items():
            # Empty counts as unset on both sides, as in docker compose's ${DB_PASSWORD:-...}.
            value = _plain(data.pop(alias, None))
            if not value:
                continue
            given = _plain(data.get(field))
            if given and given != value:
                raise PydanticCustomError(
                    "alias_conflict",
                    "{alias} (the seed's name for {variable}) is set too, to a different value; "
                    "keep one of them",
                    {"variable": field.upper(), "alias": alias.upper()},
                )
            data[field] = value
        return data

    @field_validator("db_host")
    @classmethod
    def _hosts(cls, value: str) -> str:
        def one(host: str, port: int | None) -> str:
            shown = f"[{host}]" if ":" in host else host
            return f"{shown}:{port}" if port else shown

        return ",".join(one(h, p) for h, p in parse_host_list(value))

    @model_validator(mode="after")
    def _writable_hosts(self) -> Settings:
        if len(self.db_hosts) > 1 and self.db_target_session_attrs not in WRITABLE_ATTRS:
            raise PydanticCustomError(
                "target_session_attrs",
                "DB_HOST lists several hosts: set DB_TARGET_SESSION_ATTRS=read-write (or primary) so that"
                " connections go to the primary, never to a read-only standby",
                {"variable": "DB_TARGET_SESSION_ATTRS"},
            )
        return self

    @property
    def db_hosts(self) -> list[tuple[str, int]]:
        """(host, port) for every DB_HOST entry, DB_PORT where the entry names none."""
        return [(h, p or self.db_port) for h, p in parse_host_list(self.db_host)]

    @field_validator("symbols", mode="before")
    @classmethod
    def _split_symbols(cls, value: object) -> object:
        entries = parse_universe_entries(value, allow_all=True)
        if isinstance(entries, list) and not entries:
            raise ValueError("at least one symbol is required")
        return entries

    @field_validator("symbols_exclude", mode="before")
    @classmethod
    def _split_exclude(cls, value: object) -> object:
        return parse_universe_entries(value, allow_all=False)

    @model_validator(mode="after")
    def _universe_valid(self) -> Settings:
        try:
            parse_spec(self.symbols, self.symbols_exclude)
        except UniverseError as exc:
            raise PydanticCustomError(
                "universe", "{msg}", {"variable": "SYMBOLS_EXCLUDE", "msg": str(exc)}
            ) from None
        return self

    @property
    def universe(self) -> UniverseSpec:
        """SYMBOLS and SYMBOLS_EXCLUDE as one value (validated at construction)."""
        return parse_spec(self.symbols, self.symbols_exclude)

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_level(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("data_origin", mode="before")
    @classmethod
    def _lower_origin(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("binance_ws_url")
    @classmethod
    def _ws_url(cls, value: str) -> str:
        if not value.startswith(("ws://", "wss://")):
            raise ValueError("must start with ws:// or wss://")
        return value.rstrip("/")

    @field_validator("binance_rest_url")
    @classmethod
    def _rest_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")


S = TypeVar("S", bound=Settings)


def _plain(value: object) -> str | None:
    if value is None:
        return None
    return value.get_secret_value() if isinstance(value, SecretStr) else str(value)


def db_fields_from_url(url: str) -> dict[str, Any]:
    """``postgresql://user:pass@host:port/db`` -> the ``db_*`` settings fields (tests and
    tools that are handed a URL build their Settings with this)."""
    parts = urlsplit(url)
    return {
        "db_host": parts.hostname or "127.0.0.1",
        "db_port": parts.port or 5432,
        "db_user": unquote(parts.username or "postgres"),
        "db_password": unquote(parts.password or ""),
        "db_name": unquote(parts.path.lstrip("/")),
    }


def db_env_from_url(url: str) -> dict[str, str]:
    """The same as the ``DB_*`` environment variables a service reads."""
    return {name.upper(): str(value) for name, value in db_fields_from_url(url).items()}


def describe_errors(exc: ValidationError) -> list[str]:
    """One line per bad variable, named as the user wrote it (upper-case env name)."""
    lines = []
    for err in exc.errors():
        name = "_".join(str(p) for p in err["loc"] if isinstance(p, str)).upper()
        # Whole-model checks (an alias conflict) name their variable in the error's context.
        name = name or str((err.get("ctx") or {}).get("variable", "SETTINGS"))
        # Never echo the offending value: it may be a password.
        lines.append(f"invalid configuration: {name}: {err['msg']}")
    return lines


def load_settings(cls: type[S]) -> S:
    """Build settings from the environment, or exit(2) with one clear line per error."""
    try:
        return cls()
    except ValidationError as exc:
        for line in describe_errors(exc):
            print(line, file=sys.stderr)
        raise SystemExit(2) from None
