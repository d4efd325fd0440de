# syntax=docker/dockerfile:1
# The edgefleet device agent: serves the fleet's model, takes signed updates, reports to the hub.
# Build from the repository root (docs/deploy.md); for arm64 devices add --platform linux/arm64:
#   docker build -f deploy/docker/agent.Dockerfile -t edgefleet-agent:0.1.0 .
# Run it with the bundle `fleet devices provision` wrote mounted at /etc/edgefleet (agent.toml and
# the files it names) and a volume for its state at /var/lib/edgefleet.
#
# The base is pinned by tag and by the digest of its multi-architecture index (amd64 and arm64). To
# move to a newer patch release, read the new digest and replace both FROM lines:
#   docker buildx imagetools inspect python:3.11-slim-bookworm   (the "Digest:" line of the index)

# ---- build: one virtualenv with edgefleet[agent] at the versions in constraints.txt --------------
FROM python:3.11.14-slim-bookworm@sha256:65a93d69fa75478d554f4ad27c85c1e69fa184956261b4301ebaf6dbb0a3543d AS build

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /src
COPY pyproject.toml constraints.txt README.md ./
COPY proto/ proto/
COPY cloud/ cloud/
COPY edge_agent/ edge_agent/
COPY model_tools/ model_tools/
COPY firmware_images/ firmware_images/

# Wheels only (--only-binary): every agent dependency ships one for x86_64 and aarch64, so the build
# needs no compiler. The agent extra has no torch, FastAPI or SQL; the last step fails the build
# should one of them ever arrive through a dependency, since a device cannot afford them.
RUN python -m venv /opt/edgefleet \
    && python -m pip wheel --no-cache-dir --no-deps --wheel-dir /tmp/wheels . \
    && /opt/edgefleet/bin/pip install --no-cache-dir --only-binary=:all: -c constraints.txt \
        "$(ls /tmp/wheels/edgefleet-*.whl)[agent]" \
    && /opt/edgefleet/bin/edgefleet-agent --version \
    && /opt/edgefleet/bin/python -c "import importlib.util as u, sys; \
found = [m for m in ('torch', 'fastapi', 'sqlalchemy', 'sqlmodel') if u.find_spec(m)]; \
sys.exit(f'the agent image must not contain {found}' if found else 0)"

# ---- runtime: the virtualenv on a clean base, run as a fixed non-root user ----------------------
FROM python:3.11.14-slim-bookworm@sha256:65a93d69fa75478d554f4ad27c85c1e69fa184956261b4301ebaf6dbb0a3543d AS runtime

ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="edgefleet-agent" \
      org.opencontainers.image.description="edgefleet device agent: serves a verified model, takes signed updates, rolls back on its own" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/edgefleet/edgefleet" \
      org.opencontainers.image.documentation="https://github.com/edgefleet/edgefleet/blob/main/docs/deploy.md" \
      org.opencontainers.image.base.name="docker.io/library/python:3.11.14-slim-bookworm"

# uid/gid 10001, as in the hub image: fixed so that volumes keep their owner across rebuilds.
RUN groupadd --system --gid 10001 edgefleet \
    && useradd --system --uid 10001 --gid edgefleet --home-dir /var/lib/edgefleet --no-create-home \
        --shell /usr/sbin/nologin edgefleet \
    && install -d -o edgefleet -g edgefleet -m 0750 /var/lib/edgefleet

COPY --from=build /opt/edgefleet /opt/edgefleet
COPY deploy/docker/healthcheck.py /opt/edgefleet/healthcheck.py

# The agent writes only to its state_dir (/var/lib/edgefleet: state file, artifacts, queue, the local
# API socket), so the root filesystem can be mounted read-only.
ENV PATH=/opt/edgefleet/bin:${PATH} \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

USER 10001:10001
WORKDIR /var/lib/edgefleet
VOLUME ["/var/lib/edgefleet"]

# The local API's gRPC health service answers SERVING while the agent runs, with or without a model
# (a device waiting for its first version is healthy). A config whose local_api.socket is not the
# default overrides this check with --socket.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "/opt/edgefleet/healthcheck.py", "agent", "--socket", "/var/lib/edgefleet/agent.sock"]

ENTRYPOINT ["edgefleet-agent"]
CMD ["run", "--config", "/etc/edgefleet/agent.toml"]
