# syntax=docker/dockerfile:1
# One image for every service of micro-muzero: the entrypoint is `smz`, the command picks the job.
#   docker build -t micro-muzero:0.1.0 .
#   docker build --build-arg EXTRAS=ray -t micro-muzero:0.1.0-ray .   (k8s/overlays/ray: training on Ray)
#   docker run --rm micro-muzero:0.1.0 serve inference      (settings: SMZ_* environment variables)
# docker-compose.yml and k8s/ run it as the trainer, inference, feature builder and broker gateway.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---------------------------------------------------------------- builder: the venv
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src

# PyTorch's CPU build first, from PyTorch's own index: `torch==2.13.0` in pyproject.toml is then
# satisfied by 2.13.0+cpu and PyPI's CUDA build (and its nvidia-* wheels) is never pulled.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
RUN pip install --index-url "${TORCH_INDEX_URL}" torch==2.13.0

# The pinned dependencies next, in their own layer: it is rebuilt only when pyproject.toml changes.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > requirements.txt \
    && pip install -r requirements.txt

# Then the project itself (shared/ and services/, and the `smz` script), without touching the deps.
COPY README.md ./
COPY shared ./shared
COPY services ./services
RUN pip install --no-deps . \
    && python -c "import torch; assert torch.__version__.startswith('2.13.0') and not torch.version.cuda, torch.__version__" \
    && smz --help > /dev/null

# Optional extras, pinned in pyproject.toml: --build-arg EXTRAS=ray builds the image of
# k8s/overlays/ray (micro-muzero:0.1.0-ray), whose pods are Ray's nodes. The default image has no Ray.
ARG EXTRAS=""
RUN if [ -n "${EXTRAS}" ]; then pip install ".[${EXTRAS}]"; fi

# ---------------------------------------------------------------- runtime: the venv and the code only
FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="micro-muzero" \
      org.opencontainers.image.description="Stochastic MuZero forex trading stack: trainer, inference, feature builder, broker gateway" \
      org.opencontainers.image.version="0.1.0"

# The same uid/gid as the Kubernetes manifests (runAsUser 10001). No shell login, no home of its own.
RUN groupadd --system --gid 10001 smz \
    && useradd --system --uid 10001 --gid smz --no-create-home --home-dir /tmp --shell /usr/sbin/nologin smz \
    && mkdir -p /data /checkpoints /var/lib/smz/ledger \
    && chown smz:smz /data /checkpoints /var/lib/smz/ledger

COPY --from=builder /opt/venv /opt/venv
WORKDIR /app
# The bundled real sample (what the compose init job ingests) and the container health check.
COPY data/sample ./data/sample
COPY deploy/docker/healthcheck.py ./healthcheck.py

# HOME, numba's cache and matplotlib's config go to /tmp, so the root filesystem can be read-only.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp \
    NUMBA_CACHE_DIR=/tmp/numba \
    MPLCONFIGDIR=/tmp/matplotlib

# An empty named volume mounted on /data, /checkpoints or /var/lib/smz/ledger starts with the
# ownership above (Docker copies it from the image), so uid 10001 can write there.
USER 10001:10001
EXPOSE 8001 8002 9101 9102

# Liveness of whatever `smz` job the container runs: /healthz of inference and gateway, the metrics
# endpoint of the feature builder and trainer, nothing for one-shot jobs (see healthcheck.py).
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "/app/healthcheck.py"]

ENTRYPOINT ["smz"]
CMD ["--help"]
