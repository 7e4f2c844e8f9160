"""A real one-node SLURM cluster on localhost for the cluster tests: munged, slurmctld and slurmd (Debian's
``slurm-wlm`` and ``munge`` packages) started as root from a generated ``slurm.conf`` in a temporary folder.

:func:`start_cluster` writes a munge key, a ``slurm.conf`` (one node with this machine's CPUs,
``proctrack/linuxproc``, ``task/none``, ``select/cons_tres`` over CPUs, free ports) and starts the three
daemons in the foreground as children of this process, so that each is known by its PID; it returns once
``sinfo`` shows the node idle (bounded wait). :meth:`SlurmCluster.stop` ends exactly those PIDs. A SLURM or
munge daemon already running on the machine is never touched: :func:`refusal` names it and nothing starts.

The client commands (``sbatch``, ``srun``, ``sinfo``, ``scancel``, submitit) find the cluster through
``SLURM_CONF``, which :attr:`SlurmCluster.env` sets. Run as a script it starts a cluster, prints its
``sinfo`` and the ``export`` line, and stops it on Enter.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

DAEMONS = ("munged", "slurmctld", "slurmd", "slurmdbd")
"""Process names that mean a SLURM (or its munge) already runs here: the fixture refuses to start then."""

BINARIES = ("munged", "slurmctld", "slurmd", "sinfo", "sbatch", "srun", "scancel", "scontrol")

STARTUP_S = 60.0
"""How long the node may take to show up idle in ``sinfo``."""


def missing_binaries() -> list[str]:
    """The SLURM / munge programs not on this machine (``apt-get install slurm-wlm munge``)."""
    path = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
    return [name for name in BINARIES if shutil.which(name, path=path) is None]


def refusal() -> str | None:
    """Why the cluster fixture must not start here, or None: not root, or a daemon of :data:`DAEMONS`
    already running (its name and PID)."""
    if os.geteuid() != 0:
        return "the SLURM daemons are started as root (run the cluster tests as root)"
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            name = (entry / "comm").read_text().strip()
        except OSError:  # the process ended meanwhile
            continue
        if name in DAEMONS:
            return f"{name} already runs here (PID {entry.name}); the cluster fixture never touches it"
    return None


@dataclass
class SlurmCluster:
    """A running one-node cluster: its folder, ``slurm.conf``, node name and the daemons it started (their
    PIDs; ``processes``: their handles in the process that started them)."""

    root: Path
    node: str
    cpus: int
    pids: dict[str, int] = field(default_factory=dict)
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def record(self) -> Path:
        """Where another process of the same test session finds this cluster (:meth:`load`)."""
        return self.root / "cluster.json"

    def save(self) -> None:
        self.record.write_text(json.dumps({"node": self.node, "cpus": self.cpus, "pids": self.pids}))

    @classmethod
    def load(cls, root: Path) -> SlurmCluster | None:
        """The cluster another process of this session started under ``root``, if its daemons still run."""
        path = root / "cluster.json"
        if not path.is_file():
            return None
        data = json.loads(path.read_text())
        cluster = cls(root, data["node"], data["cpus"], {k: int(v) for k, v in data["pids"].items()})
        return cluster if all(_alive(pid) for pid in cluster.pids.values()) else None

    @property
    def conf(self) -> Path:
        return self.root / "slurm.conf"

    @property
    def env(self) -> dict[str, str]:
        """This process's environment plus what a client command needs to find the cluster."""
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def run(self, *argv: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """A client command (``sinfo``, ``sbatch``, ...) against this cluster."""
        return subprocess.run(
            argv, env=self.env, capture_output=True, text=True, check=check, timeout=timeout
        )

    def log(self, daemon: str) -> str:
        """The log of ``daemon`` (``munged``, ``slurmctld``, ``slurmd``), for a failure message."""
        path = self.root / "log" / f"{daemon}.log"
        return path.read_text(errors="replace") if path.is_file() else ""

    def stop(self) -> None:
        """Cancel the jobs still there (their steps are the daemons' children), then SIGTERM each daemon this
        cluster started, by PID (slurmd first, munged last), and SIGKILL one still there after 15 s."""
        if self.pids.get("slurmctld") and _alive(self.pids["slurmctld"]):
            self.run("scancel", "--full", "--user=root", check=False)
            deadline = time.monotonic() + 15
            while self.run("squeue", "--noheader", check=False).stdout.strip():
                if time.monotonic() > deadline:
                    break
                time.sleep(0.5)
        for name in ("slurmd", "slurmctld", "munged"):
            pid = self.pids.pop(name, None)
            if pid is None or not _alive(pid):
                continue
            os.kill(pid, signal.SIGTERM)
            if not _gone(pid, self.processes.get(name), 15):
                os.kill(pid, signal.SIGKILL)
                _gone(pid, self.processes.get(name), 15)
        self.record.unlink(missing_ok=True)


def start_cluster(root: Path) -> SlurmCluster:
    """Start munged, slurmctld and slurmd under ``root`` and wait until the node is idle.

    Raises:
        RuntimeError: a daemon exited or the node did not become idle within :data:`STARTUP_S` (the
            daemons' logs are in the message); whatever had started is stopped first.
    """
    why = refusal()
    if why is not None:
        raise RuntimeError(why)
    for folder in ("log", "state", "spool/slurmd", "munge", "run"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    os.chmod(root, 0o755)
    node = socket.gethostname().split(".")[0]
    cluster = SlurmCluster(root, node, os.cpu_count() or 1)
    try:
        _start(cluster)
    except BaseException:
        cluster.stop()
        raise
    return cluster


def _start(cluster: SlurmCluster) -> None:
    root = cluster.root
    key = root / "munge" / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    (root / "munge").chmod(0o700)
    socket_path = root / "munge" / "munge.socket"
    _daemon(cluster,
        "munged",
        "munged", "--foreground", "--force", f"--key-file={key}", f"--socket={socket_path}",
        f"--pid-file={root / 'run' / 'munged.pid'}", f"--seed-file={root / 'munge' / 'munged.seed'}",
        f"--log-file={root / 'log' / 'munged.log'}",
    )  # fmt: skip
    _wait_for(lambda: socket_path.exists(), cluster, "munged's socket")
    ctld_port, node_port = _free_port(), _free_port()
    cluster.conf.write_text(_slurm_conf(cluster, socket_path, ctld_port, node_port))
    conf = str(cluster.conf)
    _daemon(cluster, "slurmctld", "slurmctld", "-D", "-i", "-f", conf)
    _daemon(cluster, "slurmd", "slurmd", "-D", "-f", conf, "-N", cluster.node)
    _wait_for(lambda: _node_state(cluster) == "idle", cluster, f"node {cluster.node} idle in sinfo")
    cluster.save()


def _slurm_conf(cluster: SlurmCluster, munge_socket: Path, ctld_port: int, node_port: int) -> str:
    root, node = cluster.root, cluster.node
    return f"""\
ClusterName=learner-test
SlurmctldHost={node}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={node_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={munge_socket}
StateSaveLocation={root / "state"}
SlurmdSpoolDir={root / "spool" / "slurmd"}
SlurmctldPidFile={root / "run" / "slurmctld.pid"}
SlurmdPidFile={root / "run" / "slurmd.pid"}
SlurmctldLogFile={root / "log" / "slurmctld.log"}
SlurmdLogFile={root / "log" / "slurmd.log"}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
MailProg=/bin/true
ReturnToService=2
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
MinJobAge=300
KillWait=3
Waittime=0
SchedulerParameters=sched_interval=1
NodeName={node} NodeAddr=127.0.0.1 CPUs={cluster.cpus} State=UNKNOWN
PartitionName=debug Nodes={node} Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
"""


def _daemon(cluster: SlurmCluster, name: str, *argv: str) -> None:
    """Start ``argv`` in the foreground (``-D``), its output in ``log/NAME.stdout``; record its PID."""
    with (cluster.root / "log" / f"{name}.stdout").open("wb") as out:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
        process = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
            start_new_session=True,  # a Ctrl-C of the test run reaches pytest, which stops the daemons
        )  # fmt: skip
    cluster.processes[name], cluster.pids[name] = process, process.pid


def _alive(pid: int) -> bool:
    """``pid`` runs (a zombie, ended but not yet reaped by its parent, counts as gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return False
    return fields[0] != "Z"


def _gone(pid: int, process: subprocess.Popen[bytes] | None, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            return True
        if process is None and not _alive(pid):
            return True
        time.sleep(0.1)
    return False


def _node_state(cluster: SlurmCluster) -> str:
    try:
        done = cluster.run("sinfo", "--noheader", "--Node", "--format=%T", check=False, timeout=10)
    except subprocess.TimeoutExpired:
        return ""
    return done.stdout.strip().rstrip("*~#")


def _wait_for(ready: object, cluster: SlurmCluster, what: str) -> None:
    deadline = time.monotonic() + STARTUP_S
    while not ready():  # type: ignore[operator]
        for name, process in cluster.processes.items():
            if process.poll() is not None:
                raise RuntimeError(
                    f"{name} exited ({process.returncode}) while waiting for {what}:\n"
                    + (cluster.root / "log" / f"{name}.stdout").read_text(errors="replace")
                    + cluster.log(name)
                )
        if time.monotonic() > deadline:
            logs = "\n".join(f"--- {n}\n{cluster.log(n)}" for n in ("slurmctld", "slurmd"))
            raise RuntimeError(f"no {what} after {STARTUP_S:g} s\n{logs}")
        time.sleep(0.2)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


if __name__ == "__main__":
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="slurm-"))
    started = time.monotonic()
    running = start_cluster(folder)
    print(f"started in {time.monotonic() - started:.1f} s")
    print(running.run("sinfo").stdout)
    print(f"export SLURM_CONF={running.conf}")
    try:
        input("Enter stops the cluster ")
    finally:
        running.stop()
