"""whisperquant: post-training quantisation of Whisper, from checkpoint to WER report.

The package mirrors the workflow's DAG, data flowing one way:

* :mod:`whisperquant.data` -- pinned artifacts, audio, manifests, one module per corpus source;
* :mod:`whisperquant.models` -- importing each model as an fp32 transformers checkpoint;
* :mod:`whisperquant.quantize` -- the backend interface, its lazy registry, one module per library;
* :mod:`whisperquant.evaluate` -- transcription, scoring and statistics;
* :mod:`whisperquant.report` -- the summary table, Markdown, plots, the study comparison;
* :mod:`whisperquant.config` (validation, the grid of cells), :mod:`whisperquant.provenance`
  (each stage's code digest), :mod:`whisperquant.records` (what each stage writes) and
  :mod:`whisperquant.jobs` (the work of each rule: read, call the stage, write).

Identifiers are spelled in American English (quantize, normalize, materialize); prose may be British.

Importing it imports no torch.
"""

__version__ = "0.1.0"
