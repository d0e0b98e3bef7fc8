"""The `streamdash` command: the local stack, the device simulator, notebooks run locally, dashboard checks."""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import sys
import threading
from pathlib import Path

from streamdash.config import Contract, Validation, duration_seconds, read_layers
from streamdash.errors import StreamdashError
from streamdash.events import Reason


def _stack(args: argparse.Namespace):
    from streamdash_toolbox.stack import DEFAULT_PORTS, Stack

    ports = {}
    for item in filter(None, (args.ports or "").split(",")):
        name, _, number = item.partition("=")
        if name.strip() not in DEFAULT_PORTS or not number.strip().isdigit():
            raise StreamdashError(f"--ports takes name=number pairs with names from {sorted(DEFAULT_PORTS)}, "
                                  f"got {item!r}")
        ports[name.strip()] = int(number)
    return Stack(args.dir, ports=ports)


def cmd_stack_up(args: argparse.Namespace) -> None:
    info = _stack(args).up(spark_workers=args.spark_workers)
    print(f"stack up in {info['dir']}")
    print(f"  kafka      {info['kafka']['bootstrap_servers']} (PLAINTEXT)")
    kafka = info["kafka"]
    print(f"  event hubs {kafka['eventhubs_bootstrap_servers']} (SASL_SSL/PLAIN, CA {kafka['ca_file']})")
    print(f"  influxdb   {info['influxdb']['url']} (bucket {info['influxdb']['bucket']})")
    if "spark" in info:
        print(f"  spark      {info['spark']['master_url']} ({info['spark']['workers']} workers, UI "
              f"{info['spark']['ui_url']})")
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


def cmd_stack_topic(args: argparse.Namespace) -> None:
    from streamdash_toolbox.stack import create_topic

    create_topic(_stack(args).info["kafka"]["bootstrap_servers"], args.name, args.partitions,
                 append_time=not args.create_time)
    stamp = "its producers' timestamps (CreateTime)" if args.create_time else "the broker's append time, as Event Hubs"
    print(f"topic {args.name}: {args.partitions} partitions, records stamped with {stamp}")


def cmd_stack_install(args: argparse.Namespace) -> None:
    from streamdash_toolbox.stack import install

    install.install_everything(telegraf=args.telegraf)


def cmd_stack_jars(args: argparse.Namespace) -> None:
    from streamdash_toolbox.stack import install

    print(",".join(str(jar) for jar in install.spark_jars(progress=_to_stderr)))


def spark_submit(script: Path, args: argparse.Namespace, script_args: list[str]) -> None:
    """spark-submit `script` with the stack's jars and Delta Lake, in a session of its own, so that Ctrl-C (SIGINT) or
    SIGTERM reaches only this command, which asks the job's Python driver to finish its batch in flight and stop;
    exits with the job's code."""
    import subprocess

    from streamdash_toolbox.stack.process import job_driver
    from streamdash_toolbox.stack.spark import submit_argv

    if not script.is_file():
        raise StreamdashError(f"run it from the repository's top folder ({script} not found here)")
    argv = submit_argv(script, script_args, args.master, args.driver_memory, progress=_to_stderr)
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable,
           "SPARK_LOCAL_IP": os.environ.get("SPARK_LOCAL_IP", "127.0.0.1")}
    job = subprocess.Popen(argv, env=env, start_new_session=True)

    def stop(signum, frame) -> None:
        """The signal first, the word after: Ctrl-C of `... | tee log` closes the pipe this would print to."""
        driver = job_driver(job.pid)
        if driver is None:  # still starting: there is no batch to finish
            os.killpg(job.pid, signal.SIGTERM)
            return
        os.kill(driver, signal.SIGTERM)
        try:
            print("streamdash: stopping the job after its batch in flight", file=sys.stderr, flush=True)
        except OSError:  # nobody reads it any more: what is left to say goes nowhere, not into an error at exit
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stderr.fileno())

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, stop)
    sys.exit(job.wait())


def _job_args(args: argparse.Namespace) -> list[str]:
    """What follows `--`, or `--env local`."""
    return args.job_args[args.job_args[:1] == ["--"]:] or ["--env", "local"]


def cmd_job(args: argparse.Namespace) -> None:
    spark_submit(Path("jobs/stream_to_influx.py"), args, _job_args(args))


