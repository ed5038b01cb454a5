# Model import: each configured Whisper as an fp32 transformers checkpoint.


rule import_model:
    input:
        source=model_source_input,
    output:
        directory(f"{RESOURCES}/models/{{model}}"),
    log:
        f"{LOGS}/models/{{model}}.log",
    conda:
        "../../envs/quantize.yaml"
    resources:
        mem_mb=lambda wc: model_mem_mb(wc.model, 2.0),
        runtime=60,
    params:
        code=code_digest("model"),
        spec=lambda wc: model_params(config["models"][wc.model]),
    script:
        "../scripts/import_model.py"
