"""Report notebooks of exercises 5.1 to 5.6, rendered on real artifacts of tiny models.

The artifacts are written once per module by the same writer functions the pipeline calls; each
notebook is then executed by papermill and exported to HTML with ``gptlab.study.reports.render_report``.
"""

from __future__ import annotations

import ast
import html
import json
import math
import re
from pathlib import Path

import nbformat
import pandas as pd
import pytest
import torch

from gptlab.experiments import determinism, figures, pizza, sizes, sweep
from gptlab.experiments.common import describe_models
from gptlab.experiments.determinism import DeterminismGrid
from gptlab.experiments.losses import evaluate_losses, write_losses_csv
from gptlab.experiments.sizes import SizesGrid
from gptlab.experiments.sweep import SweepGrid
from gptlab.io import concat_tables, save_figure, sidecar_path, write_table
from gptlab.study.notebook import SYNTHETIC_NOTICE, provenance, weights_notice
from gptlab.study.reports import render_report
from gptlab.study.runs import Reference, run_pretraining, run_resume, verify_resume
from gptlab.tokenizer import get_tokenizer
from gptlab.training.config import TrainConfig
from tests.conftest import EXPERIMENT_CONFIG, REPO, make_model, make_text

NOTEBOOKS = REPO / "workflow" / "notebooks"
REPORTS = ["ex5_1_pizza", "ex5_2_sweep", "ex5_3_determinism", "ex5_4_resume", "ex5_5_losses", "ex5_6_sizes"]
PNG = ("png",)  # the reports embed PNGs; PDFs are not needed here
HEATMAPS = ("distinct_2", "mean_logprob", "seed_disagreement")
PROMPTS = ["Every effort moves you", "I HAD always thought Jack Gisburn"]

pytestmark = pytest.mark.usefixtures("one_thread")


def png(fig, path: Path) -> str:
    save_figure(fig, [path])
    return str(path)


def _write_pizza(out: Path, models, tok) -> dict:
    book = out / "ex5_1" / "pizza_book.csv"
    sweep_csv = out / "ex5_1" / "pizza_sweep.csv"
    nxt = out / "ex5_1" / "pizza_next_token.csv"
    pizza.write_pizza_book(book)
    sweep_df = pizza.write_pizza_sweep(sweep_csv, temperatures=[0.05, 0.1, 0.3, 1.0, 2.0, 5.0, 10.0])
    nxt_df = pizza.write_next_token_probabilities(nxt, models, tok, PROMPTS, [0.5, 1.0, 2.0])
    fig_dir = out / "figures"
    return {
        "pizza_book_csv": str(book),
        "pizza_sweep_csv": str(sweep_csv),
        "next_token_csv": str(nxt),
        "toy_png": png(figures.plot_toy_distributions(), fig_dir / "toy.png"),
        "sweep_png": png(figures.plot_pizza_sweep(sweep_df), fig_dir / "pizza_sweep.png"),
        "next_token_png": png(figures.plot_next_token_probability(nxt_df), fig_dir / "next_token.png"),
    }


def _write_sweep(out: Path, models, tok) -> dict:
    d = out / "ex5_2"
    paths = [d / "sweep_generations.csv", d / "sweep_cells.csv", d / "sweep_recommended.csv"]
    _, cells, _ = sweep.write_sweep(
        *paths,
        models,
        tok,
        SweepGrid(PROMPTS[:1], temperatures=(0.0, 1.5), top_ks=(1, None), seeds=(123, 124), max_new_tokens=8),
        train_text=make_text(300),
    )
    pngs = figures.write_all_heatmaps(cells, out / "figures" / "ex5_2", HEATMAPS, PNG)
    return {
        "generations_csv": str(paths[0]),
        "cells_csv": str(paths[1]),
        "recommended_csv": str(paths[2]),
        "heatmap_pngs": [str(p) for p in pngs],
    }


def _write_determinism(out: Path, model, tok) -> dict:
    csv = out / "ex5_3" / "determinism.csv"
    idx = torch.tensor([tok.encode(PROMPTS[0])])
    grid = DeterminismGrid(max_new_tokens=4, top_ks=(None, 1), batch_sizes=(1, 3), runs=2)
    df = determinism.write_determinism(csv, model, idx, model_name="tiny", grid=grid)
    return {
        "determinism_csv": str(csv),
        "determinism_png": png(figures.plot_determinism(df), out / "figures" / "determinism.png"),
    }


