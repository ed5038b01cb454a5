# Quantise each (model, scheme) once; every device and corpus reuses the artifact.


rule export_graphs:
    # The fp32 ONNX graphs (encoder, decoder step) every ONNX Runtime and OpenVINO scheme is built from.
    input:
        model=f"{RESOURCES}/models/{{model}}",
    output:
        graphs=artifact_output(f"{RESULTS}/graphs/{{model}}"),
    log:
        f"{LOGS}/export_graphs/{{model}}.log",
    conda:
        "../../envs/quantize.yaml"
    threads: 1
    resources:
        # below the ONNX Runtime int8 job that exported for itself (1,765 MB on base): no calibration
        mem_mb=lambda wc: model_mem_mb(wc.model, quantize_mem_factor(False)),
        runtime=30,
    params:
        code=code_digest("graphs"),
    script:
        "../scripts/export_graphs.py"


rule quantize:
    input:
        model=f"{RESOURCES}/models/{{model}}",
        calibration=calibration_input,
        sensitivity=mixed_sensitivity_input,
        graphs=graphs_input,
    output:
        # the artifact (temp() with `artifacts: temp`: deleted once its cells are transcribed) and its
        # record beside it, which the report reads: deleting an artifact never loses the report
        artifact=artifact_output(f"{RESULTS}/quantized/{{model}}/{{scheme}}"),
        record=f"{RESULTS}/quantized/{{model}}/{{scheme}}.json",
    log:
        f"{LOGS}/quantize/{{model}}/{{scheme}}.log",
    # calibrated schemes take minutes where the others take seconds: start them first, so the
    # run's transcriptions (which hold every core) are not left waiting for one behind the rest
    priority: lambda wc: 1 if needs_calibration(wc.scheme) else 0
    conda:
        "../../envs/quantize.yaml"
    threads: 1
    resources:
        # measured peaks with a margin (config/grid.py): calibration is what needs twice the model's mem_mb
        mem_mb=lambda wc: model_mem_mb(wc.model, quantize_mem_factor(needs_calibration(wc.scheme))),
        runtime=60,
    params:
        code=lambda wc: code_digest("quantize", SCHEMES[wc.scheme]["library"], calibrated=needs_calibration(wc.scheme)),
        scheme=scheme_params,
        calibration=calibration_params,
    script:
        "../scripts/quantize.py"
