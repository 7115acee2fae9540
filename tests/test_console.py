"""The short console: ``gptlab.study.console`` and the logger plugin ``snakemake --logger gptlab``."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
import time

import pytest
from tqdm import tqdm

from gptlab.study import console as console_module
from gptlab.study.console import Console, duration, last_progress, short_bar

SNAKEMAKE = [sys.executable, "-m", "snakemake"]


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def write_tqdm_log(path, steps: int, total: int = 20, noise: str = "") -> None:
    """A log as a training job writes it: tqdm updates separated by carriage returns."""
    with open(path, "w") as f:
        f.write(noise)
        bar = tqdm(total=total, desc="training", file=f, mininterval=0, ncols=100)
        for _ in range(steps):
            bar.update(1)
            bar.set_postfix(train="10.812", val="10.901")
        f.flush()


def test_the_last_bar_of_a_log_is_read_without_its_glyphs(tmp_path):
    log = tmp_path / "pretrain.log"
    write_tqdm_log(log, steps=9, noise="[IPKernelApp] WARNING | noise\nEp 1 (Step 000000): Train loss 10.9\n")
    line = last_progress(log)
    assert line.startswith("training 45% 9/20 ["), line
    assert "train=10.812, val=10.901" in line and "█" not in line
    log.write_text(
        "Ep 1 (Step 000000): Train loss 10.9\n[IPKernelApp] WARNING | Kernel is running over TCP\n"
    )
    assert (
        last_progress(log) == "Ep 1 (Step 000000): Train loss 10.9"
    )  # no bar: the last line that says something
    assert last_progress(tmp_path / "missing.log") == ""
    assert short_bar("not a bar") == "not a bar"


def test_durations_read_as_people_write_them():
    assert [duration(s) for s in (0.04, 9.95, 54.2, 192)] == ["0.0 s", "9.9 s", "54 s", "3 min 12 s"]


def test_a_line_per_finished_job_counted_and_timed():
    lines, clock = [], Clock()
    c = Console(lines.append, clock=clock, wall=lambda: time.struct_time((2026, 12, 1, 19, 42, 1, 0, 0, 0)))
    c.plan({"download_corpus": 1, "sweep": 2, "all": 1, "total": 4})
    c.job_started([7])  # Snakemake may announce the start before the job's description
    c.job_info(7, "sweep", {"model": "gpt2-124M"}, ["results/logs/sweep_gpt2-124M.log"])
    clock.now += 54.2
    c.job_finished(7)
    c.progress(3, 4)
    c.job_info(8, "all")
    c.job_started([8])
    c.job_finished(8)
    c.progress(4, 4)
    assert lines[0] == "4 jobs to run, of 2 rules. Full log: .snakemake/log/"
    assert re.fullmatch(r"\[3/4\] 19:42:01  sweep model=gpt2-124M\s+54 s", lines[1]), lines[1]
    assert re.fullmatch(r"\[4/4\] 19:42:01  all\s+0\.0 s", lines[2]), lines[2]
    assert lines[3] == "All 4 jobs done in 54 s."
    assert c.jobs == {}


def test_long_jobs_are_shown_with_their_progress_less_often_as_they_go_on(tmp_path):
    lines, clock = [], Clock()
    c = Console(lines.append, report_every=15, show_after=10, clock=clock)
    log = tmp_path / "pretrain.log"
    write_tqdm_log(log, steps=12)
    with open(log, "a") as f:
        f.write("Every effort moves you, printed after the bar")  # the sample, on the bar's line
    c.job_info(1, "pretrain", {}, [str(log)])
    c.job_info(2, "plot", {}, [str(tmp_path / "plot.log")])
    c.job_info(3, "quiet", {}, [str(tmp_path / "quiet.log")])
    t0 = clock.now
    c.job_started([1, 3])
    clock.now = t0 + 9
    c.job_started([2])

    def shown_at(seconds: float) -> list[str]:
        clock.now, before = t0 + seconds, len(lines)
        c.tick()
        return [line.split("running ")[1].split(",")[0] for line in lines[before:]]

    assert shown_at(15) == ["pretrain", "quiet"]  # plot has run 6 s only
    assert "running pretrain, 15 s: training 60% 12/20" in lines[0] and lines[0].endswith("val=10.901]")
    assert str(tmp_path / "quiet.log") in lines[1]  # no output yet: where it will be
    assert shown_at(29) == ["plot"]  # the others were shown 14 s ago
    assert shown_at(30) == ["pretrain", "quiet"]
    assert shown_at(600) == ["pretrain", "plot", "quiet"]
    assert shown_at(745) == []  # after 10 minutes, a job is shown every fifth of its running time
    assert shown_at(750) == ["pretrain", "plot", "quiet"]
    assert c.interval(3600) == 300  # and at most every 5


def test_progress_names_the_jobs_holding_their_logs_open(tmp_path, capsys):
    logs = tmp_path / "demo" / "results" / "logs"
    logs.mkdir(parents=True)
    log = logs / "pretrain.log"
    write_tqdm_log(log, steps=5)
    holder = subprocess.Popen(
        [sys.executable, "-c", f"import time; f = open({str(log)!r}, 'a'); time.sleep(60)"]
    )
    try:
        for _ in range(50):  # until the process has opened the file
            if console_module.running_logs(tmp_path):
                break
            time.sleep(0.1)
        assert console_module.main([str(tmp_path)]) == 0
    finally:
        holder.kill()
        holder.wait()
    out = capsys.readouterr().out
    assert out.startswith("demo/results/logs/pretrain.log: training 25% 5/20"), out
    console_module.main([str(tmp_path)])
    assert capsys.readouterr().out.startswith("No job is running")


WORKFLOW = """
    rule all:
        input: expand("out/{n}.txt", n=[1, 2]), "out/long.txt"

    rule quick:
        output: "out/{n}.txt"
        log: "logs/quick_{n}.log"
        shell: "echo {wildcards.n} > {output}; test {wildcards.n} != 2 || (echo the log of it >{log}; exit 3)"

    rule long:
        output: report("out/long.txt", category="long")
        log: "logs/long.log"
        run:
            import time
            from tqdm import tqdm
            with open(log[0], "w") as f:
                for i in tqdm(range(8), desc="training", file=f, mininterval=0):
                    time.sleep(0.5)
            open(output[0], "w").write("done")