def _write_resume(out: Path) -> dict:
    """Exercise 5.4 as the pipeline runs it: one epoch and one more in memory, a restore and one more."""
    d = out / "resume"
    corpus = out / "corpus.txt"
    corpus.write_text(make_text(600), encoding="utf-8")
    config = TrainConfig(num_epochs=1, batch_size=4, max_length=32, stride=32, eval_freq=4, eval_iter=1)
    run = {"model_config": EXPERIMENT_CONFIG, "config": config, "device": "cpu", "threads": 1}
    whole = d / "uninterrupted"
    reference = Reference(1, whole / "checkpoint.pt", whole / "history.csv", whole / "samples.csv")
    pretrain_outputs = (d / "pretrain.pt", d / "pretrain_history.csv", d / "pretrain_samples.csv")
    run_pretraining(corpus, *pretrain_outputs, reference=reference, **run)
    run_resume(corpus, d / "pretrain.pt", d / "checkpoint.pt", d / "history.csv", d / "samples.csv", **run)
    verify_resume(d / "checkpoint.pt", whole / "checkpoint.pt", d / "verification.json")
    return {
        "history_csv": str(d / "history.csv"),
        "samples_csv": str(d / "samples.csv"),
        "verification_json": str(d / "verification.json"),
        "losses_png": png(
            figures.plot_losses(pd.read_csv(d / "history.csv")), out / "figures" / "losses.png"
        ),
    }


def _losses_figure(losses: pd.DataFrame, path: Path) -> str:
    return png(figures.plot_model_losses(losses), path)


def _write_losses(out: Path, models) -> tuple[dict, pd.DataFrame]:
    csv = out / "ex5_5" / "losses.csv"
    losses = evaluate_losses(models, make_text(), max_length=64, stride=64, batch_size=2)
    write_losses_csv(losses, csv, {"experiment": "5.5 losses", "models": describe_models(models)})
    figure = _losses_figure(losses, out / "figures" / "model_losses.png")
    return {"losses_csv": str(csv), "losses_png": figure}, losses


def _write_sizes(out: Path, models, tok, losses: pd.DataFrame, folder: str = "ex5_6") -> dict:
    """5.6 as the pipeline writes it; ``models`` are named ``gpt2-<size>``."""
    d = out / folder
    paths = [d / "sizes_generations.csv", d / "sizes_summary.csv", d / "sizes_side_by_side.csv"]
    wide = losses.pivot(index="model", columns="split", values="loss").reset_index()
    wide = wide.rename(columns={"train": "train_loss", "val": "val_loss"})
    _, summary, _ = sizes.write_sizes(
        *paths,
        models,
        tok,
        SizesGrid(PROMPTS[:1], seeds=(123, 124), max_new_tokens=8),
        train_text=make_text(300),
        losses=wide[wide["model"].isin(list(models))],
    )
    by_size = {name.removeprefix("gpt2-"): model for name, model in models.items()}
    sizes.write_book_references(d / "book_reference.csv", by_size, tok)
    sizes_png = png(figures.plot_size_comparison(summary), out / "figures" / f"{folder}.png")
    return {
        "generations_csv": str(paths[0]),
        "summary_csv": str(paths[1]),
        "side_by_side_csv": str(paths[2]),
        "book_reference_csv": str(d / "book_reference.csv"),
        "sizes_png": sizes_png,
    }


def write_artifacts(out: Path) -> dict[str, dict]:
    """Every report's artifacts under ``out``; returns ``{report: papermill parameters}``."""
    tok = get_tokenizer()
    trained = make_model(1)
    gpt2_124m = make_model(2)
    gpt2_1558m = make_model(3, n_layers=3, emb_dim=48)
    pair = {"trained": trained, "gpt2-124M": gpt2_124m}
    params = {
        "ex5_1_pizza": _write_pizza(out, pair, tok),
        "ex5_2_sweep": _write_sweep(out, pair, tok),
        "ex5_3_determinism": _write_determinism(out, trained, tok),
        "ex5_4_resume": _write_resume(out),
    }
    losses_params, losses = _write_losses(
        out, {"trained": trained, "gpt2-124M": gpt2_124m, "gpt2-1558M": gpt2_1558m}
    )
    params["ex5_5_losses"] = losses_params
    size_models = {"gpt2-124M": gpt2_124m, "gpt2-1558M": gpt2_1558m}
    params["ex5_6_sizes"] = _write_sizes(out, size_models, tok, losses)
    params["one_size"] = _write_sizes(out, {"gpt2-124M": gpt2_124m}, tok, losses, "ex5_6_one")
    return params


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    out = tmp_path_factory.mktemp("artifacts")
    return out, write_artifacts(out)


