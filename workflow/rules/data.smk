# Corpora: embedded registry speech, its noisy condition, LibriSpeech.


rule build_corpus:
    input:
        source=corpus_source_input,
    output:
        f"{RESOURCES}/corpora/{{corpus}}/manifest.tsv",
    log:
        f"{LOGS}/corpora/{{corpus}}.log",
    conda:
        "../../envs/data.yaml"
    resources:
        mem_mb=2000,
        runtime=60,
    params:
        code=code_digest("corpus"),
        spec=lambda wc: config["corpora"][wc.corpus],
    script:
        "../scripts/build_corpus.py"
