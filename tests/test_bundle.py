"""The Databricks bundle: each target resolves and validates against Databricks' own job models, every path it
names exists, its parameters load into a valid configuration, and its wheel builds with its own command.

Schema: the Databricks CLI (`databricks bundle schema`) cannot be installed here (the Go module proxy refuses
github.com/databricks/cli), so jobs are validated with `databricks-bundles`, Databricks' Python models
generated from the same schema: unknown fields, bad enum values and wrong types are refused.
"""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
from databricks.bundles.jobs import Job

from streamdash import backfill
from streamdash.config import load_settings
from streamdash.job import parse_args
from streamdash.session import STATIC_SETTINGS
from streamdash_toolbox.testing import REPO, bundle

PROD = {**bundle.REQUIRED, "service_principal": "9f0c2a57-1c1e-4a4e-9d52-1a2b3c4d5e6f"}
TARGETS = {"dev": bundle.REQUIRED, "prod": PROD}
VARIANTS = ("resources/variants/*.yml",)
SECRETS = {"EVENTHUBS_CONNECTION_STRING": "Endpoint=sb://contoso-iot.servicebus.windows.net/;"
           "SharedAccessKeyName=listen;SharedAccessKey=TOPSECRET;EntityPath=telemetry",
           "INFLUXDB_TOKEN": "influx-token-secret"}


@pytest.mark.parametrize("target", TARGETS)
def test_every_job_validates_against_databricks_job_models(target):
    resolved = bundle.resolve(target, TARGETS[target], extra_includes=VARIANTS)
    assert not {ref for ref in bundle.references(resolved.config) if ref.split(".")[0] in ("var", "bundle")}
    for key, job in resolved.config["resources"]["jobs"].items():
        Job.from_dict(job)  # raises on an unknown field, a bad enum value or a wrong type
        for task in job["tasks"]:
            assert task.get("job_cluster_key") in {c["job_cluster_key"] for c in job["job_clusters"]}, (key, task)


def test_job_models_do_refuse_bad_jobs():
    """The validator above can fail: a typo and a wrong enum are refused."""
    job = bundle.resolve("dev", bundle.REQUIRED).job("streamdash_stream")
    with pytest.raises(ValueError, match="Unexpected field"):
        Job.from_dict({**job, "continous": job["continuous"]})
    with pytest.raises(ValueError, match="PauseStatus"):
        Job.from_dict({**job, "continuous": {"pause_status": "RUNNING"}})


def test_dev_runs_continuously_and_prod_runs_as_a_service_principal():
    dev = bundle.resolve("dev", bundle.REQUIRED).config
    assert dev["mode"] == "development" and dev["presets"]["trigger_pause_status"] == "UNPAUSED"
    stream = dev["resources"]["jobs"]["streamdash_stream"]
    assert stream["continuous"] == {"pause_status": "UNPAUSED", "task_retry_mode": "ON_FAILURE"}
    assert stream["email_notifications"]["on_failure"] == ["oncall@example.com"]
    cluster = stream["job_clusters"][0]["new_cluster"]
    assert cluster["spark_version"].startswith("18.") and cluster["spark_version"].endswith("-scala2.13")
    assert cluster["spark_env_vars"]["EVENTHUBS_CONNECTION_STRING"] == (
        "{{secrets/streamdash/eventhubs-connection-string}}")
    prod = bundle.resolve("prod", PROD).config
    assert prod["mode"] == "production"
    assert prod["run_as"] == {"service_principal_name": PROD["service_principal"]}
    assert {p["level"] for p in prod["permissions"]} == {"CAN_MANAGE", "CAN_VIEW"}
    assert prod["workspace"]["root_path"] == "/Workspace/Shared/.bundle/streamdash/prod"
    checkpoints = {t: bundle.resolve(t, TARGETS[t]).task("streamdash_stream", "stream_to_influx")
                   ["spark_python_task"]["parameters"] for t in TARGETS}
    assert "job.checkpoint_location=/Volumes/main/streamdash_dev/state/checkpoints" in checkpoints["dev"]
    assert "job.checkpoint_location=/Volumes/main/streamdash_prod/state/checkpoints" in checkpoints["prod"]


def test_a_required_variable_without_a_value_is_named():
    with pytest.raises(bundle.BundleError, match='required variable "eventhubs_namespace"'):
        bundle.resolve("dev", {k: v for k, v in bundle.REQUIRED.items() if k != "eventhubs_namespace"})


def test_every_variable_is_used_and_every_reference_declared():
    config, _ = bundle.read(extra_includes=VARIANTS)
    declared = set(config["variables"])
    used = {ref.split(".", 1)[1] for ref in bundle.references(config) if ref.startswith("var.")}
    assert used == declared, (declared - used, used - declared)


