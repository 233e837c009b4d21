# syntax=docker/dockerfile:1
# One image for every part: `catalogsync operator`, `catalogsync fetch`, `catalogsync maintain`,
# `catalogsync create-run`. Build from the repository root:
#   docker build -t ghcr.io/catalogsync/catalogsync:0.1.0 \
#     --build-arg REVISION=$(git rev-parse HEAD) .
# scripts/build-image.sh builds this same file with buildah (see docs/operations.md).
#
# The base is the official slim image, pinned by tag and by the digest of its multi-architecture
# index. Any Debian-based image with Python 3.11+ at `python`, `groupadd` and `useradd` works as
# PYTHON_IMAGE (scripts/build-image.sh uses a bookworm base made from Debian packages).
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm@sha256:65a93d69fa75478d554f4ad27c85c1e69fa184956261b4301ebaf6dbb0a3543d
# checkov:skip=CKV_DOCKER_7: FROM uses the PYTHON_IMAGE build argument, pinned just above by tag and digest (checkov does not resolve build arguments)

# --- build: install the package and its pinned dependencies into a self-contained venv ---------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_ROOT_USER_ACTION=ignore
WORKDIR /src
COPY constraints.txt pyproject.toml README.md LICENSE ./
COPY tools/sbom/requirements.txt ./sbom-requirements.txt
COPY src ./src
COPY operator ./operator
COPY jobs ./jobs
# Every dependency at the version the tests ran with (constraints.txt), prebuilt wheels only, so
# the build stage needs no compilers either. pip and setuptools (which venv adds) are not needed
# at run time.
RUN python -m venv /opt/catalogsync \
 && /opt/catalogsync/bin/pip install --only-binary=:all: -c constraints.txt . \
 && /opt/catalogsync/bin/pip uninstall -q -y setuptools \
 && /opt/catalogsync/bin/pip check \
 && /opt/catalogsync/bin/pip uninstall -q -y pip
# The SBOM of exactly that environment (CycloneDX, by cyclonedx-py at the hashes it is locked
# to), shipped in the image; the generator stays in this stage.
RUN python -m venv /opt/sbom \
 && /opt/sbom/bin/pip install -q --only-binary=:all: --require-hashes -r sbom-requirements.txt \
 && /opt/sbom/bin/cyclonedx-py environment --pyproject pyproject.toml --mc-type application \
      --output-reproducible --output-format JSON --output-file /opt/catalogsync/sbom.cdx.json \
      /opt/catalogsync

# --- runtime: the venv on a clean base, no compilers, no pip, a non-root user -----------------
FROM ${PYTHON_IMAGE}
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG SOURCE=https://github.com/catalogsync/catalogsync
LABEL org.opencontainers.image.title="catalogsync" \
      org.opencontainers.image.description="Kubernetes operator that keeps a PostgreSQL products table in sync with MediPim's AU catalog" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="${SOURCE}"
# A base without pip (Debian's python3) has nothing to uninstall.
RUN groupadd --system --gid 10001 catalogsync \
 && useradd --system --uid 10001 --gid 10001 --home-dir /nonexistent --no-create-home \
      --shell /usr/sbin/nologin catalogsync \
 && if python -m pip --version >/dev/null 2>&1; then \
      python -m pip uninstall -q -y pip setuptools wheel; \
    fi
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
