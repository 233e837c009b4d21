# syntax=docker/dockerfile:1
# One image for every part: `catalogsync operator`, `catalogsync fetch`, `catalogsync maintain`,
# `catalogsync create-run`. Build from the repository root:
#   docker build -t ghcr.io/catalogsync/catalogsync:0.1.0 .
#
# The base is pinned by exact tag. For a release, also pin its digest, e.g.
#   docker buildx imagetools inspect python:3.11.14-slim-bookworm --format '{{json .Manifest.Digest}}'
#   docker build --build-arg PYTHON_IMAGE=python:3.11.14-slim-bookworm@sha256:<digest> .
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm
# checkov:skip=CKV_DOCKER_7: FROM uses the PYTHON_IMAGE build argument, pinned just above to an exact version tag (checkov does not resolve build arguments)

# --- build: install the package and its pinned dependencies into a self-contained venv ---------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_ROOT_USER_ACTION=ignore
WORKDIR /src
COPY constraints.txt pyproject.toml README.md LICENSE ./
COPY src ./src
COPY operator ./operator
COPY jobs ./jobs
# Every dependency at the version the tests ran with (constraints.txt), prebuilt wheels only, so
# the build stage needs no compilers either. pip itself is not needed at run time.
RUN python -m venv /opt/catalogsync \
 && /opt/catalogsync/bin/pip install --only-binary=:all: -c constraints.txt . \
 && /opt/catalogsync/bin/pip check \
 && /opt/catalogsync/bin/pip uninstall -q -y pip

# --- runtime: the venv on a clean base, no compilers, no pip cache, a non-root user ------------
FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="catalogsync" \
      org.opencontainers.image.description="Kubernetes operator that keeps a PostgreSQL products table in sync with MediPim's AU catalog" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 catalogsync \
 && useradd --system --uid 10001 --gid 10001 --home-dir /nonexistent --no-create-home \
      --shell /usr/sbin/nologin catalogsync \
 && python -m pip uninstall -q -y pip setuptools wheel
COPY --from=build /opt/catalogsync /opt/catalogsync
ENV PATH=/opt/catalogsync/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
# Numeric so that runAsNonRoot can verify it without resolving names.
USER 10001:10001
WORKDIR /tmp
# Kubernetes probes the operator over HTTP (the chart's livenessProbe); the jobs are run to
# completion, so an image-level HEALTHCHECK would only be noise.
HEALTHCHECK NONE
ENTRYPOINT ["catalogsync"]
CMD ["--help"]
