"""A one-node SLURM cluster on this machine: a private munged, slurmctld and slurmd.

Debian's `slurm-wlm` and `munge` packages are enough; no systemd and no accounting database
(job status comes from `squeue`, kept visible by a long MinJobAge). The node takes its
CPUs and memory from `slurmd -C`, so it fits whatever machine runs it.

The config goes to /etc/slurm/slurm.conf because job steps started by the Snakemake
jobstep plugin drop SLURM_CONF from their environment; an existing foreign slurm.conf is
never overwritten. The daemons need root: slurmd starts each job as the user who submitted it.

Command line: python tests/slurm/local_cluster.py up|down [--root DIR] [--partition NAME]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

TEMPLATE = Path(__file__).with_name("slurm.conf.in")
SYSTEM_CONF = Path("/etc/slurm/slurm.conf")
MARKER = "# One-node SLURM cluster for the inscl SLURM test"
DAEMONS = ("munged", "slurmctld", "slurmd")
INSTALL_HINT = "apt-get install -y slurm-wlm munge"


class ClusterError(RuntimeError):
    """The cluster could not be brought up; the message says why."""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _system_conf_root() -> Path | None:
    """Root of the cluster that wrote /etc/slurm/slurm.conf, if this script wrote it."""
    if not SYSTEM_CONF.exists():
        return None
    text = SYSTEM_CONF.read_text(errors="replace")
    match = re.search(r"^StateSaveLocation=(.+)/state$", text, flags=re.M)
    return Path(match.group(1)) if MARKER in text and match else None


def _command_name(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return None


def _tail(path: Path, lines: int = 15) -> str:
    if not path.exists():
        return f"({path} does not exist)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


class LocalSlurm:
    def __init__(self, root: str | Path, partition: str = "inscl", min_job_age: int = 86400):
        self.root = Path(root)
        self.partition = partition
        self.min_job_age = min_job_age
        self.munge_socket = self.root / "munge" / "munge.socket"
        self.processes: dict[str, subprocess.Popen] = {}

    # -- bring-up -----------------------------------------------------------------
    def check_prerequisites(self) -> None:
        missing = [tool for tool in (*DAEMONS, "mungekey", "sbatch", "squeue", "scontrol") if not shutil.which(tool)]
        if missing:
            raise ClusterError(f"missing {', '.join(missing)}: install them with `{INSTALL_HINT}`")
        if os.geteuid() != 0:
            raise ClusterError("the SLURM daemons need root (slurmd starts jobs as their user): run the test as root")
        if SYSTEM_CONF.exists() and MARKER not in SYSTEM_CONF.read_text(errors="replace"):
            raise ClusterError(f"{SYSTEM_CONF} belongs to another SLURM installation; not overwriting it")

    def stop_previous(self) -> None:
        """Stop a cluster this script brought up earlier with another root."""
        previous = _system_conf_root()
        if previous is not None and previous != self.root:
            LocalSlurm(previous, partition=self.partition).down()

    def node_line(self) -> tuple[str, str]:
        """(hostname, node definition) as `slurmd -C` detects this machine."""
        out = subprocess.run(["slurmd", "-C"], capture_output=True, text=True)
        first = out.stdout.splitlines()[0] if out.stdout else ""
        if out.returncode != 0 or not first.startswith("NodeName="):
            raise ClusterError(f"`slurmd -C` failed: {out.stderr.strip() or out.stdout.strip()}")
        definition = first.removeprefix("NodeName=")
        return definition.split()[0], definition

    def memory_mb(self) -> int:
        """The node's memory as SLURM sees it (RealMemory of `slurmd -C`)."""
        return int(re.search(r"RealMemory=(\d+)", self.node_line()[1]).group(1))

    def render_conf(self) -> str:
        host, definition = self.node_line()
        values = {
            "@HOST@": host,
            "@NODE_LINE@": definition,
            "@CTLD_PORT@": str(_free_port()),
            "@SLURMD_PORT@": str(_free_port()),
            "@MUNGE_SOCKET@": str(self.munge_socket),
            "@ROOT@": str(self.root),
            "@PARTITION@": self.partition,
            "@MIN_JOB_AGE@": str(self.min_job_age),
        }
        text = TEMPLATE.read_text()
        for key, value in values.items():
            text = text.replace(key, value)
        return text

    def _start(self, name: str, argv: list[str]) -> None:
        with open(self.root / f"{name}.out", "w") as log:
            process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.processes[name] = process
        (self.root / f"{name}.launcher.pid").write_text(str(process.pid))

    def _wait(self, name: str, check, timeout: float, log: Path) -> None:
        """Wait until `check()` holds; fail at once if the daemon `name` exits."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if check():
                return
            if self.processes[name].poll() is not None:
                raise ClusterError(
                    f"{name} exited with status {self.processes[name].returncode}; "
                    f"last lines of {log}:\n{_tail(log)}\n{_tail(self.root / f'{name}.out')}"
                )
            time.sleep(0.5)
        raise ClusterError(f"{name} did not come up within {timeout:.0f} s; last lines of {log}:\n{_tail(log)}")

    def _ok(self, argv: list[str]) -> subprocess.CompletedProcess:
        return subprocess.run(argv, capture_output=True, text=True, timeout=30)

    def up(self, timeout: float = 90) -> None:
        self.check_prerequisites()
        self.stop_previous()
        for sub in ("munge", "state", "spool"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        # munged insists that its socket directory be traversable by all, its key private.
        self.root.chmod(0o755)
        (self.root / "munge").chmod(0o755)
        key = self.root / "munge" / "munge.key"
        if not key.exists():
            subprocess.run(["mungekey", "-c", "-k", str(key)], check=True, capture_output=True)
        munge_dir = self.root / "munge"
        self._start(
            "munged",
            [
                "munged",
                "-F",
                f"--socket={self.munge_socket}",
                f"--key-file={key}",
                f"--log-file={munge_dir / 'munged.log'}",
                f"--pid-file={munge_dir / 'munged.pid'}",
                f"--seed-file={munge_dir / 'munged.seed'}",
            ],
        )
        self._wait(
            "munged",
            lambda: self._ok(["munge", "-n", "-S", str(self.munge_socket)]).returncode == 0,
            timeout,
            munge_dir / "munged.log",
        )
        conf = self.render_conf()
        (self.root / "slurm.conf").write_text(conf)
        SYSTEM_CONF.parent.mkdir(parents=True, exist_ok=True)
        SYSTEM_CONF.write_text(conf)
        self._start("slurmctld", ["slurmctld", "-D", "-i", "-f", str(SYSTEM_CONF)])
        self._wait(
            "slurmctld", lambda: "is UP" in self._ok(["scontrol", "ping"]).stdout, timeout, self.root / "slurmctld.log"
        )
        self._start("slurmd", ["slurmd", "-D", "-f", str(SYSTEM_CONF)])
        self._wait("slurmd", self.node_idle, timeout, self.root / "slurmd.log")

    def node_idle(self) -> bool:
        out = self._ok(["sinfo", "-h", "-N", "-p", self.partition, "-o", "%T"])
        return out.returncode == 0 and out.stdout.strip().startswith("idle")

    # -- tear-down ----------------------------------------------------------------
    def down(self) -> None:
        """Stop the daemons this cluster started (by pid) and remove its slurm.conf."""
        pid_files = {
            "slurmd": self.root / "slurmd.pid",
            "slurmctld": self.root / "slurmctld.pid",
            "munged": self.root / "munge" / "munged.pid",
        }
        for name, pid_file in pid_files.items():
            pids = [p for p in (pid_file, self.root / f"{name}.launcher.pid") if p.exists()]
            for path in pids:
                try:
                    pid = int(path.read_text().split()[0])
                except (ValueError, IndexError):
                    continue
                self._kill(pid)
        if _system_conf_root() == self.root:
            SYSTEM_CONF.unlink()

    def _kill(self, pid: int) -> None:
        own = next((p for p in self.processes.values() if p.pid == pid), None)
        if own is None and _command_name(pid) not in DAEMONS:
            return  # gone, or the pid now belongs to another program
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        if own is not None:
            try:
                own.wait(timeout=15)
            except subprocess.TimeoutExpired:
                own.kill()
                own.wait()
            return
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.2)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["up", "down"])
    parser.add_argument("--root", default="/tmp/inscl-slurm", help="state, logs and sockets")
    parser.add_argument("--partition", default="inscl")
    args = parser.parse_args(argv)
    cluster = LocalSlurm(args.root, partition=args.partition)
    if args.action == "up":
        try:
            cluster.up()
        except ClusterError as error:
            cluster.down()
            print(f"local SLURM: {error}", file=sys.stderr)
            return 1
        print(f"local SLURM up: partition {args.partition}, state in {args.root}")
    else:
        cluster.down()
    return 0


if __name__ == "__main__":
    sys.exit(main())
