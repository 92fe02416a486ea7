"""The deployment files (issue 15, operations): the image's entrypoint migrates only when told
to, and the Kubernetes manifests probe routes the service has and leave migrations to the Job.
(kubernetes-validate and hadolint check their syntax in ``make check-deploy``.)"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from app.main import create_app
from tests.hermetic import hermetic_settings

ROOT = Path(__file__).resolve().parent.parent
ENTRYPOINT = ROOT / "deploy" / "entrypoint.sh"
KUBERNETES = ROOT / "deploy" / "kubernetes"


def run_entrypoint(tmp_path: Path, **env: str) -> tuple[int, list[str]]:
    """The entrypoint with stand-ins for alembic and uvicorn that record how they were called."""
    calls = tmp_path / "calls"
    for tool in ("alembic", "uvicorn"):
        fake = tmp_path / "bin" / tool
        fake.parent.mkdir(exist_ok=True)
        fake.write_text(f'#!/bin/sh\necho "{tool} $*" >> {calls}\n')
        fake.chmod(0o755)
    path = f"{tmp_path / 'bin'}:{os.environ['PATH']}"
    result = subprocess.run(
        ["sh", str(ENTRYPOINT)], env={"PATH": path, **env}, capture_output=True, check=False
    )
    return result.returncode, calls.read_text().splitlines() if calls.exists() else []


def test_the_image_migrates_then_serves_by_default(tmp_path: Path) -> None:
    code, calls = run_entrypoint(tmp_path)

    assert code == 0
    assert calls[0] == "alembic upgrade head"
    assert calls[1].startswith("uvicorn app.main:app --host 0.0.0.0 --port 8000")


def test_with_migrations_switched_off_it_only_serves(tmp_path: Path) -> None:
    code, calls = run_entrypoint(tmp_path, WXPAY_MIGRATE_ON_START="false")

    assert code == 0
    assert [call.split()[0] for call in calls] == ["uvicorn"]


def test_a_mistyped_switch_stops_before_anything_runs(tmp_path: Path) -> None:
    code, calls = run_entrypoint(tmp_path, WXPAY_MIGRATE_ON_START="flase")

    assert code == 2 and calls == []


def test_a_previous_runs_metrics_files_are_removed(tmp_path: Path) -> None:
    metrics = tmp_path / "metrics"
    metrics.mkdir()
    (metrics / "counter_123.db").write_bytes(b"old")

    code, _ = run_entrypoint(tmp_path, PROMETHEUS_MULTIPROC_DIR=str(metrics))

    assert code == 0 and metrics.is_dir() and list(metrics.iterdir()) == []


def manifests() -> dict[str, dict[str, Any]]:
    found = {}
    for path in sorted(KUBERNETES.glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            found[f"{document['kind']}/{document['metadata']['name']}"] = document
    return found


def container(kind_name: str) -> dict[str, Any]:
    spec = manifests()[kind_name]["spec"]["template"]["spec"]
    (only,) = spec["containers"]
    return dict(only)


def test_the_pods_probe_routes_the_service_has_and_do_not_migrate() -> None:
    api = container("Deployment/wxpay-backend")
    app = create_app(hermetic_settings())

    assert api["livenessProbe"]["httpGet"]["path"] == app.url_path_for("healthz") == "/healthz"
    assert api["readinessProbe"]["httpGet"]["path"] == app.url_path_for("readyz") == "/readyz"
    assert {"name": "WXPAY_MIGRATE_ON_START", "value": "false"} in api["env"]
    assert "command" not in api  # the image's entrypoint, with its switch


def test_the_job_migrates_with_the_pods_settings_and_secrets() -> None:
    job = container("Job/wxpay-migrate")
    api = container("Deployment/wxpay-backend")

    assert job["command"] == ["alembic", "upgrade", "head"]
    assert job["image"] == api["image"] and job["envFrom"] == api["envFrom"]
    assert {"secretRef": {"name": "wxpay-secrets"}} in api["envFrom"]


@pytest.mark.parametrize("kind_name", ["HorizontalPodAutoscaler", "PodDisruptionBudget"])
def test_scaling_and_disruption_rules_target_the_deployment(kind_name: str) -> None:
    found = manifests()[f"{kind_name}/wxpay-backend"]["spec"]
    pods = manifests()["Deployment/wxpay-backend"]["spec"]["template"]["metadata"]["labels"]

    target = found.get("scaleTargetRef", {}).get("name")
    selector = found.get("selector", {}).get("matchLabels")
    assert target == "wxpay-backend" or selector == pods
