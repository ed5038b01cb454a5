# Aggregation: summary.csv (+ statistics), summary.md and plots.


rule aggregate:
    input:
        scores=[c["score"] for c in cell_records()],
        utts=[c["utts"] for c in cell_records()],
        timings=[c["timing"] for c in cell_records()],
    output:
        csv=report(
            f"{RESULTS}/report/summary.csv",
            caption="../report/summary.rst",
            category="Summary",
        ),
        md=f"{RESULTS}/report/summary.md",
        plots=directory(f"{RESULTS}/report/plots"),
    params:
        code=code_digest("report"),
        cells=cell_records(),
        unsupported=unsupported_records(),
        report=config["report"],
    log:
        f"{LOGS}/report/aggregate.log",
    resources:
        mem_mb=2000,
        runtime=20,
    conda:
        "../../envs/report.yaml"
    script:
        "../scripts/aggregate.py"
