# One parameterised notebook per exercise, executed by papermill on the artifacts alone.


rule render_report:
    input:
        notebook="workflow/notebooks/{report}.ipynb",
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
    threads: 1
    resources:
        mem_mb=2000,
        runtime=15,
    params:
        parameters=lambda wc: REPORT_INPUTS[wc.report],
        kernel=config["reports"]["kernel"],
        notebook_digest=notebook_digest,
    script:
        "../scripts/render_report.py"
