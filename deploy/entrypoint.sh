#!/bin/sh
# The image's start. Migrations run here unless WXPAY_MIGRATE_ON_START=false: on Kubernetes a
# Job runs them once (deploy/kubernetes/migrate-job.yaml) and the pods must not race it. The
# metrics directory is emptied before uvicorn starts its workers (WEB_CONCURRENCY of them), so
# /metrics adds up this container's workers and nothing a previous run left behind.
set -eu

case "${WXPAY_MIGRATE_ON_START:-true}" in
  true | 1 | yes) alembic upgrade head ;;
  false | 0 | no) ;;
  *) echo "WXPAY_MIGRATE_ON_START must be true or false, not '${WXPAY_MIGRATE_ON_START}'" >&2; exit 2 ;;
esac

if [ -n "${PROMETHEUS_MULTIPROC_DIR:-}" ]; then
  # Its contents only: on Kubernetes the directory itself is a mounted volume.
  mkdir -p "${PROMETHEUS_MULTIPROC_DIR}"
  find "${PROMETHEUS_MULTIPROC_DIR}" -mindepth 1 -delete
fi

# --no-access-log: the service writes each request's access line itself (WXPAY_ACCESS_LOG), with
# its request id and the time taken; uvicorn's would only be switched off after its arguments
# were worked out.
exec uvicorn app.main:app --host 0.0.0.0 --port 8000 --no-proxy-headers --no-access-log "$@"
