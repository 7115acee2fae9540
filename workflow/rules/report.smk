# One parameterised notebook per exercise, executed by papermill on the artifacts alone.

# Report notebook → the artifacts it reads (its papermill parameters), as plain paths.
REPORT_INPUTS = {
    "ex5_1_pizza": {
        "pizza_book_csv": str(rules.pizza_toy.output.book),
        "pizza_sweep_csv": str(rules.pizza_toy.output.sweep),
        "next_token_csv": str(rules.combine_next_token.output[0]),
        "toy_png": str(rules.plot_pizza.output.toy),
        "sweep_png": str(rules.plot_pizza.output.sweep),
        "next_token_png": str(rules.plot_pizza.output.next_token),
    },
    "ex5_2_sweep": {
        "generations_csv": str(rules.combine_sweep.output.generations),
        "cells_csv": str(rules.combine_sweep.output.cells),
        "recommended_csv": str(rules.combine_sweep.output.recommended),
        "heatmap_pngs": [str(png) for png in rules.plot_sweep.output.png],
    },
    "ex5_3_determinism": {
        "determinism_csv": str(rules.determinism.output[0]),
        "determinism_png": str(rules.plot_determinism.output.png),
    },
    "ex5_4_resume": {
        "history_csv": str(rules.resume.output.history),
        "samples_csv": str(rules.resume.output.samples),
        "verification_json": (
            str(rules.verify_resume.output[0]) if config["resume"]["verify"] else ""
        ),
        "losses_png": str(rules.plot_losses.output.png),
    },
    "ex5_5_losses": {
        "losses_csv": str(rules.combine_losses.output[0]),
        "losses_png": str(rules.plot_model_losses.output.png),
    },
    "ex5_6_sizes": {
        "generations_csv": str(rules.sizes.output.generations),
        "summary_csv": str(rules.sizes.output.summary),
        "side_by_side_csv": str(rules.sizes.output.side_by_side),
        "book_reference_csv": str(rules.sizes.output.book_reference),
        "sizes_png": str(rules.plot_sizes.output.png),
    },
}
if RUNS:
    REPORT_INPUTS["training_study"] = {
        "summary_csv": str(rules.summarize_runs.output.summary),
        "samples_csv": str(rules.summarize_runs.output.samples),
        "figure_png": str(rules.plot_training_study.output.png),
    }


rule render_report:
    input:
        notebook=workflow_file("workflow/notebooks/{report}.ipynb"),
        artifacts=report_artifacts,
    output:
        ipynb="results/reports/{report}.ipynb",
        html=report(
            "results/reports/{report}.html",
            caption="../report/reports.rst",
            category="Reports",
            labels={"report": "{report}"},
        ),
    log:
        f"{LOGS}/report_{{report}}.log",
    wildcard_constraints:
        report="|".join(REPORT_INPUTS),
    conda:
        "../../envs/report.yaml"
    params:
        parameters=lambda wc: REPORT_INPUTS[wc.report],
        kernel=config["reports"]["kernel"],
        notebook_digest=notebook_digest,
    script:
        "../scripts/render_report.py"
