# Layer sensitivity: one Linear quantised at a time, damage measured on the calibration corpus.


rule sensitivity:
    input:
        model=f"{RESOURCES}/models/{{model}}",
        calibration=f"{RESOURCES}/corpora/{CALIBRATION.get('corpus', 'calibration')}/manifest.tsv",
    output:
        csv=report(
            f"{RESULTS}/report/sensitivity/{{model}}/{{scheme}}.csv",
            caption="../report/sensitivity.rst",
            category="Layer sensitivity",
            labels={"model": "{model}", "scheme": "{scheme}", "file": "table"},
        ),
        json=f"{RESULTS}/report/sensitivity/{{model}}/{{scheme}}.json",
        png=report(
            f"{RESULTS}/report/sensitivity/{{model}}/{{scheme}}.png",
            caption="../report/sensitivity.rst",
            category="Layer sensitivity",
            labels={"model": "{model}", "scheme": "{scheme}", "file": "plot"},
        ),
    log:
        f"{LOGS}/sensitivity/{{model}}/{{scheme}}.log",
    conda:
        "../../envs/quantize.yaml"
    threads: transcribe_threads
    resources:
        mem_mb=lambda wc: model_mem_mb(wc.model, 2.0),
        runtime=120,
    params:
        code=lambda wc: code_digest("sensitivity", SCHEMES[wc.scheme]["library"], calibrated=True),
        scheme=scheme_params,
        calibration={
            "utterances": CALIBRATION["sensitivity_utterances"],
            "max_new_tokens": CALIBRATION["max_new_tokens"],
            "language": TRANSCRIPTION.get("language", "en"),
        },
    script:
        "../scripts/sensitivity.py"
