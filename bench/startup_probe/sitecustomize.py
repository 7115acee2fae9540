"""Start-up probe of ``bench/bench_dag.py``: when each workflow job starts its work.

``bench_dag.py`` puts this folder first on ``PYTHONPATH`` and names a folder in
``GPTLAB_BENCH_STARTUP``; Python then imports this module (as ``sitecustomize``)
at the start of every process of the benchmarked run. It records nothing except in

- Snakemake's script jobs (``python .snakemake/scripts/tmpXXXX.<script>.py``): the
  process's start, the moment the job opens its log for writing (every workflow
  script does so as its first line of work, right after its imports), its exit, and
  its input and output files (which give the DAG's edges);
- notebook kernels (``ipykernel_launcher``): the process's start and the moment it
  first opens a table (``.csv``/``.json`` under a ``results/`` folder): the report
  notebooks start with their parameters and imports, then read the artifacts, so
  the kernel's start-up and the notebook's imports count as start-up.

Each such process writes ``<pid>.json`` into that folder. The process's start comes
from ``/proc`` (Linux): interpreter start-up counts too. It only watches (an audit
hook) and changes nothing in the job.
"""

import json
import os
import re
import sys
import time

_DIR = os.environ.get("GPTLAB_BENCH_STARTUP")


def _seconds_since_start() -> float:
    """Seconds since this process started, from ``/proc`` (0 where that cannot be read)."""
    try:
        with open(f"/proc/{os.getpid()}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        since = time.clock_gettime(time.CLOCK_BOOTTIME) - int(fields[19]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, AttributeError):
        return 0.0
    return since if 0 <= since < 60 else 0.0


def _kind() -> tuple[str, str] | None:
    """``(kind, script)`` of this process when it is a probed one, else None."""
    try:
        with open(f"/proc/{os.getpid()}/cmdline", "rb") as f:
            argv = f.read().decode(errors="replace").split("\0")
    except OSError:
        argv = sys.argv
    for arg in argv:
        name = os.path.basename(arg)
        if (
            "/.snakemake/scripts/" in arg.replace(os.sep, "/")
            and name.startswith("tmp")
            and name.endswith(".py")
        ):
            return "script", name.split(".", 1)[1].removesuffix(".py")
        if "ipykernel_launcher" in arg:
            return "kernel", ""
    return None


class _Probe:
    def __init__(self, kind: str, script: str) -> None:
        now = time.time()
        self.record = {
            "kind": kind,
            "script": script,
            "rule": None,
            "pid": os.getpid(),
            "ppid": os.getppid(),
            "start": now - _seconds_since_start(),
            "ready": None,
            "first_cell": None,  # kernels: when their first cell (the parameters) runs
            "end": None,
        }

    def write(self) -> None:
        path = os.path.join(_DIR, f"{self.record['pid']}.json")
        with open(path + ".tmp", "w") as f:
            json.dump(self.record, f)
        os.replace(path + ".tmp", path)

    def _is_first_work(self, event: str, args: tuple) -> bool:
        if event != "open" or not isinstance(args[0], (str, os.PathLike)):
            return False
        path = os.fspath(args[0])
        if self.record["kind"] == "kernel":
            return path.endswith((".csv", ".json")) and "results/" in path.replace(os.sep, "/")
        if not isinstance(args[1], str) or "w" not in args[1]:
            return False
        job = getattr(sys.modules.get("__main__"), "snakemake", None)
        if job is None or path not in {str(log) for log in job.log}:
            return False
        self.record["rule"] = job.rule
        return True

    def hook(self, event: str, args: tuple) -> None:
        if event == "exec" and self.record["kind"] == "kernel" and self.record["first_cell"] is None:
            # IPython names a cell's code /tmp/ipykernel_<pid>/<hash>.py (not ipykernel_launcher.py)
            if re.search(r"ipykernel_\d+[/\\]", getattr(args[0], "co_filename", "")):
                self.record["first_cell"] = time.time()
            return
        if self.record["ready"] is not None or event != "open":
            return
        try:
            if self._is_first_work(event, args):
                self.record["ready"] = time.time()
                self.write()
        except Exception:  # never disturb the job
            pass

    def at_exit(self) -> None:
        self.record["end"] = time.time()
        job = getattr(sys.modules.get("__main__"), "snakemake", None)
        if job is not None:  # the job's files link it to the jobs before and after it
            self.record["rule"] = self.record["rule"] or job.rule
            self.record["input"] = [str(f) for f in getattr(job, "input", ())]
            self.record["output"] = [str(f) for f in getattr(job, "output", ())]
        try:
            self.write()
        except OSError:
            pass


def _install() -> None:
    found = _kind() if _DIR else None
    if found is None:
        return
    import atexit

    probe = _Probe(*found)
    sys.addaudithook(probe.hook)
    atexit.register(probe.at_exit)


_install()
