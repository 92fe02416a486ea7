"""The deployment files (issue 15, operations): the image's entrypoint migrates only when told
to, the Kubernetes manifests probe routes the service has and leave migrations to the Job, and
the image and ``make install`` install only locked, hashed versions (item 10).
(kubernetes-validate and hadolint check their syntax in ``make check-deploy``.)"""

from __future__ import annotations

import itertools
import os
import re
import shlex
import subprocess
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from app.main import create_app
from app.netutil import forwarded_client
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
    assert "--no-access-log" in calls[1].split()  # the service writes its own access line


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


def test_the_configmap_believes_forwarded_for_from_the_ingress_network() -> None:
    # Without it every client behind the ingress has the ingress pod's address, and one client
    # can spend the per-IP login limit for all of them.
    data = manifests()["ConfigMap/wxpay-config"]["data"]
    trusted = hermetic_settings(trusted_proxies=data["WXPAY_TRUSTED_PROXIES"]).trusted_proxies

    # An ingress pod (flannel's default pod network) forwarding for a client.
    assert forwarded_client("10.244.1.5", "203.0.113.9", trusted) == "203.0.113.9"


# --- locked dependencies (issue 15, item 10) ------------------------------------------------

# What each lock holds besides [project].dependencies: the extras the Makefile's `lock` rule
# resolves into it.
LOCK_EXTRAS = {
    "runtime": [],
    "dev": ["dev"],
    "browser": ["dev", "browser"],
    "bench": ["dev", "bench"],
}
# lxml parses untrusted notifies: 5.3.2 ships libxml2 2.13.8 (CVE-2025-24928, CVE-2025-27113).
LXML_FLOOR = Version("5.3.2")
_HASH = re.compile(r"--hash=sha256:([0-9a-f]{64})(?=\s|$)")


@dataclass(frozen=True)
class Pin:
    """One entry of a uv lock file: ``name==version [; marker]`` and its ``--hash=`` options."""

    requirement: Requirement
    hashes: list[str]

    @property
    def name(self) -> str:
        return canonicalize_name(self.requirement.name)

    @property
    def version(self) -> Version | None:
        """The pinned version; None unless the entry is exactly one ``==`` of a whole version."""
        specs = list(self.requirement.specifier)
        if len(specs) != 1 or specs[0].operator != "==" or "*" in specs[0].version:
            return None
        return Version(specs[0].version)


def locked(lock: str) -> list[Pin]:
    """Every entry of ``requirements/{lock}.lock``; one that is no requirement fails to parse."""
    text = (ROOT / "requirements" / f"{lock}.lock").read_text()
    pins = []
    for line in re.sub(r"\\\n", " ", text).splitlines():
        entry = line.split("#", 1)[0].strip()
        if entry:
            requirement = _HASH.sub("", entry).strip()
            pins.append(Pin(Requirement(requirement), _HASH.findall(entry)))
    return pins


def declared(lock: str) -> list[Requirement]:
    """What pyproject.toml asks for, in the lock's scope."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = [project["optional-dependencies"][extra] for extra in LOCK_EXTRAS[lock]]
    return [Requirement(r) for r in itertools.chain(project["dependencies"], *extras)]


def pip_installs(commands: list[str], installer: str = "pip install") -> list[list[str]]:
    """The arguments of each ``installer`` among ``commands``."""
    return [shlex.split(c.split(installer, 1)[1]) for c in commands if installer in c]


def test_the_image_installs_the_locked_versions_then_the_project_without_resolving() -> None:
    dockerfile = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    runs = [line for line in dockerfile.splitlines() if line.startswith("RUN ")]

    # Nothing else is installed: an unpinned `pip install` would resolve afresh at build time.
    assert pip_installs(runs) == [
        ["--require-hashes", "-r", "requirements/runtime.lock"],
        ["--no-deps", "."],
    ]


def test_make_install_installs_the_dev_lock_with_hashes_then_the_project_alone() -> None:
    makefile = (ROOT / "Makefile").read_text()
    lines = makefile.splitlines()
    start = lines.index("$(STAMP): pyproject.toml requirements/dev.lock")  # a new lock reinstalls
    recipe = [line.strip() for line in itertools.takewhile(str.strip, lines[start + 1 :])]

    assert "install: $(STAMP)" in lines
    assert re.search(r"^PIP := \S*python -m pip install ", makefile, re.MULTILINE)
    assert pip_installs(recipe) == []  # only through $(PIP)
    assert pip_installs(recipe, "$(PIP)") == [
        ["--require-hashes", "-r", "requirements/dev.lock"],
        ["--no-deps", "-e", "."],
    ]


@pytest.mark.parametrize("lock", LOCK_EXTRAS)
def test_every_locked_package_is_pinned_with_its_hashes(lock: str) -> None:
    pins = locked(lock)

    assert pins
    assert [str(p.requirement) for p in pins if p.version is None or not p.hashes] == []


@pytest.mark.parametrize("lock", LOCK_EXTRAS)
def test_every_declared_dependency_is_locked_within_its_bounds(lock: str) -> None:
    versions = {pin.name: pin.version for pin in locked(lock)}

    for wanted in declared(lock):
        version = versions.get(canonicalize_name(wanted.name))
        assert version is not None, f"{wanted.name} is not pinned in {lock}.lock"
        assert wanted.specifier.contains(version, prereleases=True), f"{wanted} locked {version}"


@pytest.mark.parametrize("lock", LOCK_EXTRAS)
def test_the_locked_lxml_is_past_the_libxml2_advisories(lock: str) -> None:
    (lxml,) = [pin for pin in locked(lock) if pin.name == "lxml"]

    assert lxml.version is not None and lxml.version >= LXML_FLOOR