# ---------------------------------------------------------------------------------------------
# Rendering

IMG = re.compile(r"<img\b[^>]*\bsrc=\"([^\"]*)\"")


def rendered(html_path: Path) -> tuple[str, str]:
    """The HTML and its visible text (tags removed, entities decoded, whitespace collapsed)."""
    page = html_path.read_text(encoding="utf-8")
    return page, visible_text(page)


def visible_text(page: str) -> str:
    page = re.sub(r"<(style|script)\b.*?</\1>", " ", page, flags=re.DOTALL)
    inline = re.sub(r"</?(?:code|strong|em)\b[^>]*>", "", page)  # markdown's inline markup
    text = html.unescape(re.sub(r"<[^>]+>", " ", inline))
    return re.sub(r"\s+", " ", text)


def prose(page: str) -> str:
    """The visible text outside tables: what the report says in sentences, lists and provenance."""
    return visible_text(re.sub(r"<table\b.*?</table>", " ", page, flags=re.DOTALL))


def render(name: str, params: dict, out: Path) -> tuple[str, str]:
    out_nb, out_html = out / f"{name}.ipynb", out / f"{name}.html"
    html_path = render_report(NOTEBOOKS / f"{name}.ipynb", params, out_nb, out_html, kernel_name="python3")
    executed = nbformat.read(out_nb, as_version=4)
    for cell in executed.cells:
        for output in cell.get("outputs", []):
            assert output["output_type"] != "error", f"{name}: {output.get('ename')}: {output.get('evalue')}"
            assert not (output["output_type"] == "stream" and output["name"] == "stderr"), (
                f"{name} wrote to stderr: {output['text'][:500]}"
            )
    return rendered(html_path)


def assert_reads_like_a_paper(page: str, params: dict, synthetic: bool):
    """What every report shares: no code, no raw booleans or Python containers in prose, the answer
    before the first figure, the synthetic-weights notice exactly when GPT-2 weights are not OpenAI's,
    and a sidecar for every table it reads (named in the provenance)."""
    assert not re.search(r'class="[^"]*(jp-InputArea-editor|hl-ipython3)', page), "code is visible"
    code_cells = re.findall(r'class="jp-Cell jp-CodeCell[^"]*"', page)
    assert code_cells and all("jp-mod-noInput" in c for c in code_cells), "a code cell shows its input"
    text = prose(page)
    assert not re.search(r"\b(True|False|None|nan)\b", text), re.findall(
        r".{60}\b(?:True|False|None|nan)\b.{20}", text
    )
    # the repr of a dict, of a list of strings, of a list of numbers
    containers = r"\{['\"][^'\"]*['\"]: |\[['\"][^'\"]*['\"], ['\"]|\[-?\d+(?:\.\d+)?, -?\d"
    assert not re.search(containers, text), re.findall(f".{{40}}(?:{containers}).{{40}}", text)
    question, answer = page.find("<strong>Question.</strong>"), page.find("<strong>Answer.</strong>")
    first_image = page.find("<img")
    assert 0 <= question < answer, "the question, then the answer"
    assert first_image == -1 or answer < first_image, "the answer comes before the first figure"
    assert (SYNTHETIC_NOTICE in text) == synthetic
    if synthetic:
        assert text.find(SYNTHETIC_NOTICE) < text.find("Question.")  # at the top
    tables = [v for k, v in params.items() if k.endswith("_csv")]
    assert all(sidecar_path(t).is_file() for t in tables), "a table without a sidecar"
    assert "beside it" not in text and "experiment not recorded" not in text
    method = text.find(PROVENANCE)
    assert text.find("Answer.") < method < text.find("versions: python"), "method and provenance at the end"


