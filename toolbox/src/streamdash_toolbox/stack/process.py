"""Start, find and stop the stack's server processes by pid file, each in its own process group."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from streamdash import lifetime
from streamdash.errors import StackError


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def check_port_free(port: int, service: str) -> None:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            raise StackError(
                f"port {port} on 127.0.0.1 is already in use, so {service} cannot start there. Stop whatever "
                f"listens on it (`ss -ltnp 'sport = :{port}'` shows it) or choose another port."
            ) from None


def read_pid(pid_file: Path) -> int | None:
    """The pid in `pid_file` if that process is still alive and still ours, else None."""
    try:
        pid = int(pid_file.read_text())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ValueError, ProcessLookupError):
        return None
    return pid if str(pid_file.parent.parent).encode() in cmdline else None


def start(argv: list[str], pid_file: Path, log_file: Path, env: dict[str, str] | None = None,
          die_with_parent: bool = False) -> int:
    log_file.parent.mkdir(parents=True, exist_ok=True)
    pid_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("ab") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env={**os.environ, **(env or {})}, start_new_session=True,
                                preexec_fn=lifetime.die_with_parent if die_with_parent else None)
    pid_file.write_text(str(proc.pid))
    return proc.pid


def run_to_log(argv: list[str], log_file: Path, what: str) -> None:
    """Run a short set-up command to completion, its output appended to the service's log."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("ab") as log:
        code = subprocess.run(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL).returncode
    if code != 0:
        raise StackError(f"{what} failed (exit {code}). Last lines of {log_file}:\n{_tail(log_file)}")


def wait_until(healthy: Callable[[], bool], pid_file: Path, log_file: Path, service: str,
               timeout_s: float = 90.0) -> None:
    """Poll `healthy` until it answers True; fail early with the log's tail if the process died."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if healthy():
            return
        if not _alive(int(pid_file.read_text())):  # not read_pid: before exec the cmdline is still ours
            raise StackError(f"{service} exited during start-up. Last lines of {log_file}:\n{_tail(log_file)}")
        time.sleep(0.5)
    raise StackError(f"{service} did not become healthy within {timeout_s:.0f}s. "
                     f"Last lines of {log_file}:\n{_tail(log_file)}")


def stop(pid_file: Path, timeout_s: float = 30.0) -> bool:
    """SIGTERM the process group, then SIGKILL what is left; True if something was running."""
    pid = read_pid(pid_file)
    pid_file.unlink(missing_ok=True)
    if pid is None:
        return False
    for sig, wait_s in ((signal.SIGTERM, timeout_s), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return True
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if not _alive(pid):
                return True
            time.sleep(0.2)
    return True


def _alive(pid: int) -> bool:
    try:
        waited, _ = os.waitpid(pid, os.WNOHANG)  # reap it if it is our own child
        if waited == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "".join(path.read_text(errors="replace").splitlines(keepends=True)[-lines:])
    except FileNotFoundError:
        return "(no log)"


def processes() -> list[tuple[int, int, bytes]]:
    """(pid, parent pid, command line) of every process alive now."""
    found = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            cmdline = (entry / "cmdline").read_bytes()
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] != "Z":
            found.append((int(entry.name), int(fields[1]), cmdline))
    return found


def cpu_seconds(process_group: int) -> float:
    """CPU time (user + system) the live processes of `process_group` have used so far."""
    ticks = 0
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == process_group:
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def job_driver(spark_submit_pid: int, script: str = "stream_to_influx.py") -> int | None:
    """The job's Python driver: the child of spark-submit's JVM that runs `script` (`jobs/stream_to_influx.py`)."""
    return next((pid for pid, ppid, cmdline in processes()
                 if ppid == spark_submit_pid and script.encode() in cmdline), None)
