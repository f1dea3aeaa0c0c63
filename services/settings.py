"""Settings of the smz services in one place: the block the live services share, and where values come from.

Every service's settings class (``services/<service>/settings.py``) reads its values from four places;
the first that has a value wins (docs/CONFIG.md):

1. values given in code or on the command line (``smz train`` options and ``--set``);
2. environment variables: the service's own ``SMZ_<SERVICE>_<FIELD>`` and, for the shared block,
   ``SMZ_<FIELD>`` (``SMZ_REDIS_URL``), else the service's own name for it from before the block
   (``SMZ_INFERENCE_REDIS_URL``), which keeps working;
3. a TOML config file (``--config FILE`` or ``SMZ_CONFIG``): its ``[shared]`` table and the service's
   own table (``[gateway]``, ``[inference]``, ``[feature_builder]``, ``[trainer]``);
4. the defaults.
"""

from __future__ import annotations

import json
import os
import sys
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from shared.instruments import DEFAULT_SPREAD_PIPS
from shared.wire import POSITIONS_STREAM, WINDOWS_STREAM

SHARED_PREFIX = "SMZ_"
CONFIG_VARIABLE = "SMZ_CONFIG"  # the config file, when --config is not given
LOCALHOST = "127.0.0.1"
INFERENCE_PORT = 8001
GATEWAY_PORT = 8002
TRAINER_METRICS_PORT = 9101
FEATURE_BUILDER_METRICS_PORT = 9102
REDIS_URL = f"redis://{LOCALHOST}:6379/0"
# The paper broker's demo token (the local stack uses it too). It only guards paper trading on
# 127.0.0.1; the OANDA broker refuses to start with it, or with any weak token.
DEFAULT_TOKEN = "paper-demo-token"
LogFormat = Literal["text", "json"]


class SharedSettings(BaseModel):
    """What the live services must agree on, nested as ``shared`` in each one's settings and read from
    ``SMZ_<FIELD>``. A service ignores the fields it does not use."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    redis_url: str = REDIS_URL
    windows_stream: str = WINDOWS_STREAM  # feature builder -> inference
    positions_stream: str = POSITIONS_STREAM  # broker gateway -> feature builder
    # The account orders are placed for: inference sends it, the feature builder waits on its positions.
    account: str = Field("paper", min_length=1, max_length=64)
    # Round-trip cost of the gateway's fills and of the feature builder's position columns: it must be
    # the backtest's.
    spread_pips: float = Field(DEFAULT_SPREAD_PIPS, ge=0)
    gateway_url: str = f"http://{LOCALHOST}:{GATEWAY_PORT}"  # where inference sends orders
    # Bearer token of the gateway's /v1 endpoints: the gateway requires it, inference sends it.
    gateway_token: SecretStr = SecretStr(DEFAULT_TOKEN)
    # Log lines as text, or as one JSON object each for a log collector (services/logging_setup.py).
    log_format: LogFormat = "text"

    def environment(self) -> dict[str, str]:
        """The variables that give these values (those set explicitly)."""
        return {
            f"{SHARED_PREFIX}{name.upper()}": env_text(getattr(self, name))
            for name in sorted(self.model_fields_set)
        }


def env_text(value: Any) -> str:
    """``value`` as an environment variable that pydantic-settings reads back as ``value``."""
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, list | dict):
        return json.dumps(value)
    return str(value)


def validation_problems(exc: ValidationError) -> str:
    """Where and what only: pydantic's own text repeats the input, which may be a credential."""
    return "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'settings'}: {e['msg']}" for e in exc.errors())