def assert_images(page: str, count: int):
    sources = IMG.findall(page)
    assert len(sources) == count, f"expected {count} images, found {len(sources)}"
    assert all(s.startswith("data:image/png;base64,") and len(s) > 1000 for s in sources)


def in_table(page: str, value: str) -> bool:
    """``value`` is the whole content of a table cell."""
    return re.search(rf"<td[^>]*>\s*{re.escape(value)}\s*</td>", page) is not None


def assert_headings(text: str, *headings: str):
    missing = [h for h in headings if h not in text]
    assert not missing, f"missing sections {missing}"


PROVENANCE = "How this was produced"


def check_pizza(params, page, text):
    assert_images(page, 3)
    assert_headings(
        text,
        'Exercise 5.1: how often is "pizza" sampled?',
        "The book's counts next to the exact answer",
        "The better method: compute the probability instead of sampling",
        "Over a range of temperatures",
        "The same question for real models",
        PROVENANCE,
    )
    book = pd.read_csv(params["pizza_book_csv"])
    p5 = book[(book["token"] == "pizza") & (book["temperature"] == 5.0)].iloc[0]
    assert in_table(page, f"[{p5.ci_low:.4f}, {p5.ci_high:.4f}]")
    assert in_table(page, f"{p5.exact_prob:.3g}")
    assert (
        'Answer. In 1,000 draws with seed 123, "pizza" came up 0, 0 and 32 times at T = 1, 0.1 and 5' in text
    )
    assert "as the book printed. No sampling is needed" in text
    assert f'T = 5: {p5.count_book_loop} of 1,000 draws were "pizza", as the book printed.' in text
    assert f"so {p5.expected_count:.3g} are expected; it lies inside the 95 % Wilson interval." in text
    assert "The vectorised draw returned the loop's counts for every token and temperature." in text
    nxt = pd.read_csv(params["next_token_csv"])
    best = nxt.loc[nxt["rank"].idxmin()]
    assert f"The best rank of ' pizza' is {int(best['rank']):,} of 50,257" in text
    for r in nxt[nxt["temperature"] == 1.0].itertuples():
        assert f"{r.model} after {r.prompt!r}: P = " in text
    # from the sidecars: the experiment, the settings as key = value, the models with their origin
    assert "pizza_sweep.csv: 5.1 temperature sweep" in text and "num_draws = 1000" in text
    assert "trained: " in text and "made in memory, with a shape none of OpenAI's GPT-2 releases has" in text


def check_sweep(params, page, text):
    assert_images(page, len(params["heatmap_pngs"]))
    assert_headings(
        text,
        "Exercise 5.2: temperature and top-k",
        "Greedy and sampling settings compared",
        "Recommended settings per model",
        "Low and high temperature, side by side",
        "How much the text depends on the seed",
        "Every metric, setting by setting",
        PROVENANCE,
    )
    assert "Answer. Low temperature and top-k suit tasks with one right answer" in text
    rec = pd.read_csv(
        params["recommended_csv"], keep_default_na=False, na_values=[""], dtype={"top_k_label": str}
    )
    for r in rec[rec["criterion"] == "most_likely"].itertuples():
        greedy = " (greedy)" if r.temperature == 0 or r.top_k_label == "1" else ""
        expected = f"T = {r.temperature:g}, top-k = {r.top_k_label}{greedy}: mean log-prob "
        assert expected in text
    for r in rec.itertuples():  # greedy is never recommended for variety
        if r.criterion != "most_likely":
            assert r.temperature > 0 and r.top_k_label != "1", r
    assert "highest distinct-2 among sampling settings" in text  # each rule is stated
    cells = pd.read_csv(params["cells_csv"], dtype={"top_k_label": str})
    greedy = (cells["temperature"] == 0) | (cells["top_k_label"] == "1")
    one_text = cells["seed_disagreement"] == 0
    assert (
        f"greedy settings (T = 0 or top-k = 1) that gave one text for every seed: "
        f"{int((greedy & one_text).sum())} of {int(greedy.sum())}"
    ) in text
    assert "sampling settings that still gave one text for every seed: " in text
    gens = pd.read_csv(params["generations_csv"])
    assert f"{len(gens):,} generations in {len(cells):,} settings" in text
    assert "Mean log-prob" in text and "Seed disagreement" in text  # heatmap titles
    assert "sweep_cells.csv: " in text and "made by the same run as sweep_generations.csv" in text


