# Aggregation: summary.csv (+ statistics), summary.md, the study comparison and plots.
#
# Snakemake deletes a job's outputs before it runs, so the aggregation writes a staged report
# (temp(): gone once published) and publish_report copies it into results/report/ only once it
# is complete: a failed aggregation leaves the previous report where it was.

REPORT = f"{RESULTS}/report"
STAGED = f"{RESULTS}/.report-staging"


rule aggregate:
    input:
        quant=[c["quant"] for c in cell_records()],
        scores=[c["score"] for c in cell_records()],
        utts=[c["utts"] for c in cell_records()],
        timings=[c["timing"] for c in cell_records()],
        transcripts=[c["transcript"] for c in cell_records()],
        corpora=[f"{RESOURCES}/corpora/{c}/manifest.tsv" for c in grid_corpora(config)],
    output:
        csv=temp(f"{STAGED}/summary.csv"),
        md=temp(f"{STAGED}/summary.md"),
        study=temp(f"{STAGED}/study_comparison.csv"),
        plots=temp(directory(f"{STAGED}/plots")),
    log:
        f"{LOGS}/report/aggregate.log",
    conda:
        "../../envs/report.yaml"
    resources:
        mem_mb=2000,
        runtime=20,
    params:
        code=code_digest("report"),
        cells=cell_records(),
        unsupported=unsupported_records(),
        report=config["report"],
        # which cells are the study's own (numeric comparison) -- see whisperquant/report/study.py
        models={m: model_params(spec) for m, spec in config["models"].items()},
        corpora=config["corpora"],
        corpus_names=grid_corpora(config),
    script:
        "../scripts/aggregate.py"


localrules:
    publish_report,


rule publish_report:
    input:
        csv=rules.aggregate.output.csv,
        md=rules.aggregate.output.md,
        study=rules.aggregate.output.study,
        plots=rules.aggregate.output.plots,
    output:
        csv=report(
            f"{REPORT}/summary.csv",
            caption="../report/summary.rst",
            category="Results",
            subcategory="Summary table",
        ),
        md=report(
            f"{REPORT}/summary.md",
            caption="../report/summary_md.rst",
            category="Results",
            subcategory="Summary table",
        ),
        study=report(
            f"{REPORT}/study_comparison.csv",
            caption="../report/study.rst",
            category="Results",
            subcategory="Beside the study",
        ),
        plots=report(
            directory(f"{REPORT}/plots"),
            patterns=["{name}.png"],
            caption="../report/plots.rst",
            category="Plots",
            labels={"figure": "{name}"},
        ),
    log:
        f"{LOGS}/report/publish.log",
    conda:
        "../../envs/report.yaml"
    script:
        "../scripts/publish_report.py"
