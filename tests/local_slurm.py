"""A one-node SLURM cluster on this machine, for running the real train.sbatch under sbatch/srun.

munged, slurmctld and slurmd are started by hand in a temp folder with their own key, socket, ports,
state and logs (nothing under /etc is read or changed), as root, with no cgroups and no GPUs. Each
daemon runs in the foreground under `timeout`, so even a test process killed hard leaves nothing
running for long; a clean exit stops them by pid. `make slurm` installs Debian's slurm-wlm.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path

from helpers import free_port

NEEDED = ("sbatch", "srun", "scontrol", "sinfo", "slurmctld", "slurmd", "munged")
DAEMON_LIFETIME_S = 900  # `timeout` ends a daemon after this even if nobody stops it
READY_S = 60


def check_installed() -> None:
    """Raise with the fix when SLURM or root is missing (the Makefile's `slurm` target installs it)."""
    missing = [name for name in NEEDED if shutil.which(name) is None]
    if missing:
        raise RuntimeError(f"SLURM is not installed ({', '.join(missing)} missing) -- run `make slurm` "
                           "(apt-get install slurm-wlm)")
    if os.geteuid() != 0:
        raise RuntimeError("slurmd must run as root to start jobs -- run this test as root")


def _config(folder: Path, node: str, cpus: int) -> str:
    return "\n".join([
        "ClusterName=kantele-test",
        f"SlurmctldHost={node}",
        f"SlurmctldPort={free_port()}",
        f"SlurmdPort={free_port()}",
        "SlurmUser=root",
        "SlurmdUser=root",
        "AuthType=auth/munge",
        "CredType=cred/munge",
        f"AuthInfo=socket={folder}/run/munge.socket",
        f"StateSaveLocation={folder}/state",
        f"SlurmdSpoolDir={folder}/spool",
        f"SlurmctldPidFile={folder}/run/slurmctld.pid",
        f"SlurmdPidFile={folder}/run/slurmd.pid",
        f"SlurmctldLogFile={folder}/log/slurmctld.log",
        f"SlurmdLogFile={folder}/log/slurmd.log",
        "ProctrackType=proctrack/linuxproc",  # no cgroup setup needed (containers rarely allow it)
        "TaskPlugin=task/none",
        "JobAcctGatherType=jobacct_gather/none",
        "AccountingStorageType=accounting_storage/none",
        "SchedulerType=sched/backfill",
        "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_Core",
        "ReturnToService=2",
        "MpiDefault=none",
        f"NodeName={node} CPUs={cpus} State=UNKNOWN",
        "PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP",
        "",
    ])


def _start(command: list[str], log: Path, env: dict) -> subprocess.Popen:
    with open(log, "ab") as out:
        return subprocess.Popen(["timeout", str(DAEMON_LIFETIME_S), *command], stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)


def _wait_for_idle_node(env: dict, folder: Path, daemons: list) -> None:
    deadline = time.monotonic() + READY_S
    while time.monotonic() < deadline:
        state = subprocess.run(["sinfo", "-h", "-o", "%t"], env=env, capture_output=True, text=True).stdout.strip()
        if state == "idle":
            return
        if any(d.poll() is not None for d in daemons):
            break
        time.sleep(0.5)
    logs = "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-1500:]}" for p in sorted((folder / "log").glob("*")))
    raise RuntimeError(f"the local SLURM node never became idle:\n{logs}")


@contextmanager
def local_slurm(folder: Path, cpus: int = 2):
    """Start a one-node cluster in `folder`; yields the variables (SLURM_CONF) sbatch and friends need added."""
    check_installed()
    for name in ("run", "state", "spool", "log"):
        (folder / name).mkdir(parents=True, exist_ok=True)
    (folder / "run").chmod(0o755)  # munged wants its socket folder searchable by everyone
    key = folder / "munge.key"
    key.write_bytes(os.urandom(128))  # any random key: only these daemons and clients share it
    key.chmod(0o600)
    node = socket.gethostname().split(".")[0]
    (folder / "slurm.conf").write_text(_config(folder, node, cpus))
    added = {"SLURM_CONF": str(folder / "slurm.conf")}
    env = {**os.environ, **added}
    log = folder / "log" / "daemons.out"
    daemons = [_start(["munged", "--foreground", "--force", f"--socket={folder}/run/munge.socket",
                       f"--key-file={key}", f"--log-file={folder}/log/munged.log",
                       f"--pid-file={folder}/run/munged.pid", f"--seed-file={folder}/run/munged.seed"], log, env)]
    try:
        deadline = time.monotonic() + READY_S
        while not (folder / "run" / "munge.socket").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        daemons.append(_start(["slurmctld", "-D", "-i"], log, env))  # -i: ignore any state left from before
        daemons.append(_start(["slurmd", "-D"], log, env))
        _wait_for_idle_node(env, folder, daemons)
        yield added
    finally:
        for daemon in reversed(daemons):
            daemon.terminate()
        for daemon in reversed(daemons):
            try:
                daemon.wait(timeout=15)
            except subprocess.TimeoutExpired:
                daemon.kill()
