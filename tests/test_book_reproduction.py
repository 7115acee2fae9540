"""The book's chapter-5 numbers, reproduced on the CPU (torch 2.13.0) to every digit the book prints.

The two initial losses are printed by the book with 16 digits, but they are means of float32
losses whose last bits depend on the CPU: they are compared at float32 precision.
"""

import re
import subprocess
import sys

import pytest

from gptlab.training.book import BOOK_INITIAL_LOSSES, BOOK_LOSS_LINES, compare
from tests.conftest import VERDICT


def run_book(epochs: int) -> subprocess.CompletedProcess:
    if not VERDICT.is_file():
        pytest.skip(f"The Verdict is not at {VERDICT} (it is kept outside the repository)")
    cmd = [sys.executable, "-m", "gptlab.book", "--corpus", str(VERDICT), "--epochs", str(epochs)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=3600)


def test_first_epoch_matches_the_book_as_printed():
    result = run_book(1)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for label, printed in zip(("Training", "Validation"), BOOK_INITIAL_LOSSES, strict=True):
        got = float(re.search(rf"^{label} loss: (\S+)$", result.stdout, re.M).group(1))
        assert abs(got - printed) <= 2e-6, (label, got)
    for line in BOOK_LOSS_LINES[:2]:
        assert line in result.stdout
    assert "5 passed, 0 failed" in result.stdout


@pytest.mark.slow
def test_full_ten_epoch_run_matches_the_book():
    result = run_book(10)
    assert result.returncode == 0, result.stdout[-5000:]
    for line in BOOK_LOSS_LINES:
        assert line in result.stdout
    assert 'Every effort moves you know," was one of the axioms he laid down' in result.stdout


def test_comparison_reports_a_mismatch():
    printed = (
        "Ep 1 (Step 000000): Train loss 9.781, Val loss 9.933\n"
        "Ep 1 (Step 000005): Train loss 8.112, Val loss 8.339\n"  # 8.112: one digit off
    )
    rows = compare(
        (10.98758347829183, 10.98110580444336), printed, ["Every effort moves you,,,,,,,,,,,,."], 1
    )
    verdicts = {what: ok for what, _, _, ok in rows}
    assert verdicts["Ep 1 (Step 000000)"] and not verdicts["Ep 1 (Step 000005)"]
    assert verdicts["sample after epoch 1"] and verdicts["initial train loss"]


def test_initial_losses_are_compared_at_float32_precision():
    """A machine whose kernels round differently passes; a loss that is really off does not."""
    printed = "Ep 1 (Step 000000): Train loss 9.781, Val loss 9.933\n"
    intel_amx = (10.987583372328016, 10.98110580444336)  # measured on an AVX-512/AMX Xeon
    verdicts = {what: ok for what, _, _, ok in compare(intel_amx, printed, [], 1)}
    assert verdicts["initial train loss"] and verdicts["initial val loss"]
    off = (10.98758347829183 + 1e-4, 10.98110580444336)
    verdicts = {what: ok for what, _, _, ok in compare(off, printed, [], 1)}
    assert not verdicts["initial train loss"] and verdicts["initial val loss"]
