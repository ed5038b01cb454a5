# Greedy batched transcription of one cell (model, scheme, device, corpus).


rule transcribe:
    input:
        model=f"{RESOURCES}/models/{{model}}",
        artifact=f"{RESULTS}/quantized/{{model}}/{{scheme}}",
        record=f"{RESULTS}/quantized/{{model}}/{{scheme}}.json",  # read beside the artifact, and checked
        corpus=f"{RESOURCES}/corpora/{{corpus}}/manifest.tsv",
    output:
        transcript=f"{RESULTS}/transcripts/{{model}}/{{scheme}}/{{device}}/{{corpus}}.jsonl",
        timing=f"{RESULTS}/transcripts/{{model}}/{{scheme}}/{{device}}/{{corpus}}.timing.json",
    log:
        f"{LOGS}/transcribe/{{model}}/{{scheme}}/{{device}}/{{corpus}}.log",
    conda:
        "../../envs/quantize.yaml"
    threads: transcribe_threads
    resources:
        mem_mb=lambda wc: model_mem_mb(wc.model, 1.5),
        runtime=config["resources_per_rule"]["runtime_minutes"],
        gpu=lambda wc: 1 if wc.device == "cuda" else 0,
    params:
        code=lambda wc: code_digest("transcribe", SCHEMES[wc.scheme]["library"]),
        scheme=scheme_params,
        transcription=lambda wc: transcription_params(config, wc.device),
    script:
        "../scripts/transcribe.py"
