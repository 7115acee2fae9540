"""A short console for workflow runs: a line per finished job, and what the long jobs are doing.

Snakemake prints about seven lines per job (rule, input, output, log, jobid,
reason, resources): some 600 lines for the tiny study, with nothing at all
during a minute of training. This console prints one line per finished job,
and a line per job running for longer than ``show_after`` seconds with the
last progress bar (percent, ETA, losses) of its log: every ``report_every``
seconds at first, less often as the job goes on. Snakemake's full log is still
written to ``.snakemake/log/``.

Used through the logger plugin ``snakemake_logger_plugin_gptlab``
(``snakemake --logger gptlab``), and by ``python -m gptlab.study.console``
(``make progress``) to show the jobs running in a checkout.
"""

from __future__ import annotations

import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

REPORT_EVERY = 15.0  # seconds between reports on running jobs
SHOW_AFTER = 10.0  # a job appears in those reports once it has run this long
MAX_INTERVAL = 300.0  # a long job is shown at least every 5 minutes
LINE_WIDTH = 160
_BAR = re.compile(r"^(?P<desc>[^|]*?):?\s*(?P<pct>\d+)%\|[^|]*\|\s*(?P<rest>.*)$")


@dataclass
class Job:
    """A job as the console knows it: its rule, wildcards, log files and start."""

    jobid: int
    rule: str
    wildcards: dict = field(default_factory=dict)
    logs: list = field(default_factory=list)
    started: float | None = None
    reported: float | None = None  # when the console last showed it running

    @property
    def name(self) -> str:
        """``rule`` with its wildcards: ``sweep model=trained``."""
        values = " ".join(f"{k}={v}" for k, v in self.wildcards.items())
        return f"{self.rule} {values}".strip()


def last_progress(log: Path, tail_bytes: int = 8192) -> str:
    """The last progress bar written to ``log`` (tqdm), else its last line; "" when it has none."""
    try:
        with open(log, "rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - tail_bytes))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    lines = [s.strip() for s in re.split(r"[\r\n]", text)]
    lines = [s for s in lines if s and not s.startswith("[IPKernelApp] WARNING")]
    bars = [s for s in lines if "%|" in s]
    return short_bar(bars[-1]) if bars else (lines[-1] if lines else "")


def short_bar(line: str) -> str:
    """A tqdm line without its bar: ``training 45% 9/20 [00:20<00:25, 2.2s/step, train=10.8]``."""
    m = _BAR.match(line)
    if m is None:
        return line
    rest = m["rest"]
    end = rest.find("]")  # what the job printed after the bar, without a newline, is not the bar's
    rest = rest[: end + 1] if end >= 0 else rest
    return f"{m['desc'].strip()} {m['pct']}% {rest.strip()}".strip()


def duration(seconds: float) -> str:
    """``0.4 s``, ``54 s``, ``3 min 12 s``."""
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest:02d} s"


class Console:
    """Turns the workflow's events into short lines passed to ``write``."""

    def __init__(
        self,
        write=None,
        *,
        report_every=REPORT_EVERY,
        show_after=SHOW_AFTER,
        clock=time.monotonic,
        wall=time.localtime,
    ):
        self.report_every, self.show_after = report_every, show_after
        self.write = write or (lambda line: print(line, file=sys.stderr, flush=True))
        self.clock, self.wall = clock, wall
        self.jobs: dict[int, Job] = {}
        self.finished: list[Job] = []
        self.total: int | None = None
        self.began = clock()

    def _stamp(self) -> str:
        return time.strftime("%H:%M:%S", self.wall())

    def plan(self, counts: dict) -> None:
        """The jobs to run, per rule (Snakemake's job stats)."""
        self.total = counts.get("total", sum(counts.values()))
        rules = [k for k in counts if k not in ("total", "all")]
        self.write(f"{self.total} jobs to run, of {len(rules)} rules. Full log: .snakemake/log/")

    def job_info(self, jobid: int, rule: str, wildcards=None, logs=()) -> None:
        started = self.jobs[jobid].started if jobid in self.jobs else None  # events may come in either order
        self.jobs[jobid] = Job(jobid, rule, dict(wildcards or {}), list(logs), started)

    def job_started(self, jobids) -> None:
        now = self.clock()
        for jobid in jobids:
            self.jobs.setdefault(jobid, Job(jobid, "?")).started = now

    def job_finished(self, jobid: int) -> None:
        job = self.jobs.pop(jobid, None)
        if job is not None:
            self.finished.append(job)

    def progress(self, done: int, total: int) -> None:
        """After finished jobs: a line each, counted ``[done/total]``."""
        now, width = self.clock(), len(str(total))
        for job in self.finished:
            took = "" if job.started is None else duration(now - job.started)
            self.write(f"[{done:>{width}}/{total}] {self._stamp()}  {job.name:<40} {took}".rstrip())
        self.finished = []
        if done == total:
            self.write(f"All {total} jobs done in {duration(now - self.began)}.")

    def tick(self) -> None:
        """The jobs running for ``show_after`` or longer, each again after :meth:`interval`."""
        now = self.clock()
        for job in sorted(self.jobs.values(), key=lambda j: j.jobid):
            if job.started is None or now - job.started < self.show_after:
                continue
            if job.reported is None or now - job.reported >= self.interval(now - job.started):
                job.reported = now
                self.write(self.running_line(job, now))

    def interval(self, running_for: float) -> float:
        """``report_every`` at first, then a fifth of the time the job has run, at most 5 minutes:
        a 10-minute job gets about 15 lines, an hour-long one about 30."""
        return max(self.report_every, min(running_for / 5, MAX_INTERVAL))

    def running_line(self, job: Job, now: float) -> str:
        bar = next((p for p in (last_progress(Path(log)) for log in job.logs) if p), "")
        where = f" ({job.logs[0]})" if job.logs and not bar else ""
        line = f"  ... {self._stamp()}  running {job.name}, {duration(now - job.started)}{where}"
        return (f"{line}: {bar}" if bar else line)[:LINE_WIDTH]


def running_logs(root: Path) -> list[Path]:
    """Log files under ``root``'s ``results/logs/`` folders that a running process holds open."""
    found = set()
    for fd in Path("/proc").glob("[0-9]*/fd/*"):
        try:
            target = Path(fd.readlink())
        except OSError:
            continue
        if target.suffix == ".log" and target.parent.name == "logs" and root in target.parents:
            found.add(target)
    return sorted(found)


def main(argv=None) -> int:
    """``make progress``: the last progress line of each job running in this checkout."""
    root = Path(argv[0] if argv else ".").resolve()
    logs = running_logs(root)
    if not logs:
        print("No job is running (logs: results/logs/, demo/results/logs/).")
    for log in logs:
        print(f"{log.relative_to(root)}: {last_progress(log) or '(no output yet)'}"[:LINE_WIDTH])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
