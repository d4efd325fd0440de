# syntax=docker/dockerfile:1
# The edgefleet hub: HTTP API (8080), gRPC artifact service (50051), MQTT transport, scheduler.
# Build from the repository root (docs/deploy.md):
#   docker build -f deploy/docker/hub.Dockerfile -t edgefleet-hub:0.1.0 .
#
# The base is pinned by tag and by the digest of its multi-architecture index, so a rebuild gets the
# same bytes. To move to a newer patch release, read the new digest and replace both FROM lines:
#   docker buildx imagetools inspect python:3.11-slim-bookworm   (the "Digest:" line of the index)

# ---- build: one virtualenv with edgefleet[hub] at the versions in constraints.txt ----------------
FROM python:3.11.14-slim-bookworm@sha256:65a93d69fa75478d554f4ad27c85c1e69fa184956261b4301ebaf6dbb0a3543d AS build

# The hub extra pins torch==2.13.0 and constraints.txt its CPU build (+cpu), which only PyTorch's
# CPU index serves; a CUDA build would add gigabytes the hub does not use.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
# The extras installed. Artifacts in object storage (EDGEFLEET_ARTIFACT_STORE=s3) need boto3: name
# the extra that brings it here (--build-arg EXTRAS=hub,NAME) unless the hub extra already does.
ARG EXTRAS=hub

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /src
COPY pyproject.toml constraints.txt README.md ./
COPY proto/ proto/
COPY cloud/ cloud/
COPY edge_agent/ edge_agent/
COPY model_tools/ model_tools/
COPY firmware_images/ firmware_images/

# Wheels only (--only-binary): every dependency ships one for x86_64 (linux/amd64, the platform this
# image is built for), so the build needs no compiler and cannot quietly compile a library instead.
RUN python -m venv /opt/edgefleet \
    && python -m pip wheel --no-cache-dir --no-deps --wheel-dir /tmp/wheels . \
    && /opt/edgefleet/bin/pip install --no-cache-dir --only-binary=:all: -c constraints.txt \
        --extra-index-url "${TORCH_INDEX_URL}" "$(ls /tmp/wheels/edgefleet-*.whl)[${EXTRAS}]" \
    && /opt/edgefleet/bin/fleet --version

# ---- runtime: the virtualenv on a clean base, run as a fixed non-root user ----------------------
FROM python:3.11.14-slim-bookworm@sha256:65a93d69fa75478d554f4ad27c85c1e69fa184956261b4301ebaf6dbb0a3543d AS runtime

ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="edgefleet-hub" \
      org.opencontainers.image.description="edgefleet hub: registry, rollouts, telemetry, signed updates for fleets of edge devices" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/edgefleet/edgefleet" \
      org.opencontainers.image.documentation="https://github.com/edgefleet/edgefleet/blob/main/docs/deploy.md" \
      org.opencontainers.image.base.name="docker.io/library/python:3.11.14-slim-bookworm"

# uid/gid 10001: fixed so that volumes and Kubernetes' runAsUser agree across rebuilds, and above
# the range a host's own users take, so a bind mount never maps to a person's account.
RUN groupadd --system --gid 10001 edgefleet \
    && useradd --system --uid 10001 --gid edgefleet --home-dir /var/lib/edgefleet --no-create-home \
        --shell /usr/sbin/nologin edgefleet \
    && install -d -o edgefleet -g edgefleet -m 0750 /var/lib/edgefleet

COPY --from=build /opt/edgefleet /opt/edgefleet
COPY deploy/docker/healthcheck.py /opt/edgefleet/healthcheck.py

# Everything the hub writes goes to EDGEFLEET_DATA_DIR (a volume), so the root filesystem can be
# mounted read-only; bytecode was compiled at install time and is never written at run time.
# Only addresses that differ from the single-machine defaults are set here; the rest of the settings
# (database, broker, TLS files) come from the environment at run time: docs/deploy.md lists them.
ENV PATH=/opt/edgefleet/bin:${PATH} \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    EDGEFLEET_DATA_DIR=/var/lib/edgefleet \
    EDGEFLEET_API_HOST=0.0.0.0 \
    EDGEFLEET_API_PORT=8080 \
    EDGEFLEET_GRPC_HOST=0.0.0.0 \
    EDGEFLEET_GRPC_PORT=50051 \
    EDGEFLEET_LOG_FORMAT=json

USER 10001:10001
WORKDIR /var/lib/edgefleet
VOLUME ["/var/lib/edgefleet"]
EXPOSE 8080 50051

# GET /healthz answers 200 while the database answers (503 otherwise). The start period covers a
# first start, which creates the signing keys and the fleet CA.
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "/opt/edgefleet/healthcheck.py", "hub"]

ENTRYPOINT ["fleet"]
CMD ["hub"]