def read_config_table(config_file: Path, table: str) -> dict[str, Any]:
    """The ``[table]`` of a TOML config file ({} when it has none)."""
    try:
        document = tomllib.loads(config_file.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ValueError(f"cannot read the config file {config_file}: {exc}") from exc
    values = document.get(table, {})
    if not isinstance(values, dict):
        raise ValueError(f"{table} in the config file {config_file} must be a table ([{table}])")
    return dict(values)


def config_file_from(given: Path | None) -> Path | None:
    """The config file: ``given``, else ``$SMZ_CONFIG``, else none. A named file must exist."""
    path = given
    if path is None and os.environ.get(CONFIG_VARIABLE):
        path = Path(os.environ[CONFIG_VARIABLE])
    if path is not None and not path.is_file():
        raise ValueError(f"config file {path} does not exist")
    return path


@dataclass(frozen=True)
class _Sources:
    """Which of the four places the settings being built read (besides the given values)."""

    environment: bool = True
    config_file: Path | None = None


# settings_customise_sources is a classmethod without the constructor's arguments: ``load`` and
# ``from_values`` pass their choice through this. None: the environment, no file.
_SOURCES: ContextVar[_Sources | None] = ContextVar("smz_settings_sources", default=None)


@contextmanager
def _reading(sources: _Sources) -> Iterator[None]:
    token = _SOURCES.set(sources)
    try:
        yield
    finally:
        _SOURCES.reset(token)


class ServiceSettings(BaseSettings):
    """One service's settings: ``model_config`` gives its variable prefix (``SMZ_GATEWAY_``), which
    also names its config file table (``gateway``)."""

    model_config = SettingsConfigDict(frozen=True)
    service: ClassVar[str] = "smz"  # for messages: "invalid broker gateway settings"

    @classmethod
    def prefix(cls) -> str:
        return str(cls.model_config.get("env_prefix", ""))

    @classmethod
    def config_table(cls) -> str:
        return cls.prefix().removeprefix(SHARED_PREFIX).rstrip("_").lower()

    @classmethod
    def variables(cls) -> dict[str, str]:
        """Every environment variable these settings read, with the field it sets."""
        return {f"{cls.prefix()}{name.upper()}": name for name in cls.model_fields if name != "shared"}

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources = _SOURCES.get() or _Sources()
        chosen: list[PydanticBaseSettingsSource] = [init_settings]
        if sources.environment:
            if issubclass(settings_cls, LiveServiceSettings):
                chosen.append(_SharedEnvironment(settings_cls))
            chosen.append(env_settings)
        if sources.config_file is not None:
            chosen.append(_ConfigFile(settings_cls, sources.config_file))
        return tuple(chosen)

    @classmethod
    def load(cls, config_file: Path | None = None, **given: Any) -> Self:
        """The settings: ``given`` (values the user gave; None is not given) over the environment over
        ``config_file`` (else ``$SMZ_CONFIG``) over the defaults."""
        with _reading(_Sources(config_file=config_file_from(config_file))):
            return cls(**{k: v for k, v in given.items() if v is not None})

    @classmethod
    def from_values(cls, **values: Any) -> Self:
        """Exactly ``values`` over the defaults, reading no environment and no file: the settings
        another process is to be given (``environment``)."""
        with _reading(_Sources(environment=False)):
            return cls(**values)

    @classmethod
    def load_or_exit(cls, config_file: Path | None = None) -> Self:
        """``load``, or exit with code 2 saying what is wrong."""
        try:
            return cls.load(config_file)
        except ValidationError as exc:
            message = f"invalid {cls.service} settings ({cls.prefix()}*): {validation_problems(exc)}"
        except ValueError as exc:
            message = str(exc)
        print(f"error: {message}", file=sys.stderr)
        raise SystemExit(2)

    def environment(self) -> dict[str, str]:
        """The variables that give a service these settings' explicitly set values (``from_values``)."""
        variables: dict[str, str] = {}
        for name in sorted(self.model_fields_set):
            value = getattr(self, name)
            if isinstance(value, SharedSettings):
                variables |= value.environment()
            elif value is not None:
                variables[f"{self.prefix()}{name.upper()}"] = env_text(value)
        return variables


class LiveServiceSettings(ServiceSettings):
    """A live service's settings: its own fields and the shared block."""

    shared: SharedSettings = SharedSettings()
    # The shared fields the service declared itself before the block: SMZ_<SERVICE>_<FIELD> still sets
    # them when SMZ_<FIELD> is not set.
    previous_shared_fields: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def shared_variables(cls) -> list[tuple[str, str]]:
        """(variable, shared field), the new names first: the first one set wins."""
        new = [(f"{SHARED_PREFIX}{name.upper()}", name) for name in SharedSettings.model_fields]
        previous = [(f"{cls.prefix()}{name.upper()}", name) for name in cls.previous_shared_fields]
        return new + [pair for pair in previous if pair not in new]

    @classmethod
    def variables(cls) -> dict[str, str]:
        shared = {variable: f"shared.{name}" for variable, name in cls.shared_variables()}
        return {**super().variables(), **shared}


class _SharedEnvironment(PydanticBaseSettingsSource):
    """The shared block from the environment (``LiveServiceSettings.shared_variables``)."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # everything is read in __call__

    def __call__(self) -> dict[str, Any]:
        assert issubclass(self.settings_cls, LiveServiceSettings)
        environ = {k.upper(): v for k, v in os.environ.items()}  # as pydantic-settings: case-insensitive
        block: dict[str, str] = {}
        for variable, name in self.settings_cls.shared_variables():
            if variable in environ and name not in block:
                block[name] = environ[variable]
        return {"shared": block} if block else {}


class _ConfigFile(PydanticBaseSettingsSource):
    """The service's table of a TOML config file, and its ``[shared]`` table for a live service."""

    def __init__(self, settings_cls: type[BaseSettings], config_file: Path) -> None:
        super().__init__(settings_cls)
        self.config_file = config_file

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # everything is read in __call__

    def __call__(self) -> dict[str, Any]:
        assert issubclass(self.settings_cls, ServiceSettings)
        values = read_config_table(self.config_file, self.settings_cls.config_table())
        if issubclass(self.settings_cls, LiveServiceSettings):
            shared = read_config_table(self.config_file, "shared")
            if shared:
                values["shared"] = shared
        return values
