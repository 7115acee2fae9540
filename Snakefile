from snakemake.utils import min_version

min_version("9.0")


# Files of the workflow are named relative to it, not to the working directory: a study can run in
# any folder (`snakemake --directory DIR`), which then holds its results/ and .snakemake/.
configfile: f"{workflow.basedir}/config/config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/weights.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/runs.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/sampling.smk"
include: "workflow/rules/report.smk"


rule all:
    default_target: True
    input:
        rules.pretrain.output.checkpoint,
        rules.resume.output.checkpoint,
        rules.plot_losses.output.png,
        expand(rules.render_report.output.html, report=REPORT_INPUTS),
        rules.verify_resume.output if config["resume"]["verify"] else [],


# `snakemake training_study`: the runs of config `runs`, their summary, figure and report only.
rule training_study:
    input:
        training_study_targets,