def check_determinism(params, page, text):
    assert_images(page, 1)
    assert_headings(
        text,
        "Exercise 5.3: which settings make generate deterministic?",
        "Settings and what happened",
        "Greedy settings: the same output as generate_simple",
        "Sampling: the seed decides",
        "Batch invariance: a finding the book does not state",
        PROVENANCE,
    )
    det = pd.read_csv(params["determinism_csv"])
    assert f"in all, {int(det['as_expected'].sum())} of {len(det)} settings behaved as the book says" in text
    assert page.count("<table") == 1 + int((~det["as_expected"]).any())  # one table, not a picture of it too
    sampled = det[~det["expected_greedy"] & (det["batch_size"] > 1)]
    for rng, rows in sampled.groupby("rng"):
        n = int(rows["batch_invariant"].sum())
        same = f"{rng} random numbers: row i equals a batch of one with the same seed in {n} of {len(rows)}"
        assert same in text
    assert "determinism.csv: 5.3 determinism audit" in text


def check_losses(params, page, text):
    assert_images(page, 1)
    assert_headings(
        text,
        "Exercise 5.5: training and validation loss of the pretrained GPT-2",
        "Losses per model",
        "Compared with the book",
        "What the numbers say",
        PROVENANCE,
    )
    losses = pd.read_csv(params["losses_csv"])
    for r in losses.itertuples():
        assert in_table(page, f"{r.loss:.4f}"), (r.model, r.split)
        assert in_table(page, f"{r.perplexity:,.1f}"), (r.model, r.split)
    for book_value in ("3.7547", "3.5596", "3.3046", "3.1195"):
        assert book_value in text
    train = losses[losses["split"] == "train"].iloc[0]
    val = losses[losses["split"] == "val"].iloc[0]
    is_verdict = (train.n_batches, train.n_tokens, val.n_batches, val.n_tokens) == (9, 4608, 1, 512)
    assert ("the splits here are the same." in text) == is_verdict
    assert "They cannot be the book's: the GPT-2 weights are not OpenAI's" in text
    assert "Models whose training and validation losses both match the book's: 0 of 2." in text


def check_sizes(params, page, text):
    assert_images(page, 1)
    assert_headings(
        text,
        "Exercise 5.6: GPT-2 124M and GPT-2 1558M",
        "Metrics per model, with the 5.5 losses",
        "The book's sample, reproduced?",
        "The texts side by side",
        PROVENANCE,
    )
    refs = pd.read_csv(params["book_reference_csv"])
    assert list(refs["size"]) == ["124M", "1558M"] and not refs["matches_book"].any()
    assert "reproduces the book's text with neither GPT-2 124M nor GPT-2 1558M." in text
    assert "gpt2-1558M wrote text with " in text and ", compared with gpt2-124M" in text
    assert "toward finding an ideal life" in text  # the book's 1558M text is shown
    summary = pd.read_csv(params["summary_csv"])
    for r in summary.itertuples():
        mean = f"{r.mean_logprob_mean:.3f}".replace("-", "−")
        assert in_table(page, f"{mean} ± {r.mean_logprob_std:.3f}")
        assert in_table(page, f"{r.val_loss:.4f}") and in_table(page, f"{r.parameters:,}")
    side = pd.read_csv(params["side_by_side_csv"])
    assert "text[gpt2-124M]" in text and "text[gpt2-1558M]" in text and len(side) == 2


def check_resume(params, page, text):
    assert_images(page, 1)
    assert_headings(
        text,
        "Pretraining and exercise 5.4: restore model and optimizer, train one more epoch",
        "Resumed vs uninterrupted",
        "Loss history",
        "Greedy sample after each epoch",
        PROVENANCE,
    )
    assert "<strong>identical</strong>, bit for bit" in page  # what the pipeline's test reads
    verification = json.loads(Path(params["verification_json"]).read_text())
    assert verification["identical"] and f"uninterrupted run of {verification['epochs']} epochs" in text
    assert verification["proves_exact_resume"] and "trained on in memory past the checkpoint" in text
    history = pd.read_csv(params["history_csv"])
    last = history.iloc[-1]
    assert f"Ep {last.epoch} (Step {last.global_step:06d}): Train loss {last.train_loss:.3f}" in text
    assert in_table(page, f"{verification['final_val_loss']['resumed']:.6f}")
    assert "resumed after epoch: 1" in text and "learning_rate = 0.0004" in text  # from the sidecar


