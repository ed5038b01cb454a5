# Corpora: embedded registry speech, its noisy condition, LibriSpeech, the user's own speech.


rule build_corpus:
    input:
        source=corpus_source_input,
    output:
        f"{RESOURCES}/corpora/{{corpus}}/manifest.tsv",
    log:
        f"{LOGS}/corpora/{{corpus}}.log",
    # seconds each, and the calibration corpus gates the longest quantisations
    priority: 2
    conda:
        "../../envs/data.yaml"
    resources:
        mem_mb=2000,
        runtime=60,
    params:
        code=lambda wc: code_digest("corpus", config["corpora"][wc.corpus]["source"]),
        spec=lambda wc: config["corpora"][wc.corpus],
    script:
        "../scripts/build_corpus.py"