def cmd_backfill(args: argparse.Namespace) -> None:
    spark_submit(Path("jobs/backfill.py"), args, [*_job_args(args), "--from", args.start, "--to", args.end,
                                                  "--sinks", args.sinks])


def fleet_contract(path: Path | None) -> tuple[Contract, Validation]:
    """The `[contract]` and `[validation]` of a job configuration file (defaults without one): the simulator sends
    what a job with that file reads."""
    import tomllib

    from pydantic import ValidationError

    if path is None:
        return Contract(), Validation()
    try:
        raw, _ = read_layers(path.parent, path.stem)  # with what it `extends`
        return (Contract.model_validate(raw.get("contract", {})),
                Validation.model_validate(raw.get("validation", {})))
    except (OSError, tomllib.TOMLDecodeError, ValidationError) as err:
        raise StreamdashError(f"simulate: {path}: {str(err).splitlines()[0]}") from None


def cmd_simulate(args: argparse.Namespace) -> None:
    import json

    from streamdash_toolbox.kafka_client import client_config
    from streamdash_toolbox.simulator import SimulatorSettings, send

    connection_string = None
    if args.eventhubs:
        connection_string = os.environ.get("EVENTHUBS_CONNECTION_STRING")
        if not connection_string:
            raise StreamdashError("--eventhubs needs the namespace's connection string in EVENTHUBS_CONNECTION_STRING")
    bootstrap = args.bootstrap or os.environ.get(
        "STREAMDASH_EVENTHUBS_BOOTSTRAP" if args.eventhubs else "STREAMDASH_KAFKA_BOOTSTRAP", "127.0.0.1:9092")
    contract, validation = fleet_contract(Path(args.conf) if args.conf else None)
    settings = SimulatorSettings(
        contract=contract, mixed_fleet=args.mixed_fleet,
        ahead_tolerance_s=duration_seconds(validation.max_event_time_ahead),
        devices=args.devices, sites=args.sites, rate=args.rate, duration_s=args.duration, seed=args.seed,
        start_time_ms=args.start_time_ms, realtime=not args.fast, late_within_rate=args.late_within_rate,
        late_beyond_rate=args.late_beyond_rate, out_of_order_rate=args.out_of_order_rate,
        duplicate_rate=args.duplicate_rate, malformed_rate=args.malformed_rate, watermark_s=args.watermark_s,
        malformed_reasons=tuple(args.malformed_reasons.split(",")), first_seq=args.first_seq,
        late_beyond_after_s=args.late_beyond_after_s,
        max_window_s=args.max_window_s, amqp_headers=not args.plain_headers)
    try:
        settings.validate()
    except ValueError as err:
        raise StreamdashError(f"simulate: {err}") from None
    try:
        config = client_config(bootstrap, connection_string, args.ca_file or os.environ.get("STREAMDASH_KAFKA_CA_FILE"),
                               args.compression)
    except ValueError as err:
        raise StreamdashError(f"simulate: {err}") from None
    stopping = threading.Event()  # Ctrl-C and SIGTERM stop the sending between two records: nothing sent goes
    for sig in (signal.SIGINT, signal.SIGTERM):  # unrecorded (an exception could land inside a delivery callback)
        signal.signal(sig, lambda *_: stopping.set())
    summary = send(settings, config, args.topic, Path(args.manifest) if args.manifest else None, stop=stopping)
    if args.summary:
        Path(args.summary).write_text(json.dumps(summary, indent=2))
    if summary["failed"] or summary["undelivered"]:
        raise StreamdashError(f"{summary['failed'] + summary['undelivered']} records were not delivered; "
                              f"first error: {summary['first_error']}")


def cmd_notebook(args: argparse.Namespace) -> None:
    from streamdash_toolbox import notebook_runtime

    widgets = {"env": "local"}  # run here, a notebook reads the local stack (its own default, dev, is Databricks')
    for pair in args.widget:
        name, sep, value = pair.partition("=")
        if not sep:
            raise StreamdashError(f"--widget takes name=value, got {name!r}")
        widgets[name] = value
    notebook_runtime.run(Path(args.path), widgets)