@pytest.mark.parametrize("target", TARGETS)
def test_every_path_the_bundle_names_exists(target):
    resolved = bundle.resolve(target, TARGETS[target], extra_includes=VARIANTS)
    wheel_dirs = set()
    for artifact in resolved.config["artifacts"].values():
        assert (REPO / artifact["path"] / "pyproject.toml").is_file()
        build = shlex.split(artifact["build"])
        wheel_dirs.add((REPO / artifact["path"] / build[build.index("--wheel-dir") + 1]).resolve())
    for key, job in resolved.config["resources"]["jobs"].items():
        for task in job["tasks"]:
            if "spark_python_task" in task:
                assert resolved.path(key, task["spark_python_task"]["python_file"]).is_file()
                args = task_args(task)
                assert (REPO / "conf" / f"{args.env}.toml").is_file()
            for library in task.get("libraries", []):
                if "whl" in library:
                    assert resolved.path(key, library["whl"]).parent in wheel_dirs, library


def task_args(task: dict):
    """A spark_python_task's parameters as its entry point parses them, with the job parameters a run would pass."""
    parameters = [value.replace("{{job.parameters.from}}", "2026-12-01T00:00:00Z")
                  .replace("{{job.parameters.to}}", "2026-12-02T00:00:00Z")
                  .replace("{{job.parameters.sinks}}", "gold,influxdb")
                  for value in task["spark_python_task"]["parameters"]]
    if task["spark_python_task"]["python_file"].endswith("backfill.py"):
        return backfill.parse_args(parameters, REPO / "conf")
    return parse_args(parameters, REPO / "conf")


@pytest.mark.parametrize(("target", "job_key", "task_key"), [
    ("dev", "streamdash_stream", "stream_to_influx"), ("prod", "streamdash_stream", "stream_to_influx"),
    ("dev", "streamdash_stream_scala212", "stream_to_influx"), ("prod", "streamdash_backfill", "backfill")])
def test_job_parameters_load_into_a_valid_configuration(monkeypatch, target, job_key, task_key):
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    resolved = bundle.resolve(target, TARGETS[target], extra_includes=VARIANTS)
    args = task_args(resolved.task(job_key, task_key))
    settings = load_settings(args.env, args.conf_dir, args.overrides)
    assert settings.influxdb.url == bundle.REQUIRED["influxdb_url"]
    assert settings.dead_letter.format == "delta"
    assert settings.job.checkpoint_location.startswith(f"/Volumes/main/streamdash_{target}/")
    if settings.source.kind == "kafka":
        assert settings.source.bootstrap_servers == "contoso-iot.servicebus.windows.net:9093"
        assert settings.source.topic == "telemetry" and settings.source.security == "eventhubs"
    assert settings.source.connection_string.get_secret_value() == SECRETS["EVENTHUBS_CONNECTION_STRING"]
    suffix = "_scala212" if job_key.endswith("scala212") else ""  # bronze and gold on in the bundle's targets
    assert settings.lakehouse.bronze == f"main.streamdash_{target}.bronze{suffix}"
    assert settings.lakehouse.gold == f"main.streamdash_{target}.gold{suffix}"


def test_load_test_job_runs_the_simulator_entry_point():
    resolved = bundle.resolve("dev", bundle.REQUIRED)
    task = resolved.task("streamdash_load_test", "simulate")["python_wheel_task"]
    assert task["package_name"] == "streamdash_toolbox" and task["entry_point"] == "streamdash"
    libraries = [library["whl"] for library in resolved.task("streamdash_load_test", "simulate")["libraries"]]
    assert libraries == ["../dist/*.whl", "../toolbox/dist/*.whl"]  # the job wheel the toolbox requires comes first
    from streamdash_toolbox.cli import build_parser

    args = build_parser().parse_args([str(arg) for arg in task["parameters"]])
    assert args.eventhubs and args.bootstrap == "contoso-iot.servicebus.windows.net:9093" and args.rate == 1000


@pytest.mark.parametrize("job_key", ["streamdash_stream", "streamdash_stream_scala212"])
def test_each_stream_cluster_takes_the_job_s_static_spark_settings(job_key):
    """On Databricks the session exists before the job starts, so settings only a new session takes (Spark ignores
    them on an existing one, with a warning) must come with the cluster."""
    job = bundle.resolve("dev", bundle.REQUIRED, extra_includes=VARIANTS).job(job_key)
    spark_conf = job["job_clusters"][0]["new_cluster"]["spark_conf"]
    assert {key: spark_conf.get(key) for key in STATIC_SETTINGS} == STATIC_SETTINGS


def test_variant_targets_a_scala_212_runtime_with_the_native_connector():
    job = bundle.resolve("dev", bundle.REQUIRED, extra_includes=VARIANTS).job("streamdash_stream_scala212")
    assert job["job_clusters"][0]["new_cluster"]["spark_version"].endswith("-scala2.12")
    maven = [lib["maven"]["coordinates"] for lib in job["tasks"][0]["libraries"] if "maven" in lib]
    assert maven == ["com.microsoft.azure:azure-eventhubs-spark_2.12:2.3.22"]


def test_bundle_has_no_unknown_top_level_keys(tmp_path):
    (tmp_path / "databricks.yml").write_text((REPO / "databricks.yml").read_text() + "\nartefacts: {}\n")
    for name in ("resources",):
        (tmp_path / name).symlink_to(REPO / name)
    with pytest.raises(bundle.BundleError, match="artefacts"):
        bundle.read(Path(tmp_path))
