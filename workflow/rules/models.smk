# Model import: each configured Whisper as an fp32 transformers checkpoint.


rule import_model:
    output:
        directory(f"{RESOURCES}/models/{{model}}"),
    params:
        code=code_digest("model"),
        spec=lambda wc: model_params(config["models"][wc.model]),
    log:
        f"{LOGS}/models/{{model}}.log",
    resources:
        mem_mb=lambda wc: model_mem_mb(wc.model, 2.0),
        runtime=60,
    conda:
        "../../envs/quantize.yaml"
    script:
        "../scripts/import_model.py"
