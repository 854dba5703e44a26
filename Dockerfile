# syntax=docker/dockerfile:1
# reconciler: the controller image (README, "Container").
#   docker build -t reconciler .
#   docker run -d -p 8080:8080 -v reconciler-state:/var/lib/reconciler \
#     -e RECONCILER_REPO=https://git.example.com/infra.git reconciler
#
# The base is pinned by digest (python:3.11-slim-bookworm); to move it, resolve the tag
# again (`docker buildx imagetools inspect python:3.11-slim-bookworm`) and paste the
# index digest here. CI builds the same file over a Debian bookworm root of its own
# (`--build-arg BASE_IMAGE=...`, see .ci/container), as no image registry is reachable.
ARG BASE_IMAGE=python:3.11-slim-bookworm@sha256:2e32f7d302adc1c37428355c1e646897c0c53f4fd60b6a551245fb90ee129f91

FROM ${BASE_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY constraints.txt pyproject.toml README.md ./
COPY reconciler ./reconciler
COPY sample-repo ./sample-repo
# Every dependency at the version constraints.txt pins; the Redfish, EC2 and Ansible
# providers and task types included, and psycopg for RECONCILER_DATABASE_URL (replicas,
# workers: README, "Beyond one machine").
RUN python3 -m venv /opt/reconciler \
 && /opt/reconciler/bin/pip install --constraint constraints.txt ".[redfish,aws,ansible,postgres]"

FROM ${BASE_IMAGE}
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="reconciler" \
      org.opencontainers.image.description="A GitOps controller for infrastructure: one Git repository in charge of bare metal and cloud fleets" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="python:3.11-slim-bookworm"

# git and ssh for repositories and signature checks (ssh-keygen -Y verify); tini is PID 1:
# it forwards SIGTERM to the controller and reaps the task processes it starts.
# Versions are the base release's (bookworm): security updates are taken on rebuild.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates git openssh-client tini \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --user-group --home-dir /var/lib/reconciler \
      --create-home --shell /usr/sbin/nologin reconciler

COPY --from=build /opt/reconciler /opt/reconciler

ENV PATH=/opt/reconciler/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    HOME=/var/lib/reconciler \
    RECONCILER_STATE_DIR=/var/lib/reconciler \
    RECONCILER_LISTEN=0.0.0.0:8080

# The mirror, the journal (SQLite, WAL) and task logs: keep them across restarts.
VOLUME ["/var/lib/reconciler"]
WORKDIR /var/lib/reconciler
USER 10001:10001
EXPOSE 8080

HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; host, _, port = os.environ['RECONCILER_LISTEN'].rpartition(':'); host = '127.0.0.1' if host in ('0.0.0.0', '::', '[::]') else host; urllib.request.urlopen(f'http://{host}:{port}/healthz', timeout=4)"]

ENTRYPOINT ["/usr/bin/tini", "--", "reconciler"]
CMD ["run"]