CHECKS = {
    "ex5_1_pizza": check_pizza,
    "ex5_2_sweep": check_sweep,
    "ex5_3_determinism": check_determinism,
    "ex5_4_resume": check_resume,
    "ex5_5_losses": check_losses,
    "ex5_6_sizes": check_sizes,
}


SYNTHETIC = {"ex5_1_pizza", "ex5_2_sweep", "ex5_5_losses", "ex5_6_sizes"}  # the reports with GPT-2 results


@pytest.mark.parametrize("name", REPORTS)
def test_report_renders_from_artifacts(artifacts, name, tmp_path):
    _, params = artifacts
    page, text = render(name, params[name], tmp_path)
    assert_reads_like_a_paper(page, params[name], synthetic=name in SYNTHETIC)
    CHECKS[name](params[name], page, text)


def test_sizes_report_with_one_size_says_so(artifacts, tmp_path):
    """With one GPT-2 size there is nothing to compare: a sentence, no figure, no comparison table."""
    _, params = artifacts
    page, text = render("ex5_6_sizes", params["one_size"], tmp_path)
    assert_reads_like_a_paper(page, params["one_size"], synthetic=True)
    assert_images(page, 0)
    assert "Only gpt2-124M was configured (gpt2.sizes), so there is no other size to compare with" in text
    assert "Only one size was run, so there is no comparison of metrics to show." in text
    assert "Metrics per model" not in text and "side by side" not in text
    assert "does not reproduce the book's text with GPT-2 124M." in text


def test_losses_report_recognises_the_book_values(tmp_path):
    """With the book's numbers on The Verdict's split sizes, the report says they reproduce the book."""
    rows = []
    for model, (train, val) in {"gpt2-124M": (3.7547, 3.5596), "gpt2-1558M": (3.3046, 3.1195)}.items():
        rows.append({"model": model, "split": "train", "loss": train, "n_batches": 9, "n_tokens": 4608})
        rows.append({"model": model, "split": "val", "loss": val, "n_batches": 1, "n_tokens": 512})
    frame = pd.DataFrame(rows)
    frame.insert(3, "perplexity", frame["loss"].map(math.exp))
    csv = write_losses_csv(
        frame, tmp_path / "losses.csv", {"experiment": "5.5 losses", "corpus": "the-verdict.txt"}
    )
    figure = _losses_figure(frame, tmp_path / "losses.png")
    params = {"losses_csv": str(csv), "losses_png": figure}
    page, text = render("ex5_5_losses", params, tmp_path)
    # no origin recorded: no synthetic notice, but a word that the origin is unknown
    assert_reads_like_a_paper(page, params, synthetic=False)
    assert "Where the GPT-2 weights of gpt2-124M, gpt2-1558M came from is not recorded" in text
    assert "On The Verdict the book's loaders give train: 9 batches, 4,608 tokens" in text
    assert "the splits here are the same." in text
    assert "Models whose training and validation losses both match the book's: 2 of 2." in text
    assert "They reproduce the book's: these are OpenAI's weights evaluated on The Verdict." in text
    assert "The larger GPT-2 has the lower validation loss, as in the book" in text
    assert "corpus: the-verdict.txt" in text  # the sidecar is reported