def cmd_query(args: argparse.Namespace) -> None:
    """One InfluxQL statement against InfluxDB; its rows as a table (time in UTC)."""
    import datetime as dt

    from streamdash import influxql

    token = os.environ.get("INFLUXDB_TOKEN")
    if not token:
        raise StreamdashError("set INFLUXDB_TOKEN (1.8: user:password; 2.x: an API token) to query InfluxDB")
    rows = influxql.rows(influxql.query(args.influxdb_url, args.statement, token, args.database))
    columns = sorted(dict.fromkeys(key for row in rows for key in row), key=lambda column: column != "time")
    print("  ".join(columns))
    for row in rows:
        values = [dt.datetime.fromtimestamp(row[c] / 1e9, dt.UTC).isoformat(timespec="milliseconds")
                  if c == "time" and isinstance(row.get(c), int) else row.get(c) for c in columns]
        print("  ".join("" if value is None else str(value) for value in values))
    if not rows:
        print("(no rows)", file=sys.stderr)


def cmd_dashboards_check(args: argparse.Namespace) -> None:
    from streamdash.config import GrafanaLiveSink
    from streamdash.sinks.grafana_live import live_channel
    from streamdash_toolbox import dashboards

    token = os.environ.get("INFLUXDB_TOKEN")
    if not token:
        raise StreamdashError("set INFLUXDB_TOKEN (1.8: user:password; 2.x: an API token) to query InfluxDB")
    query = dashboards.influx_query(args.influxdb_url, token, args.database)
    window = dashboards.Window(minutes=args.minutes)
    folder = Path(args.dir)
    channels = [live_channel(args.live_stream_id, measurement)
                for measurement in GrafanaLiveSink.model_fields["measurements"].default]
    boards = sorted((folder / "grafana").glob("*.json"))
    model = [f"{path.name}: {problem}" for path in boards
             for problem in dashboards.model_problems(dashboards.load(path))]
    for problem in model:
        print(f"Grafana's model: {problem}")
    checks = [check for path in boards for check in dashboards.check_grafana(path, query, window, channels)]
    if (folder / "chronograf" / "fleet_overview.json").is_file():
        checks += dashboards.check_chronograf(folder / "chronograf" / "fleet_overview.json", query, window,
                                              args.database)
    for check in checks:
        status = check.problem or ("no values" if not check.ok else f"skipped: {check.skipped}" if check.skipped
                                   else "ok")
        print(f"{check.dashboard[:34]:34}  {check.panel[:52]:52}  {check.ref_id:2}  {check.values:6}  {status}")
    rules = []
    for path in sorted((folder / "grafana" / "provisioning" / "alerting").glob("*.yml")):
        try:
            rules += [(rule, dashboards.evaluate_rule(rule, query, window.now_ms))
                      for rule in dashboards.load_alert_rules(path)]
        except ValueError as err:
            model.append(str(err))
            print(f"Grafana's model: {err}")
    for rule, result in rules:
        status = result.problem or (f"{sum(result.firing.values())} of {len(result.firing)} series firing"
                                    if result.reduced else f"no data (noDataState {rule['noDataState']})")
        print(f"alert rule: {rule['title'][:60]:60}  {status}")
    failed = [check for check in checks if not check.ok]
    if failed or model or any(result.problem for _, result in rules):
        raise StreamdashError(f"{len(failed)} of {len(checks)} panel queries returned no data or failed, "
                              f"{len(model)} departures from Grafana's model, "
                              f"{sum(1 for _, r in rules if r.problem)} alert rules failed")
    print(f"all {len(checks)} panel queries returned data (or were skipped); every dashboard fits Grafana's model; "
          f"{len(rules)} alert rules evaluated")


