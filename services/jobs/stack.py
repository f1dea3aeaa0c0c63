"""The live stack as local processes: Redis (if none answers), broker gateway, inference, feature builder.

``smz up``, the end-to-end test and ``bench/serving.py`` all start the stack through this module, so
what is tested is what users run. Each service is a real ``smz serve`` process configured by its
environment variables, exactly as in docker compose and Kubernetes.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import redis

from services.broker_gateway.settings import GatewaySettings
from services.feature_builder.settings import FeatureBuilderSettings
from services.inference.settings import InferenceSettings
from services.settings import (
    FEATURE_BUILDER_METRICS_PORT,
    GATEWAY_PORT,
    INFERENCE_PORT,
    LOCALHOST,
    ServiceSettings,
    SharedSettings,
)

__all__ = ["LiveStack", "ServiceProcess", "StackConfig", "StackError", "settings_env"]


def settings_env(settings_cls: type[ServiceSettings], **values: Any) -> dict[str, str]:
    """The ``SMZ_*`` variables that give a service exactly ``values``, checked first by the service's
    own settings class: a renamed field or a bad value fails here, loudly, not in the child. (The
    check reads no environment: ``values`` alone must be valid.)"""
    return settings_cls.from_values(**values).environment()


class StackError(RuntimeError):
    """A process of the stack failed to start or died."""


@dataclass
class ServiceProcess:
    """One child process with its log file and a health URL."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    ready_url: str | None = None
    proc: subprocess.Popen[bytes] | None = field(default=None, init=False)

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        # A new process group: Ctrl-C in the terminal reaches the supervisor, which stops children
        # in order instead of all at once.
        self.proc = subprocess.Popen(
            self.argv, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""

    def wait_ready(self, timeout: float = 120.0) -> None:
        if self.ready_url is None:
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                code = self.proc.returncode if self.proc else None
                raise StackError(f"{self.name} exited with code {code}; its log ends:\n{self.tail()}")
            try:
                if httpx.get(self.ready_url, timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise StackError(
            f"{self.name} was not ready at {self.ready_url} after {timeout:.0f} s:\n{self.tail()}"
        )

    def wait(self, timeout: float | None = None) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout=timeout)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> None:
        if not self.alive():
            return
        assert self.proc is not None
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)

    def kill(self) -> None:
        if self.alive():
            assert self.proc is not None
            self.proc.kill()
            self.proc.wait(timeout=10)


def smz_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "services.cli", *args]


def redis_answers(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=0.5).ping())
    except redis.RedisError:
        return False


@dataclass
class StackConfig:
    """One instrument's live stack. It builds each service's real settings object (``*_settings``:
    checked here, reading no environment), which ``LiveStack`` hands to the process as variables."""

    db: Path
    instrument: str
    checkpoint_dir: Path
    run_dir: Path  # logs and the gateway ledger
    # Redis, streams, account, spread and the gateway's token of every service; the gateway's URL is
    # the stack's own (host, gateway_port).
    shared: SharedSettings = field(default_factory=SharedSettings)
    host: str = LOCALHOST
    inference_port: int = INFERENCE_PORT
    gateway_port: int = GATEWAY_PORT
    feature_builder_metrics_port: int = FEATURE_BUILDER_METRICS_PORT
    inference_metrics_port: int = 0  # inference serves /metrics on its API port
    consumer: str | None = None  # the inference consumer (None: the service's default)
    start: str | None = None  # replay from this UTC time (ISO-8601)
    end: str | None = None
    pace_ms: float = 0.0
    inference_threads: int = 1
    extra_env: Mapping[str, str] = field(default_factory=dict)

    @property
    def gateway_url(self) -> str:
        return f"http://{self.host}:{self.gateway_port}"

    @property
    def inference_url(self) -> str:
        return f"http://{self.host}:{self.inference_port}"

    @property
    def ledger_db(self) -> Path:
        return self.run_dir / "ledger.duckdb"

    @property
    def token(self) -> str:
        """The gateway's bearer token, as the ``Authorization`` header sends it."""
        return self.shared.gateway_token.get_secret_value()

    def shared_settings(self) -> SharedSettings:
        return self.shared.model_copy(update={"gateway_url": self.gateway_url})

    def gateway_settings(self) -> GatewaySettings:
        return GatewaySettings.from_values(
            shared=self.shared_settings(), host=self.host, port=self.gateway_port, ledger_db=self.ledger_db
        )

    def inference_settings(self) -> InferenceSettings:
        consumer = {} if self.consumer is None else {"consumer": self.consumer}
        return InferenceSettings.from_values(
            shared=self.shared_settings(),
            host=self.host,
            port=self.inference_port,
            checkpoint_dir=self.checkpoint_dir,
            threads=self.inference_threads,
            **consumer,
        )

    def feature_builder_settings(self) -> FeatureBuilderSettings:
        replay = {name: value for name, value in (("start", self.start), ("end", self.end)) if value}
        return FeatureBuilderSettings.from_values(
            shared=self.shared_settings(),
            source="duckdb",
            db=self.db,
            instrument=self.instrument,
            pace_ms=self.pace_ms,
            metrics_port=self.feature_builder_metrics_port,
            metrics_host=self.host,
            **replay,
        )


