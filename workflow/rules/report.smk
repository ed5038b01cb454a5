# Aggregation: summary.csv (+ statistics), summary.md, the study comparison and plots.


rule aggregate:
    input:
        scores=[c["score"] for c in cell_records()],
        utts=[c["utts"] for c in cell_records()],
        timings=[c["timing"] for c in cell_records()],
        transcripts=[c["transcript"] for c in cell_records()],
        corpora=[f"{RESOURCES}/corpora/{c}/manifest.tsv" for c in grid_corpora(config)],
    output:
        csv=report(
            f"{RESULTS}/report/summary.csv",
            caption="../report/summary.rst",
            category="Results",
            subcategory="Summary table",
        ),
        md=report(
            f"{RESULTS}/report/summary.md",
            caption="../report/summary_md.rst",
            category="Results",
            subcategory="Summary table",
        ),
        study=report(
            f"{RESULTS}/report/study_comparison.csv",
            caption="../report/study.rst",
            category="Results",
            subcategory="Beside the study",
        ),
        plots=report(
            directory(f"{RESULTS}/report/plots"),
            patterns=["{name}.png"],
            caption="../report/plots.rst",
            category="Plots",
            labels={"figure": "{name}"},
        ),
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