def _to_stderr(message: str) -> None:
    print(message, file=sys.stderr)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="streamdash", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    stack = commands.add_parser("stack", help="the local Kafka + InfluxDB stack on 127.0.0.1")
    stack.add_argument("--dir", help="stack folder (default: $STREAMDASH_STACK_DIR, else $STREAMDASH_HOME/stack; "
                       "STREAMDASH_HOME defaults to ~/.cache/streamdash)")
    stack.add_argument("--ports", default=os.environ.get("STREAMDASH_STACK_PORTS"),
                       help="name=port pairs, 0 for a free port, e.g. kafka=19092,influxdb=0 "
                            "(default: $STREAMDASH_STACK_PORTS, else 9092/9093/9094 and 8086/8088)")
    actions = stack.add_subparsers(dest="action", required=True)
    install = actions.add_parser("install", help="install (once, cached) every server and jar the stack uses")
    install.add_argument("--telegraf", action="store_true", help="also Telegraf, for python -m benchmarks.side_by_side")
    install.set_defaults(func=cmd_stack_install)
    up = actions.add_parser("up", help="install what is missing, start everything, wait until healthy")
    up.add_argument("--spark-workers", type=int, default=0, metavar="N",
                    help="also start a Spark standalone cluster: a master and N workers (1 core each)")
    up.set_defaults(func=cmd_stack_up)
    actions.add_parser("down", help="stop every server of the stack").set_defaults(func=cmd_stack_down)
    actions.add_parser("status", help="which servers run (exit 3 if any is stopped)").set_defaults(
        func=cmd_stack_status)
    logs = actions.add_parser("logs", help="the last lines of each server's log")
    logs.add_argument("service", nargs="?", help="kafka, influxdb, spark_master, spark_worker_<n> (default: all)")
    logs.add_argument("-n", "--lines", type=int, default=40)
    logs.set_defaults(func=cmd_stack_logs)
    actions.add_parser("env", help="shell exports that point the pipeline at the stack (includes secrets)"
                       ).set_defaults(func=cmd_stack_env)
    actions.add_parser("jars", help="spark-submit --jars: Spark's Kafka connector and Delta Lake"
                       ).set_defaults(func=cmd_stack_jars)
    topic = actions.add_parser("topic", help="create a topic like the stack's own (the broker does not create one "
                               "on first use): 4 partitions, stamped with the append time as an event hub")
    topic.add_argument("name")
    topic.add_argument("--partitions", type=int, default=4)
    topic.add_argument("--create-time", action="store_true",
                       help="keep the producers' timestamps (Kafka's default; the job then judges event times by "
                            "its own clock)")
    topic.set_defaults(func=cmd_stack_topic)
    simulate = commands.add_parser("simulate", help="send simulated device telemetry to Kafka or Event Hubs")
    target = simulate.add_argument_group("target")
    target.add_argument("--bootstrap", help="host:port (default: $STREAMDASH_KAFKA_BOOTSTRAP, or "
                        "$STREAMDASH_EVENTHUBS_BOOTSTRAP with --eventhubs)")
    target.add_argument("--topic", default="telemetry", help="Kafka topic or event hub")
    target.add_argument("--eventhubs", action="store_true",
                        help="SASL_SSL/PLAIN with $EVENTHUBS_CONNECTION_STRING (Event Hubs Kafka endpoint)")
    target.add_argument("--ca-file", help="CA bundle to trust (default: $STREAMDASH_KAFKA_CA_FILE or the system's)")
    target.add_argument("--compression", choices=("none", "gzip", "snappy", "lz4", "zstd"),
                        help="producer compression (default: lz4 on Kafka; none on Event Hubs, whose Standard tier "
                        "refuses compressed requests; Premium and Dedicated take gzip)")
    fleet = simulate.add_argument_group("fleet and rate")
    fleet.add_argument("--devices", type=int, default=20)
    fleet.add_argument("--sites", type=int, default=4)
    fleet.add_argument("--rate", type=float, default=100.0, help="events per second, all devices together")
    fleet.add_argument("--duration", type=float, default=60.0, help="seconds of event time to send")
    fleet.add_argument("--seed", type=int, default=1)
    fleet.add_argument("--start-time-ms", type=int, help="event time of the first event (default: now; the job "
                       "dead-letters events more than validation.max_event_time_behind older than their send time)")
    fleet.add_argument("--first-seq", type=int, default=0, help="continue each device's sequence after this number")
    fleet.add_argument("--conf", help="a job configuration file (conf/<env>.toml): payloads follow its [contract], "
                       "header fields and long records (readings) included (default: the simulator's payload)")
    fleet.add_argument("--mixed-fleet", action="store_true",
                       help="device types with different sensors, sensors null for a spell, devices that go silent, "
                       "and clocks skewed from a second behind to an hour either way (the manifest says which "
                       "events the job must count)")
    fleet.add_argument("--plain-headers", action="store_true",
                       help="send the contract's header fields as a Kafka producer's text (default: AMQP-encoded, as "
                       "Event Hubs delivers IoT Hub's properties)")
    fleet.add_argument("--fast", action="store_true", help="send as fast as possible instead of in real time")
    faults = simulate.add_argument_group("injected faults (shares of all records)")
    for name, default in (("late-within-rate", 0.01), ("late-beyond-rate", 0.005), ("out-of-order-rate", 0.01),
                          ("duplicate-rate", 0.01), ("malformed-rate", 0.01)):
        faults.add_argument(f"--{name}", type=float, default=default)
    faults.add_argument("--late-beyond-after-s", type=float,
                        help="send no event beyond the watermark before this much event time (default: watermark + 15)")
    faults.add_argument("--malformed-reasons", default=",".join(Reason.ALWAYS_CHECKED),
                        help="comma-separated dead-letter reasons the malformed records get (default: all)")
    faults.add_argument("--watermark-s", type=float, default=30.0, help="the job's watermark, to place late events")
    faults.add_argument("--max-window-s", type=float, default=60.0, help="the job's largest window")
    output = simulate.add_argument_group("output")
    output.add_argument("--manifest", help="write every delivered record, with partition and offset (JSON lines)")
    output.add_argument("--summary", help="write the summary as JSON")
    simulate.set_defaults(func=cmd_simulate)
    job = commands.add_parser("job", help="run the streaming job under spark-submit (from the repository's top "
                              "folder); Ctrl-C finishes its batch in flight and stops it")
    backfill = commands.add_parser("backfill", help="recompute the windows of a time range from the bronze table "
                                   "into the gold table (spark-submit, from the repository's top folder)")
    backfill.add_argument("--from", dest="start", required=True, help="first window start, ISO-8601 with offset")
    backfill.add_argument("--to", dest="end", required=True, help="end (exclusive), ISO-8601 with offset")
    backfill.add_argument("--sinks", default="gold", help="gold, influxdb or gold,influxdb (default gold)")
    for submitted, func in ((job, cmd_job), (backfill, cmd_backfill)):
        submitted.add_argument("--master", default="local[2]",
                               help="spark-submit --master (e.g. $STREAMDASH_SPARK_MASTER)")
        submitted.add_argument("--driver-memory", default="2g")
        submitted.add_argument("job_args", nargs=argparse.REMAINDER, metavar="-- JOB ARGS",
                               help="the job's own arguments after -- (default: --env local), e.g. -- --env local "
                               "--set source.topic=t")
        submitted.set_defaults(func=func)
    run_notebook = commands.add_parser("notebook", help="run a notebook from notebooks/ locally, cell by cell "
                                       "(spark, dbutils.widgets/secrets and display provided)")
    run_notebook.add_argument("path")
    run_notebook.add_argument("--widget", action="append", default=[], metavar="NAME=VALUE",
                              help="a widget value, e.g. env=dev (default: env=local) or "
                              "overrides='source.topic=t;...' (repeatable)")
    run_notebook.set_defaults(func=cmd_notebook)
    query = commands.add_parser("query", help="run one InfluxQL statement on InfluxDB and print its rows")
    query.add_argument("statement", help='e.g. "SELECT * FROM telemetry_site WHERE time > now() - 5m"')
    query.add_argument("--influxdb-url", default=os.environ.get("STREAMDASH_INFLUXDB_URL", "http://127.0.0.1:8086"))
    query.add_argument("--database", default="streamdash", help="InfluxQL database (2.x: the DBRP database)")
    query.set_defaults(func=cmd_query)
    check = commands.add_parser("dashboards", help="check every dashboard against Grafana's model, run every panel's "
                                "InfluxQL (macros expanded) on InfluxDB, and evaluate the alert rules")
    check.add_argument("action", choices=["check"])
    check.add_argument("--influxdb-url", default=os.environ.get("STREAMDASH_INFLUXDB_URL", "http://127.0.0.1:8086"))
    check.add_argument("--database", default="streamdash", help="InfluxQL database (2.x: the DBRP database)")
    check.add_argument("--minutes", type=int, default=30, help="the dashboards' time range, back from now")
    check.add_argument("--dir", default="dashboards", help="the folder holding grafana/ and chronograf/")
    check.add_argument("--live-stream-id", default="streamdash", help="grafana_live.stream_id of the job")
    check.set_defaults(func=cmd_dashboards_check)
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


if __name__ == "__main__":
    main()
