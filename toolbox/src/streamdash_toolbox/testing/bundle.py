"""databricks.yml as the Databricks CLI resolves it for one target: `include` files merged, the target's
overrides applied, `${var.*}` and `${bundle.*}` substituted. It implements the part of the CLI's
interpolation this bundle uses, so tests can check the bundle and run the job with its exact parameters.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from streamdash_toolbox.testing import REPO

# What `databricks bundle deploy -t dev` needs beyond the defaults: the variables without one.
REQUIRED = {"eventhubs_namespace": "contoso-iot", "influxdb_url": "https://influx.example.com:8086",
            "notification_email": "oncall@example.com"}
REFERENCE = re.compile(r"\$\{([A-Za-z][\w-]*(?:\.[\w-]+)+)\}")
TOP_LEVEL_KEYS = {"bundle", "include", "artifacts", "variables", "targets", "resources", "workspace", "run_as",
                  "permissions", "presets", "sync", "experimental", "python"}


class BundleError(Exception):
    pass


@dataclass
class Bundle:
    config: dict[str, Any]
    job_files: dict[str, Path]  # job key -> the file that defines it (paths in it are relative to that file)

    def job(self, key: str) -> dict[str, Any]:
        return self.config["resources"]["jobs"][key]

    def task(self, job_key: str, task_key: str) -> dict[str, Any]:
        return next(task for task in self.job(job_key)["tasks"] if task["task_key"] == task_key)

    def path(self, job_key: str, relative: str) -> Path:
        return (self.job_files[job_key].parent / relative).resolve()


def read(root: Path = REPO, extra_includes: tuple[str, ...] = ()) -> tuple[dict, dict[str, Path]]:
    config = yaml.safe_load((root / "databricks.yml").read_text())
    unknown = set(config) - TOP_LEVEL_KEYS
    if unknown:
        raise BundleError(f"databricks.yml: unknown top-level keys {sorted(unknown)}")
    job_files = {key: root / "databricks.yml" for key in config.get("resources", {}).get("jobs", {})}
    for pattern in [*config.get("include", []), *extra_includes]:
        matched = sorted(root.glob(pattern))
        if not matched:
            raise BundleError(f"include {pattern!r} matches no file")
        for path in matched:
            part = yaml.safe_load(path.read_text())
            if set(part) - {"resources", "variables", "targets"}:
                raise BundleError(f"{path}: only resources, variables and targets belong in an included file")
            for key in part.get("resources", {}).get("jobs", {}):
                if key in job_files:
                    raise BundleError(f"job {key!r} is defined twice ({job_files[key]} and {path})")
                job_files[key] = path
            _merge(config, part)
    return config, job_files


def resolve(target: str, variables: dict[str, Any] | None = None, root: Path = REPO,
            extra_includes: tuple[str, ...] = ()) -> Bundle:
    """The bundle for `target`, with `variables` given as `databricks bundle deploy --var name=value` would."""
    config, job_files = read(root, extra_includes)
    targets = config.pop("targets")
    if target not in targets:
        raise BundleError(f"no target {target!r} (known: {sorted(targets)})")
    overrides = copy.deepcopy(targets[target] or {})
    target_values = overrides.pop("variables", {})
    _merge(config, overrides)
    config["bundle"]["target"] = target
    values = {}
    for name, declared in config.get("variables", {}).items():
        if name in (variables or {}):
            values[name] = variables[name]
        elif name in target_values:
            values[name] = target_values[name]
        elif "default" in declared:
            values[name] = declared["default"]
        else:
            raise BundleError(f'no value assigned to required variable "{name}"')
    undeclared = set(variables or {}) - set(values)
    if undeclared:
        raise BundleError(f"variables {sorted(undeclared)} are not declared in databricks.yml")
    context = {"var": values, "bundle": config["bundle"]}
    config = _substitute(config, context)
    return Bundle(config, job_files)


def references(value: Any) -> set[str]:
    """Every `${...}` reference in a (nested) configuration value."""
    if isinstance(value, dict):
        return set().union(*(references(item) for item in value.values())) if value else set()
    if isinstance(value, list):
        return set().union(*(references(item) for item in value)) if value else set()
    return set(REFERENCE.findall(value)) if isinstance(value, str) else set()


def _merge(base: dict, override: dict) -> None:
    """Deep merge as the CLI merges target overrides: maps merge, job tasks merge by task_key, lists replace."""
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        elif key == "tasks" and isinstance(base.get(key), list):
            existing = {task["task_key"]: task for task in base[key]}
            for task in value:
                if task["task_key"] in existing:
                    _merge(existing[task["task_key"]], task)
                else:
                    base[key].append(task)
        else:
            base[key] = copy.deepcopy(value)


def _substitute(value: Any, context: dict[str, dict]) -> Any:
    if isinstance(value, dict):
        return {key: _substitute(item, context) for key, item in value.items()}
    if isinstance(value, list):
        return [_substitute(item, context) for item in value]
    if not isinstance(value, str):
        return value
    for _ in range(10):  # a variable's value may itself refer to ${bundle.target} and the like
        whole = REFERENCE.fullmatch(value)
        if whole:  # a value that is one reference keeps the referenced type (numbers stay numbers)
            found = _lookup(whole.group(1), context)
            if found is None:
                return value
            if not isinstance(found, str):
                return found
            value = found
            continue
        replaced = REFERENCE.sub(lambda m: str(_lookup(m.group(1), context) or m.group(0)), value)
        if replaced == value:
            return value
        value = replaced
    raise BundleError(f"references do not settle in {value!r}")


def _lookup(path: str, context: dict[str, dict]) -> Any:
    head, *rest = path.split(".")
    if head not in context:
        return None  # resolved by the CLI at deploy time (workspace.*, resources.*)
    found: Any = context[head]
    for part in rest:
        if not isinstance(found, dict) or part not in found:
            raise BundleError(f"${{{path}}} refers to nothing")
        found = found[part]
    return found
