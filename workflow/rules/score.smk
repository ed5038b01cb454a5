# Word error rate of one cell: Whisper's English normaliser + jiwer.


rule score:
    input:
        transcript=rules.transcribe.output.transcript,
        timing=rules.transcribe.output.timing,
        corpus=f"{RESOURCES}/corpora/{{corpus}}/manifest.tsv",
    output:
        score=f"{RESULTS}/scores/{{model}}/{{scheme}}/{{device}}/{{corpus}}.json",
        utts=f"{RESULTS}/scores/{{model}}/{{scheme}}/{{device}}/{{corpus}}.utts.tsv",
    log:
        f"{LOGS}/score/{{model}}/{{scheme}}/{{device}}/{{corpus}}.log",
    conda:
        "../../envs/quantize.yaml"
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        code=code_digest("score"),
    script:
        "../scripts/score.py"
