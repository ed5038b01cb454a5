# whisperquant: post-training quantisation of Whisper, from checkpoint to WER report.
#   snakemake --cores all                          # the default (offline) grid
#   snakemake --cores all --configfile config/paper.yaml   # the study's own setup
#   snakemake --cores 2 --directory .test          # the CI test grid (.test/config/config.yaml)


from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/models.smk"
include: "workflow/rules/quantize.smk"
include: "workflow/rules/transcribe.smk"
include: "workflow/rules/score.smk"
include: "workflow/rules/sensitivity.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/cluster.smk"


rule all:
    default_target: True
    input:
        f"{RESULTS}/report/summary.csv",
        f"{RESULTS}/report/summary.md",
        [
            f"{RESULTS}/report/sensitivity/{s['model']}/{s['scheme']}.{ext}"
            for s in config.get("sensitivity", [])
            for ext in ("csv", "json", "png")
        ],
