"""``snakemake --logger gptlab``: a short console (``gptlab.study.console``) for workflow runs.

A line per finished job and, for jobs running longer than a few seconds, their
progress bars read from their logs; warnings and errors as Snakemake prints
them. Dry runs print as usual. Snakemake's full log still goes to
``.snakemake/log/``.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
from dataclasses import dataclass, field

from snakemake.logging import DefaultFilter, DefaultFormatter
from snakemake_interface_logger_plugins.base import LogHandlerBase
from snakemake_interface_logger_plugins.common import LogEvent
from snakemake_interface_logger_plugins.settings import LogHandlerSettingsBase

TICK_SECONDS = 1.0
# Snakemake's start-up and scheduling chatter; everything else is printed.
CHATTER = (
    "Building DAG of jobs",
    "Using shell:",
    "Provided cores:",
    "Provided resources:",
    "Rules claiming more threads",
    "Select jobs to execute",
    "Execute ",
    "Conda environments: ignored",
    "Singularity containers: ignored",
    "Assuming unrestricted shared filesystem",
    "host:",
    "Config file ",
    "Elapsed time:",
    "Loading script code for rule ",  # --report: one line per rule and per file it adds
)
REPORT_FILE_ADDED = re.compile(r"Adding .+ \([\d.]+ (bytes|[KMGT]B)\)\.")
IGNORED = {
    LogEvent.WORKFLOW_STARTED,
    LogEvent.SHELLCMD,
    LogEvent.RESOURCES_INFO,
    LogEvent.DEBUG_DAG,
    LogEvent.RULEGRAPH,
    LogEvent.GROUP_INFO,
}


@dataclass
class LogHandlerSettings(LogHandlerSettingsBase):
    # None: the console's defaults (gptlab.study.console). Snakemake imports every installed
    # plugin whenever it starts, hence gptlab is imported only when this logger is used.
    report_every: float | None = field(
        default=None,
        metadata={"help": "Seconds between the lines on running jobs (default 15).", "type": float},
    )
    show_after: float | None = field(
        default=None,
        metadata={"help": "Seconds a job runs before those lines include it (default 10).", "type": float},
    )


class LogHandler(LogHandlerBase):
    def __post_init__(self) -> None:
        s = self.common_settings
        self.stream = sys.stdout if s.stdout else sys.stderr
        self.formatter_ = DefaultFormatter(s.quiet, s.show_failed_logs)
        self.filter_ = DefaultFilter(s.quiet, s.debug_dag, s.verbose, s.dryrun, s.printshellcmds)
        from gptlab.study.console import Console

        chosen = {k: v for k, v in vars(self.settings or LogHandlerSettings()).items() if v is not None}
        self.console = Console(self._write, **chosen)
        self.console_lock = threading.Lock()
        self.stopped = threading.Event()
        if not s.dryrun:
            threading.Thread(target=self._tick, daemon=True, name="gptlab-console").start()

    def _write(self, line: str) -> None:
        print(line, file=self.stream, flush=True)

    def _tick(self) -> None:
        while not self.stopped.wait(TICK_SECONDS):
            with self.console_lock:
                self.console.tick()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            with self.console_lock:
                self._handle(record)
        except Exception:
            self.handleError(record)

    def _handle(self, record: logging.LogRecord) -> None:
        event = getattr(record, "event", None)
        if event == LogEvent.JOB_ERROR:
            self.console.jobs.pop(record.jobid, None)
        if self.common_settings.dryrun or record.levelno >= logging.WARNING:
            if self.filter_.filter(record):
                self._write(self.formatter_.format(record))
        elif event is None:
            message = record.getMessage() if record.msg is not None else ""
            if message and not message.startswith(CHATTER) and not REPORT_FILE_ADDED.fullmatch(message):
                self._write(message)
        elif event not in IGNORED:
            self._on_event(event, record)

    def _on_event(self, event, record) -> None:
        c = self.console
        if event == LogEvent.RUN_INFO:
            c.plan(record.stats)
        elif event == LogEvent.JOB_INFO:
            c.job_info(
                record.jobid, record.rule_name, record.wildcards, [f.split(" (")[0] for f in record.log]
            )
        elif event == LogEvent.JOB_STARTED:
            c.job_started(record.jobs)
        elif event == LogEvent.JOB_FINISHED:
            c.job_finished(record.job_id)
        elif event == LogEvent.PROGRESS:
            c.progress(record.done, record.total)
        else:  # errors, and events this console does not shorten
            self._write(self.formatter_.format(record))

    def close(self) -> None:
        self.stopped.set()
        super().close()

    @property
    def writes_to_stream(self) -> bool:
        return True

    @property
    def writes_to_file(self) -> bool:
        return False

    @property
    def has_filter(self) -> bool:
        return True

    @property
    def has_formatter(self) -> bool:
        return True

    @property
    def needs_rulegraph(self) -> bool:
        return False
