"""What every entry point (the job, the backfill) takes on its command line, and how it logs."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path


def configuration_arguments(parser: argparse.ArgumentParser, default_conf_dir: Path) -> argparse.ArgumentParser:
    """What every entry point takes to load its configuration (`load_settings(args.env, args.conf_dir,
    args.overrides)`)."""
    parser.add_argument("--env", default="local", help="configuration: conf/<env>.toml")
    parser.add_argument("--conf-dir", default=str(default_conf_dir))
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                        help="override one configuration value (repeatable)")
    return parser


def configure_logging(verbose: bool = False) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not verbose:
        logging.getLogger("py4j").setLevel(logging.WARNING)  # otherwise a line per call from the JVM
