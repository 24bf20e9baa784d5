#!/usr/bin/env python3
"""A real one-machine Slurm cluster for the tests of slurm/sweep.sh and slurm/array.sh.

    sudo python3 slurm/testbed.py up       # install slurm-wlm + munge (apt, once), start the daemons
    sudo python3 slurm/testbed.py down     # cancel jobs, stop the daemons that `up` started
    python3 slurm/testbed.py status

`up` starts munged (as the munge user, on a socket of its own), slurmctld and slurmd for this
host, with one partition `cpu` holding every CPU, and waits until the node is idle.  Its
slurm.conf is its own (``$M3FMARL_SLURM_DIR/slurm.conf``; nothing under /etc/slurm is written):
Slurm's commands use it when ``SLURM_CONF`` names it, as `up` prints and the tests arrange.  A
second `up` while the daemons answer does nothing.  Debian/Ubuntu, root.  Exit status 3 =
"cannot run on this machine" (not root, no apt, Slurm's ports taken by another Slurm): the tests
skip then; 1 = it should have worked and did not (the tests fail).

Settings differ from a production cluster only where a test would wait for nothing:
``cred_expire=10`` (Slurm holds a requeued job for cred_expire + 1 s; 121 s by default).
State, logs and PID files live in ``$M3FMARL_SLURM_DIR`` (default /tmp/m3fmarl-slurm).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

STATE = Path(os.environ.get("M3FMARL_SLURM_DIR", "/tmp/m3fmarl-slurm"))
CONF = STATE / "slurm.conf"
MUNGE_KEY = Path("/etc/munge/munge.key")
OURS = "# m3fmarl slurm testbed"
PACKAGES = ("slurm-wlm", "munge")
BINARIES = ("/usr/sbin/slurmctld", "/usr/sbin/slurmd", "/usr/sbin/munged", "/usr/bin/sbatch", "/usr/bin/srun")
PORTS = (6817, 6818)
CANNOT = 3


class CannotRun(Exception):
    """This machine cannot host the testbed (the tests skip)."""


def log(msg: str) -> None:
    print(f"slurm-testbed: {msg}", file=sys.stderr, flush=True)


def run(*cmd: str, check: bool = True, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=check, capture_output=True, text=True, **kw)


def answers(conf: Path | None = CONF) -> bool:
    """The slurmctld of ``conf`` (None: Slurm's default configuration) answers and its node is
    usable."""
    if shutil.which("sinfo") is None or (conf is not None and not conf.exists()):
        return False
    env = {k: v for k, v in os.environ.items() if k != "SLURM_CONF"}
    if conf is not None:
        env["SLURM_CONF"] = str(conf)
    try:
        out = run("sinfo", "-h", "-N", "-o", "%T", check=False, timeout=15, env=env)
    except subprocess.TimeoutExpired:
        return False
    states = out.stdout.split()
    return out.returncode == 0 and any(s.rstrip("*") in ("idle", "mixed", "allocated", "completing") for s in states)


def install() -> None:
    if all(Path(b).exists() for b in BINARIES):
        return
    if shutil.which("apt-get") is None:
        raise CannotRun("Slurm is not installed and apt-get is not available")
    log("installing slurm-wlm and munge with apt-get (once)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    guard = Path("/usr/sbin/policy-rc.d")  # keeps the packages from starting daemons themselves
    own_guard = not guard.exists()
    if own_guard:
        guard.write_text("#!/bin/sh\nexit 101\n")
        guard.chmod(0o755)
    try:
        for cmd in (["apt-get", "update", "-qq"],
                    ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *PACKAGES]):
            r = subprocess.run(cmd, capture_output=True, text=True, env=env)
            if r.returncode != 0:
                raise CannotRun(f"{' '.join(cmd)} failed: {(r.stderr or r.stdout).strip().splitlines()[-1:]}")
    finally:
        if own_guard:
            guard.unlink(missing_ok=True)


def write_conf(host: str) -> None:
    cpus = os.cpu_count() or 1
    mem_mb = int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**20)
    mem_mb -= max(256, mem_mb // 20)
    socket_path = STATE / "munge" / "socket"
    lines = [
        f"{OURS} (rewritten by `slurm/testbed.py up`)",
        "ClusterName=m3fmarl-testbed",
        f"SlurmctldHost={host}(127.0.0.1)",
        "SlurmUser=root",
        "AuthType=auth/munge",
        "CredType=cred/munge",
        f"AuthInfo=socket={socket_path},cred_expire=10",
        "ProctrackType=proctrack/linuxproc",
        "TaskPlugin=task/none",
        "MpiDefault=none",
        "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_Core",
        "SchedulerType=sched/backfill",
        "AccountingStorageType=accounting_storage/none",
        "JobAcctGatherType=jobacct_gather/none",
        "JobCompType=jobcomp/none",
        "ReturnToService=2",
        "EnforcePartLimits=ALL",
        "KillWait=5",
        "MailProg=/bin/true",
        f"StateSaveLocation={STATE}/ctld",
        f"SlurmdSpoolDir={STATE}/slurmd",
        f"SlurmctldPidFile={STATE}/slurmctld.pid",
        f"SlurmdPidFile={STATE}/slurmd.pid",
        f"SlurmctldLogFile={STATE}/slurmctld.log",
        f"SlurmdLogFile={STATE}/slurmd.log",
        f"NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={mem_mb} State=UNKNOWN",
        f"PartitionName=cpu Nodes={host} Default=YES MaxTime=INFINITE State=UP",
    ]
    CONF.parent.mkdir(parents=True, exist_ok=True)
    tmp = CONF.with_name(CONF.name + ".tmp")
    tmp.write_text("\n".join(lines) + "\n")
    tmp.replace(CONF)


def pid_alive(name: str, binary: str) -> int | None:
    """PID of daemon ``name`` if we started it and that process is still ``binary``."""
    try:
        pid = int((STATE / "pids" / name).read_text())
        exe = os.readlink(f"/proc/{pid}/exe").removesuffix(" (deleted)")
    except (OSError, ValueError):
        return None
    return pid if exe == os.path.realpath(binary) else None


def wait_file(path: Path, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().strip():
            return True
        time.sleep(0.2)
    return False


def start_munged() -> None:
    import pwd

    if not MUNGE_KEY.exists():
        MUNGE_KEY.parent.mkdir(parents=True, exist_ok=True)
        MUNGE_KEY.write_bytes(os.urandom(1024))
    munge = pwd.getpwnam("munge")
    os.chown(MUNGE_KEY, munge.pw_uid, munge.pw_gid)
    MUNGE_KEY.chmod(0o400)
    d = STATE / "munge"
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    os.chown(d, munge.pw_uid, munge.pw_gid)
    d.chmod(0o755)
    run("runuser", "-u", "munge", "--", "/usr/sbin/munged", f"--socket={d}/socket", f"--key-file={MUNGE_KEY}",
        f"--pid-file={d}/pid", f"--log-file={d}/log", f"--seed-file={d}/seed", stdin=subprocess.DEVNULL)
    if not wait_file(d / "pid", 10):
        raise RuntimeError(f"munged wrote no pid file ({d}/log)")
    shutil.copy(d / "pid", STATE / "pids" / "munged")
    cred = run("munge", "-n", "-S", f"{d}/socket")
    run("unmunge", "-S", f"{d}/socket", input=cred.stdout)


def log_tail(name: str, lines: int = 15) -> str:
    try:
        tail = (STATE / f"{name}.log").read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return f"(no {STATE}/{name}.log)"
    return f"last lines of {STATE}/{name}.log:\n  " + "\n  ".join(tail)


def start_slurm(name: str, *args: str) -> None:
    binary = f"/usr/sbin/{name}"
    pid_file = STATE / f"{name}.pid"
    # A daemon killed without a clean shutdown (the machine's processes ending with a session,
    # say) leaves its PID file behind; waiting on that stale file would mistake it for ours.
    pid_file.unlink(missing_ok=True)
    r = run(binary, "-f", str(CONF), *args, check=False, stdin=subprocess.DEVNULL)
    if r.returncode != 0 or not wait_file(pid_file, 15):
        raise RuntimeError(f"{name} did not start: {(r.stderr or r.stdout).strip()[-500:]}\n{log_tail(name)}")
    shutil.copy(pid_file, STATE / "pids" / name)
    time.sleep(0.3)
    if pid_alive(name, binary) is None:
        raise RuntimeError(f"{name} exited at start\n{log_tail(name)}")


DAEMONS = (("slurmd", "/usr/sbin/slurmd"), ("slurmctld", "/usr/sbin/slurmctld"), ("munged", "/usr/sbin/munged"))


def stop_daemons() -> None:
    for name, binary in DAEMONS:
        pid = pid_alive(name, binary)
        if pid is None:
            continue
        os.kill(pid, 15)
        deadline = time.monotonic() + 30
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        if pid_alive(name, binary) is not None:
            os.kill(pid, 9)
        log(f"stopped {name} ({pid})")
        (STATE / "pids" / name).unlink(missing_ok=True)


def up() -> None:
    if answers():
        log(f"up already (SLURM_CONF={CONF})")
        return
    if os.geteuid() != 0:
        raise CannotRun("must run as root (it installs packages and starts daemons)")
    install()
    host = socket.gethostname().split(".")[0]
    stop_daemons()  # leftovers of an earlier, half-finished `up`
    for sub in ("ctld", "slurmd", "pids"):
        shutil.rmtree(STATE / sub, ignore_errors=True)
        (STATE / sub).mkdir(parents=True)
    for port in PORTS:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                raise CannotRun(f"port {port} is in use (another Slurm?)")
    write_conf(host)
    try:
        start_munged()
        start_slurm("slurmctld", "-c")
        start_slurm("slurmd")
        deadline = time.monotonic() + 60
        while not answers():
            if time.monotonic() > deadline:
                raise RuntimeError(f"node {host} not idle after 60 s\n{log_tail('slurmctld')}\n{log_tail('slurmd')}")
            time.sleep(0.5)
    except BaseException:
        stop_daemons()
        raise
    log(f"up: node {host}, partition cpu, {os.cpu_count()} CPUs; use it with SLURM_CONF={CONF}")


def down() -> None:
    if pid_alive("slurmctld", "/usr/sbin/slurmctld") is not None:
        env = {**os.environ, "SLURM_CONF": str(CONF)}
        jobs = run("squeue", "-h", "-o", "%A", check=False, env=env).stdout.split()
        if jobs:
            run("scancel", *jobs, check=False, env=env)
            deadline = time.monotonic() + 30
            while run("squeue", "-h", "-o", "%A", check=False, env=env).stdout.split() and time.monotonic() < deadline:
                time.sleep(0.5)
    stop_daemons()


def main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0] not in ("up", "down", "status"):
        print("usage: slurm/testbed.py up|down|status", file=sys.stderr)
        return 2
    try:
        if argv[0] == "up":
            up()
        elif argv[0] == "down":
            down()
        else:
            ours = {name: pid_alive(name, binary) for name, binary in DAEMONS}
            print(" ".join(f"{n}={p or '-'}" for n, p in ours.items()), "| answers:", answers())
            return 0 if answers() else 1
    except CannotRun as e:
        log(f"cannot run here: {e}")
        return CANNOT
    except (RuntimeError, subprocess.CalledProcessError) as e:
        detail = getattr(e, "stderr", "") or ""
        log(f"failed: {e} {detail.strip()[-500:]}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
