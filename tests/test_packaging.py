"""Two packages, one direction of imports: the job wheel the bundle deploys carries only the job and its runtime
requirements; the toolbox wheel beside it carries the developer tools and requires the job. Both are built with
the bundle's own artifact commands, on a copy of the tracked files (what a fresh clone has)."""

from __future__ import annotations

import ast
import email
import shlex
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from streamdash_toolbox.testing import REPO, bundle

JOB_REQUIREMENTS = {"influxdb-client", "pydantic"}
TOOLBOX_ONLY = {"pyspark", "confluent-kafka", "cryptography"}


def _requirement_name(requirement: str) -> str:
    return requirement.split(";")[0].split("[")[0].split("=")[0].split("<")[0].split(">")[0].strip().lower()


@pytest.fixture(scope="module")
def wheels(tmp_path_factory) -> dict[str, zipfile.ZipFile]:
    """artifact key -> its wheel, built by the artifact's `build` command in the artifact's `path`."""
    copy = tmp_path_factory.mktemp("clone")
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True,
                           text=True, check=True).stdout.split()
    for name in files:
        if (REPO / name).is_file():
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            (copy / name).write_bytes((REPO / name).read_bytes())
    built = {}
    for key, artifact in bundle.resolve("dev", bundle.REQUIRED).config["artifacts"].items():
        command = [sys.executable if word == "python3" else word for word in shlex.split(artifact["build"])]
        subprocess.run(command, cwd=copy / artifact["path"], check=True, capture_output=True)
        build_dir = copy / artifact["path"] / command[command.index("--wheel-dir") + 1]
        [wheel] = build_dir.glob("*.whl")
        built[key] = zipfile.ZipFile(wheel)
    return built


def _metadata(wheel: zipfile.ZipFile) -> email.message.Message:
    name = next(n for n in wheel.namelist() if n.endswith(".dist-info/METADATA"))
    return email.message_from_bytes(wheel.read(name))


def _runtime_requirements(wheel: zipfile.ZipFile) -> dict[str, str]:
    """name -> requirement, for what pip installs with the wheel (no extras)."""
    requires = _metadata(wheel).get_all("Requires-Dist") or []
    return {_requirement_name(r): r for r in requires if "extra ==" not in r}


def test_job_wheel_carries_only_the_job(wheels):
    wheel = wheels["streamdash_wheel"]
    packages = {name.split("/")[0] for name in wheel.namelist() if not name.split("/")[0].endswith(".dist-info")}
    assert packages == {"streamdash"}, packages
    modules = {name for name in wheel.namelist() if name.startswith("streamdash/")}
    assert {"streamdash/job.py", "streamdash/config.py", "streamdash/sinks/influxdb.py",
            "streamdash/transforms/parse.py", "streamdash/sources/kafka.py",
            "streamdash/scheduler_pools.xml"} <= modules
    assert not [m for m in modules if any(part in m for part in ("stack", "simulator", "cli.py", "dashboards"))]
    assert set(_runtime_requirements(wheel)) == JOB_REQUIREMENTS
    assert not [n for n in wheel.namelist() if n.endswith("entry_points.txt")]  # no command: the job is the job


def test_toolbox_wheel_requires_the_job_at_its_version(wheels):
    job_version = _metadata(wheels["streamdash_wheel"])["Version"]
    toolbox = wheels["streamdash_toolbox_wheel"]
    requirements = _runtime_requirements(toolbox)
    assert requirements["streamdash"].replace(" ", "") == f"streamdash=={job_version}"
    assert {"confluent-kafka", "cryptography", "grafana-foundation-sdk"} <= set(requirements)
    assert "pyspark" not in requirements
    names = set(toolbox.namelist())
    assert {"streamdash_toolbox/cli.py", "streamdash_toolbox/simulator.py",
            "streamdash_toolbox/stack/poms/kafka-broker.xml"} <= names
    assert not [n for n in names if n.startswith("streamdash/")]
    entry_points = next(toolbox.read(n).decode() for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "streamdash = streamdash_toolbox.cli:main" in entry_points


def _imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


@pytest.mark.parametrize("folder", ["src/streamdash", "jobs", "notebooks"])
def test_the_job_never_imports_the_toolbox_or_its_requirements(folder):
    """What runs on a Databricks cluster (the job, its entry point, the notebooks) imports only the job wheel,
    its requirements and what the runtime provides."""
    offending = {}
    for path in sorted((REPO / folder).rglob("*.py")):
        top_level = {module.split(".")[0] for module in _imported_modules(path)}
        bad = top_level & {"streamdash_toolbox", "confluent_kafka", "cryptography"}
        if bad:
            offending[str(path.relative_to(REPO))] = sorted(bad)
    assert not offending