"""


@pytest.fixture
def workflow(tmp_path):
    (tmp_path / "Snakefile").write_text(textwrap.dedent(WORKFLOW))
    return tmp_path


def snakemake(workflow, *args):
    return subprocess.run(
        [*SNAKEMAKE, "--cores", "2", "--keep-going", "--show-failed-logs", *args],
        cwd=workflow,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=300,
    )


def test_the_logger_plugin_gives_a_short_console_that_keeps_errors(workflow):
    run = snakemake(
        workflow, "--logger", "gptlab", "--logger-gptlab-report-every", "1", "--logger-gptlab-show-after", "1"
    )
    console = run.stdout
    assert run.returncode != 0  # quick n=2 failed, on purpose
    assert (workflow / "out/long.txt").read_text() == "done"  # the others went on
    assert console.startswith("4 jobs to run, of 2 rules."), console[:500]
    assert re.search(r"^\[1/4\] \d\d:\d\d:\d\d  quick n=1 ", console, re.M), console
    assert re.search(r"^\[2/4\] \d\d:\d\d:\d\d  long\s+\d", console, re.M), console
    assert re.search(r"running long, [\d.]+ s: training \d+% \d/8 \[", console), console
    # the failure as Snakemake prints it, with the failed job's log
    assert "Error in rule quick:" in console and "the log of it" in console, console
    for chatter in ("Building DAG of jobs", "Select jobs to execute", "reason:", "resources:"):
        assert chatter not in console, chatter
    full = next((workflow / ".snakemake/log").glob("*.log")).read_text()
    assert "Select jobs to execute" in full and "rule long:" in full  # Snakemake's full log is kept
    default = snakemake(workflow, "--forceall")
    assert len(console.splitlines()) < len(default.stdout.splitlines()) / 2


def test_the_report_says_what_it_made_not_each_file_it_added(workflow):
    snakemake(workflow, "--until", "long")
    run = snakemake(workflow, "--report", "report.html", "--logger", "gptlab")
    assert run.returncode == 0, run.stdout
    assert "Report created" in run.stdout and (workflow / "report.html").is_file()
    assert "Adding long.txt" not in run.stdout and "Loading script code" not in run.stdout, run.stdout
    assert (
        "Adding long.txt" in snakemake(workflow, "--report", "report.html").stdout
    )  # Snakemake's own says it


def test_a_dry_run_prints_as_usual(workflow):
    run = snakemake(workflow, "-n", "--logger", "gptlab")
    assert run.returncode == 0, run.stdout
    assert "rule long:" in run.stdout and "Job stats:" in run.stdout