class LiveStack:
    """Start, watch and stop the live services of one instrument."""

    def __init__(self, config: StackConfig) -> None:
        self.config = config
        self.redis: ServiceProcess | None = None
        self.gateway = self._service(
            "broker-gateway", config.gateway_settings(), f"{config.gateway_url}/readyz"
        )
        self.inference = self._service(
            "inference", config.inference_settings(), f"{config.inference_url}/readyz"
        )
        self.feature_builder = self._service("feature-builder", config.feature_builder_settings(), None)

    def _base_env(self) -> dict[str, str]:
        """This shell's environment without its SMZ_* variables (and SMZ_CONFIG): the services get
        exactly the stack's settings."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("SMZ_")}
        env.update(self.config.extra_env)
        return env

    def _service(self, name: str, settings: ServiceSettings, ready_url: str | None) -> ServiceProcess:
        env = {**self._base_env(), **settings.environment()}
        return ServiceProcess(
            name, smz_argv("serve", name), env, self.config.run_dir / "logs" / f"{name}.log", ready_url
        )

    # ------------------------------------------------------------ lifecycle
    def ensure_redis(self) -> bool:
        """Start a private Redis when none answers at the configured URL; True if we started it."""
        url = self.config.shared.redis_url
        if redis_answers(url):
            return False
        server = shutil.which("redis-server")
        if server is None:
            raise StackError(f"no Redis answers at {url} and redis-server is not installed")
        port = redis.connection.parse_url(url).get("port", 6379)
        self.redis = ServiceProcess(
            "redis",
            [server, "--port", str(port), "--save", "", "--appendonly", "no"],
            self._base_env(),
            self.config.run_dir / "logs" / "redis.log",
        )
        self.redis.start()
        deadline = time.monotonic() + 10
        while not redis_answers(url):
            if time.monotonic() > deadline or not self.redis.alive():
                raise StackError(f"redis-server did not start:\n{self.redis.tail()}")
            time.sleep(0.05)
        return True

    def start_services(self, timeout: float = 120.0) -> None:
        """Gateway and inference first (ready), then the feature builder starts replaying."""
        self.ensure_redis()
        self.gateway.start()
        self.inference.start()
        self.gateway.wait_ready(timeout)
        self.inference.wait_ready(timeout)
        self.feature_builder.start()

    def stop(self) -> None:
        # Upstream first, so nothing new arrives at a stopped service.
        for service in (self.feature_builder, self.inference, self.gateway):
            service.stop()
        if self.redis is not None:
            self.redis.stop()

    def __enter__(self) -> LiveStack:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
