"""The `streamdash` command: the local stack and the device simulator."""

from __future__ import annotations

import argparse
import shlex
import sys

from streamdash.errors import StreamdashError


def _stack(args: argparse.Namespace):
    from streamdash.stack import Stack

    return Stack(args.dir)


def cmd_stack_up(args: argparse.Namespace) -> None:
    info = _stack(args).up()
    print(f"stack up in {info['dir']}")
    print(f"  kafka      {info['kafka']['bootstrap_servers']} (PLAINTEXT)")
    print(f"  event hubs {info['kafka']['eventhubs_bootstrap_servers']} (SASL_SSL/PLAIN, CA {info['kafka']['ca_file']})")
    print(f"  influxdb   {info['influxdb']['url']} (bucket {info['influxdb']['bucket']})")
    print("point a shell at it with: eval \"$(streamdash stack env)\"")


def cmd_stack_down(args: argparse.Namespace) -> None:
    stopped = _stack(args).down()
    print(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running")


def cmd_stack_status(args: argparse.Namespace) -> None:
    stack = _stack(args)
    running = stack.running()
    for name, alive in running.items():
        print(f"{name:10} {'running' if alive else 'stopped'}")
    if not all(running.values()):
        sys.exit(3)


def cmd_stack_logs(args: argparse.Namespace) -> None:
    for name, path in _stack(args).log_files().items():
        if args.service in (None, name) and path.exists():
            lines = path.read_text(errors="replace").splitlines()[-args.lines:]
            print(f"==> {path} <==", *lines, sep="\n")


def cmd_stack_env(args: argparse.Namespace) -> None:
    for key, value in _stack(args).env().items():
        print(f"export {key}={shlex.quote(value)}")


def cmd_stack_jars(args: argparse.Namespace) -> None:
    from streamdash.stack import install

    print(",".join(str(jar) for jar in install.spark_kafka_connector_jars(progress=_to_stderr)))


def _to_stderr(message: str) -> None:
    print(message, file=sys.stderr)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="streamdash", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    stack = commands.add_parser("stack", help="the local Kafka + InfluxDB stack on 127.0.0.1")
    stack.add_argument("--dir", help="stack folder (default: $STREAMDASH_STACK_DIR or ~/.cache/streamdash/stack)")
    actions = stack.add_subparsers(dest="action", required=True)
    actions.add_parser("up", help="install what is missing, start everything, wait until healthy").set_defaults(
        func=cmd_stack_up)
    actions.add_parser("down", help="stop every server of the stack").set_defaults(func=cmd_stack_down)
    actions.add_parser("status", help="which servers run (exit 3 if any is stopped)").set_defaults(
        func=cmd_stack_status)
    logs = actions.add_parser("logs", help="the last lines of each server's log")
    logs.add_argument("service", nargs="?", choices=["kafka", "influxdb"])
    logs.add_argument("-n", "--lines", type=int, default=40)
    logs.set_defaults(func=cmd_stack_logs)
    actions.add_parser("env", help="shell exports that point the pipeline at the stack (includes secrets)"
                       ).set_defaults(func=cmd_stack_env)
    actions.add_parser("jars", help="comma-separated Spark Kafka connector jars for spark-submit --jars"
                       ).set_defaults(func=cmd_stack_jars)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except StreamdashError as err:
        print(f"streamdash: error: {err}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)