def test_provenance_describes_every_sidecar(tmp_path):
    table = tmp_path / "part.csv"
    models = {"m": {"config": {"n_layers": 2, "emb_dim": 8}, "parameters": 1234}}
    meta = {
        "experiment": "x",
        "seeds": [1, 2],
        "config": {"k": [1], "prompt": " pizza", "flag": True, "none": None, "rate": 0.0004},
        "models": models,
        "note": "hi",
    }
    write_table(pd.DataFrame({"a": [1, 2]}), table, meta)
    again = write_table(pd.DataFrame({"a": [3]}), tmp_path / "again.csv", meta)
    combined = concat_tables([table], tmp_path / "all.csv", {"experiment": "x combined"})
    text = provenance(table, again, combined, tmp_path / "none.csv")
    first, same, stacked, missing = text.split("\n\n**`")  # one block per table
    assert first.startswith("**`part.csv`**: x; 2 rows.")
    assert "- seeds: 1, 2" in first and "- note: hi" in first
    for setting in ("`k` = 1", '`prompt` = " pizza"', "`flag` = yes", "`none` = none", "`rate` = 0.0004"):
        assert f"  - {setting}" in first, setting
    assert "  - `m`: 1,234 parameters; 2 layers, 8-dimensional embeddings; origin not recorded" in first
    assert "- versions: python " in first and "- machine: " in first and " cores, torch " in first
    assert not re.search(r"True|False|None|\{['\"]|\[['\"]|\[\d", first), first
    assert same == "again.csv`**: 1 row, made by the same run as `part.csv` (its sidecar records the same)."
    assert stacked.startswith("all.csv`**: x combined; 2 rows, stacked from 1 table (`part.csv`).")
    assert "  - `k` = 1" in stacked and "  - `m`: 1,234 parameters" in stacked
    assert missing == "none.csv`**: no `none.meta.json` beside it."


def test_weights_notice_names_the_models_that_are_not_openais(tmp_path):
    def origin(matches, evidence):
        return {
            "origin": {"source": "converted GPT-2 release", "matches_openai": matches, "evidence": evidence}
        }

    table = tmp_path / "t.csv"
    models = {
        "gpt2-124M": origin(False, "not OpenAI's weights: its hparams differ"),
        "355M": origin(True, "consistent with OpenAI's 355M"),
        "trained": {
            "origin": {"source": "gptlab checkpoint", "matches_openai": False, "evidence": "trained"}
        },
    }
    write_table(pd.DataFrame({"a": [1]}), table, {"models": models})
    notice = weights_notice(table)
    assert notice.startswith(f"**{SYNTHETIC_NOTICE}**") and "`gpt2-124M`: its hparams differ" in notice
    assert "355M" not in notice and "trained" not in notice  # OpenAI's shape; not GPT-2
    write_table(
        pd.DataFrame({"a": [1]}), table, {"models": {k: v for k, v in models.items() if k != "gpt2-124M"}}
    )
    assert weights_notice(table) == ""


# ---------------------------------------------------------------------------------------------
# The committed notebooks

PARAMETERS = {
    "ex5_1_pizza": {
        *("pizza_book_csv", "pizza_sweep_csv", "next_token_csv"),
        *("toy_png", "sweep_png", "next_token_png"),
    },
    "ex5_2_sweep": {"generations_csv", "cells_csv", "recommended_csv", "heatmap_pngs"},
    "ex5_3_determinism": {"determinism_csv", "determinism_png"},
    "ex5_4_resume": {"history_csv", "samples_csv", "verification_json", "losses_png"},
    "ex5_5_losses": {"losses_csv", "losses_png"},
    "ex5_6_sizes": {"generations_csv", "summary_csv", "side_by_side_csv", "book_reference_csv", "sizes_png"},
}


def _parameter_defaults(cell) -> dict:
    tree = ast.parse(cell.source)
    return {
        node.targets[0].id: ast.literal_eval(node.value)
        for node in tree.body
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name)
    }


@pytest.mark.parametrize("path", sorted(NOTEBOOKS.glob("*.ipynb")), ids=lambda p: p.stem)
def test_notebook_committed_clean(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.outputs == [] and c.execution_count is None for c in code), "commit without outputs"
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, f"{path.name} has {len(tagged)} cells tagged 'parameters'"
    assert tagged[0].cell_type == "code"
    assert nb.metadata.kernelspec.name == "python3"


@pytest.mark.parametrize("name", REPORTS)
def test_notebook_parameters_match_the_pipeline(name):
    """The parameters cell names exactly what the pipeline passes, with empty defaults."""
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    (cell,) = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    defaults = _parameter_defaults(cell)
    assert set(defaults) == PARAMETERS[name]
    assert all(v in ("", []) for v in defaults.values()), defaults
