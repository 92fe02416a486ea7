# syntax=docker/dockerfile:1
# Build: docker build -t wxpay-backend .
# Run:   docker run -p 8000:8000 --env-file .env wxpay-backend
# (Not built on the project's own machines, which run no Docker engine: `make check-deploy`
# lints this file with hadolint.)
FROM python:3.11-slim AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
RUN python -m venv /opt/venv
# The locked versions, each checked against its hash; then the project with no resolving.
COPY requirements/runtime.lock ./requirements/
RUN /opt/venv/bin/pip install --require-hashes -r requirements/runtime.lock
COPY pyproject.toml README.md ./
COPY app ./app
RUN /opt/venv/bin/pip install --no-deps .

FROM python:3.11-slim AS runtime
# PROMETHEUS_MULTIPROC_DIR: the workers' metrics files, so /metrics adds up every worker.
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 \
    PROMETHEUS_MULTIPROC_DIR=/srv/var/metrics
# Production unless told otherwise: an image started without its .env refuses to run on
# development secrets instead of mounting the WeChat simulator at /sim.
ENV WXPAY_ENV=production
RUN useradd --create-home --uid 10001 wxpay
WORKDIR /srv
COPY --from=build /opt/venv /opt/venv
COPY alembic.ini ./
COPY alembic ./alembic
COPY app ./app
COPY deploy/entrypoint.sh /usr/local/bin/wxpay-entrypoint
RUN mkdir -p var/metrics && chown -R wxpay:wxpay var
# Numeric, so Kubernetes can check runAsNonRoot without reading /etc/passwd.
USER 10001
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=3s CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2)"]
# Migrates, then serves; WXPAY_MIGRATE_ON_START=false when something else migrates (Kubernetes).
ENTRYPOINT ["wxpay-entrypoint"]
