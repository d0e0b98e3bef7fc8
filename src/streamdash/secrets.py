"""Secrets from a Databricks secret scope, or from the environment outside Databricks.

`{{secrets/<scope>/<key>}}` in a configuration value resolves, in order, to
1. the environment variable `STREAMDASH_SECRET_<SCOPE>_<KEY>` (upper case, other characters as `_`), so
   local runs and notebooks outside Databricks need no workspace;
2. `WorkspaceClient().dbutils.secrets.get(scope, key)` (databricks-sdk; inside Databricks it uses the
   runtime's own credentials).
The value itself never appears in a message.
"""

from __future__ import annotations

import os
import re

from streamdash.errors import ConfigError


def secret_env_name(scope: str, key: str) -> str:
    return re.sub(r"[^A-Z0-9]", "_", f"STREAMDASH_SECRET_{scope}_{key}".upper())


def get_secret(scope: str, key: str, where: str = "secret") -> str:
    env_name = secret_env_name(scope, key)
    if env_name in os.environ:
        return os.environ[env_name]
    try:
        from databricks.sdk import WorkspaceClient

        return WorkspaceClient().dbutils.secrets.get(scope, key)
    except Exception as err:  # noqa: BLE001 - any failure means the secret is unavailable here
        raise ConfigError(
            f"{where}: secret {scope}/{key} is unavailable ({type(err).__name__}); outside Databricks set "
            f"the environment variable {env_name}"
        ) from None
