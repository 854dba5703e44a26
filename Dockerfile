# reconciler: the controller image. Build: docker build -t reconciler .
FROM python:3.11-slim

RUN apt-get update \
 && apt-get install -y --no-install-recommends git openssh-client ca-certificates \
 && rm -rf /var/lib/apt/lists/*

RUN useradd --create-home --uid 10001 reconciler
WORKDIR /app
COPY pyproject.toml README.md ./
COPY reconciler ./reconciler
COPY schemas ./schemas
COPY sample-repo ./sample-repo
RUN pip install --no-cache-dir .

USER reconciler
WORKDIR /home/reconciler
ENV RECONCILER_STATE_DIR=/home/reconciler/state \
    RECONCILER_LISTEN=0.0.0.0:8080
EXPOSE 8080
ENTRYPOINT ["reconciler"]
CMD ["--help"]
