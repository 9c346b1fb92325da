"""Find the ``dvc`` process that runs the current stage, through Linux ``/proc``. No mlflow here.

DVC sets ``DVC_STAGE`` in the environment of every stage command and runs the command through a shell, so
a stage's ancestors look like ``proxy3d <stage>`` -> ``/bin/sh -c ...`` -> ``dvc repro``. Walking parent
pids up to that ``dvc`` process identifies one dvc execution by a key
``<host>:<boot id>:<pid>:<start ticks>``: the boot id and the start time (clock ticks after boot) make a
reused pid, or the same pid after a reboot, a different key. :mod:`proxy3d.tracking` uses the key to give
each ``dvc repro`` / ``dvc exp run`` exactly one MLflow parent run, and :func:`dvc_alive` to tell parents
of dvc processes that died.
"""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path

log = logging.getLogger(__name__)

DVC_STAGE_ENV = "DVC_STAGE"  # set by DVC in the environment of every stage command
MAX_ANCESTORS = 64  # parent pids walked before giving up


def proc_info(pid: int) -> tuple[int, str, list[str]] | None:
    """``(parent pid, start time in clock ticks after boot, argv)`` of a Linux process, read from
    ``/proc/<pid>/stat`` and ``/proc/<pid>/cmdline``; None if the process is gone or unreadable (no /proc)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")[:-1]
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()  # "pid (comm) state ppid ...": comm may hold spaces
    return int(fields[1]), fields[19], argv  # ppid is field 4, starttime field 22 of proc(5)


def dvc_args(argv: list[str]) -> list[str] | None:
    """The arguments after ``dvc`` when ``argv`` runs DVC (``dvc repro``, ``python .venv/bin/dvc exp run``,
    ``python -m dvc repro``), else None (also for the shell ``/bin/sh -c "dvc repro"``: its child is dvc)."""
    for i, arg in enumerate(argv[:3]):
        if Path(arg).name == "dvc" and (i < 2 or argv[i - 1] == "-m"):
            return argv[i + 1:]
    return None


def host_boot() -> str:
    """``<hostname>:<first 8 characters of the kernel boot id>`` (boot id ``0`` when unreadable)."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()[:8]
    except OSError:
        boot = "0"
    return f"{socket.gethostname()}:{boot}"


def dvc_invocation() -> tuple[str, str] | None:
    """``(key, command)`` of the ``dvc`` process running this stage, or None when DVC does not run it.

    ``key`` = ``<host>:<boot id>:<pid>:<start ticks>`` names one dvc execution (a second ``dvc repro``, even
    reusing the pid, gets another key); ``command`` is e.g. ``dvc exp run -S proxies.budget=450``.
    Logs a warning when ``DVC_STAGE`` is set but no dvc ancestor is found (e.g. the variable leaked).
    """
    if not os.environ.get(DVC_STAGE_ENV):
        return None
    pid = os.getppid()
    for _ in range(MAX_ANCESTORS):  # stage -> /bin/sh -c (DVC runs commands through a shell) -> dvc
        info = proc_info(pid)
        if info is None:
            break
        ppid, start, argv = info
        args = dvc_args(argv)
        if args is not None:
            return f"{host_boot()}:{pid}:{start}", " ".join(["dvc", *args])
        if ppid <= 1:
            break
        pid = ppid
    log.warning("%s is set but no dvc process was found among this process's parents (no /proc?); the run "
                "of stage %s is not nested under a pipeline run", DVC_STAGE_ENV, os.environ[DVC_STAGE_ENV])
    return None


def dvc_alive(key: str) -> bool:
    """False when ``key`` (from :func:`dvc_invocation`) names a dvc execution on this host and boot that has
    ended: its pid is gone or now belongs to a process with another start time. Keys of other hosts or
    boots, and malformed keys, count as alive (not ours to judge)."""
    host_boot_, pid, start = (key.rsplit(":", 2) + ["", ""])[:3]
    if host_boot_ != host_boot() or not pid.isdigit():
        return True
    info = proc_info(int(pid))
    return info is not None and info[1] == start
