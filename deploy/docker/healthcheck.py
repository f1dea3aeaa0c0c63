"""Container health check of the micro-muzero image (the Dockerfile's HEALTHCHECK): standard library only.

One image runs every job, so the check first finds out which one this container runs, from the command
line of PID 1 (``smz serve inference``, or ``docker-init -- smz serve inference`` with ``init: true``),
then asks that job's own endpoint, on the port its SMZ_* settings give:

| job | checked |
|---|---|
| ``serve inference`` | ``GET /healthz`` on SMZ_INFERENCE_PORT (8001) |
| ``serve broker-gateway`` | ``GET /healthz`` on SMZ_GATEWAY_PORT (8002) |
| ``serve feature-builder`` | ``GET /metrics`` on SMZ_FEATURE_BUILDER_METRICS_PORT (9102); port 0: nothing |
| ``train`` | ``GET /metrics`` on SMZ_TRAINER_METRICS_PORT (9101); port 0: nothing |
| anything else (ingest, features, --help) | nothing: healthy while it runs |

SMZ_HEALTHCHECK_URL overrides the choice (e.g. ``http://127.0.0.1:8001/readyz``); ``none`` disables it.
Exit code 0 = healthy, 1 = unhealthy (what Docker expects).
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence

TIMEOUT_SECONDS = 4.0


def _port(env: Mapping[str, str], name: str, default: int) -> int:
    try:
        return int(env.get(name, default))
    except ValueError:
        return default


def health_url(argv: Sequence[str], env: Mapping[str, str]) -> str | None:
    """The URL to check for a container started with ``argv``, or None when there is nothing to ask."""
    override = env.get("SMZ_HEALTHCHECK_URL", "").strip()
    if override:
        return None if override.lower() == "none" else override
    args = list(argv)
    if "serve" in args[:-1]:
        service = args[args.index("serve") + 1]
        if service == "inference":
            return f"http://127.0.0.1:{_port(env, 'SMZ_INFERENCE_PORT', 8001)}/healthz"
        if service == "broker-gateway":
            return f"http://127.0.0.1:{_port(env, 'SMZ_GATEWAY_PORT', 8002)}/healthz"
        if service == "feature-builder":
            port = _port(env, "SMZ_FEATURE_BUILDER_METRICS_PORT", 9102)
            return f"http://127.0.0.1:{port}/metrics" if port else None
    if "train" in args:
        port = _port(env, "SMZ_TRAINER_METRICS_PORT", 9101)
        return f"http://127.0.0.1:{port}/metrics" if port else None
    return None


def pid1_argv() -> list[str]:
    try:
        with open("/proc/1/cmdline", "rb") as f:
            raw = f.read()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def check(url: str) -> tuple[bool, str]:
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_SECONDS) as response:
            return response.status == 200, f"{url}: {response.status}"
    except urllib.error.HTTPError as exc:
        return False, f"{url}: {exc.code}"
    except (urllib.error.URLError, OSError) as exc:
        return False, f"{url}: {exc}"


def main() -> int:
    url = health_url(pid1_argv(), os.environ)
    if url is None:
        print("healthy: no endpoint to check for this job")
        return 0
    ok, message = check(url)
    print(("healthy: " if ok else "unhealthy: ") + message)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
