"""The work of each Snakemake rule, as plain functions (the scripts only unpack ``snakemake``).

Data flows one way: corpus/model -> quantize -> transcribe -> score -> aggregate.
Failure policy: only a backend's typed :class:`~whisperquant.quantize.LibraryLimitation`
("this library cannot do this": a missing kernel, a shape it rejects) becomes a
``failed`` (or, for a device that is not there, ``unsupported``) record naming
the log, so the rest of the grid goes on.  Anything else -- our own bugs
(TypeError, AttributeError...), out-of-memory, I/O, bad input -- fails the job
with its traceback in the log, so Snakemake's ``retries`` can act and a bug
never hides behind a row.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import traceback
from pathlib import Path

from .evaluate.host import host_record
from .models.transformers_import import hide_unused_integrations
from .records import (
    QuantRecord,
    ScoreRecord,
    SensitivityRecord,
    TimingRecord,
    read_json,
    write_record,
    write_text,
    written_dir,
)

log = logging.getLogger("whisperquant")


class _Tee:
    """Duplicate a stream into the job's log file (progress bars, warnings, tracebacks)."""

    def __init__(self, stream, path: Path) -> None:
        self.stream, self.file = stream, open(path, "a", encoding="utf-8", buffering=1)  # noqa: SIM115

    def write(self, data: str) -> int:
        self.file.write(data)
        return self.stream.write(data)

    def flush(self) -> None:
        self.file.flush()
        self.stream.flush()

    def __getattr__(self, name):
        return getattr(self.stream, name)


def setup_logging(log_file: str | Path | None) -> None:
    """Send logging, warnings, progress bars and any traceback to the rule's log file too."""
    import sys
    import warnings

    if log_file:
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        Path(log_file).write_text("")
        sys.stderr = _Tee(sys.__stderr__, Path(log_file))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s",
                        handlers=[logging.StreamHandler(sys.stderr)], force=True)
    warnings.filterwarnings("ignore", message="MatMul8bitLt")


def set_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(max(1, int(threads)))
    torch.manual_seed(0)


def limitation_status(e: Exception) -> str:
    """``unsupported`` for what the host lacks (:class:`~.quantize.HostLimitation`), else ``failed``."""
    from .quantize import HostLimitation

    return "unsupported" if isinstance(e, HostLimitation) else "failed"


# --------------------------------------------------------------------------- models


def import_model_job(name: str, spec: dict, out_dir: str | Path, cache_dir: str | Path) -> None:
    from .models.importers import import_model

    hide_unused_integrations()
    out = import_model(name, spec, out_dir, cache_dir)
    dims = spec.get("dims") or {}
    cfg = read_json(Path(out) / "config.json")
    found = {"d_model": cfg["d_model"], "ffn_dim": cfg["encoder_ffn_dim"]}
    for key, want in dims.items():
        if found[key] != want:
            shutil.rmtree(out)
            raise ValueError(f"models.{name}.dims.{key}: config says {want}, the checkpoint has {found[key]}")


# --------------------------------------------------------------------------- corpora


def build_corpus_job(name: str, spec: dict, out_manifest: str | Path, cache_dir: str | Path,
                     source_manifest: str | Path | None = None) -> None:
    """Build corpus ``name`` with the module of its source (:mod:`whisperquant.data.sources`)."""
    from .data import sources

    sources.build(name, spec, Path(out_manifest).parent, cache_dir, source_manifest)


# --------------------------------------------------------------------------- graphs


def export_graphs_job(model_dir: str | Path, out_dir: str | Path) -> None:
    """Export the fp32 checkpoint as the ONNX graphs every ONNX Runtime and OpenVINO scheme of it is built
    from (:mod:`whisperquant.models.onnx_export`), written whole or not at all."""
    from .models.onnx_export import GRAPH_FILES, export_checkpoint

    hide_unused_integrations()
    out_dir = Path(out_dir)
    with written_dir(out_dir) as tmp:
        export_checkpoint(Path(model_dir), tmp)
    log.info("%s: %s", out_dir, {f: (out_dir / f).stat().st_size for f in GRAPH_FILES})


# --------------------------------------------------------------------------- quantize


def quantize_job(model: str, model_dir: str | Path, scheme: str, params: dict, out_dir: str | Path,
                 calibration_manifest: str | Path | None, calibration_settings: dict | None,
                 log_file: str | Path, sensitivity_csv: str | Path | None = None,
                 declared_mem_mb: int | None = None, graphs_dir: str | Path | None = None) -> None:
    """Quantise, save and size one (model, scheme); a LibraryLimitation becomes a failed record.

    The record keeps the job's peak resident memory beside the memory its rule declared
    (``declared_mem_mb``, what a SLURM job is held to), and the log warns when the peak exceeds it.

    The artifact is ``out_dir``; its record (sizes, the sha256 of every artifact file) is
    ``<out_dir>.json`` beside it (:func:`whisperquant.quantize.artifact.record_path`).  A scheme
    with a ``mixed:`` block is quantised with the per-layer formats planned from
    ``sensitivity_csv``; the plan and the parameters it became are in the record.  ``graphs_dir``: the
    model's exported fp32 graphs (:func:`export_graphs_job`), for the libraries that build from them.
    """
    from .quantize import LibraryLimitation, get_backend
    from .quantize.artifact import DIGESTS_KEY, file_digests, record_path
    from .quantize.build import build_artifact
    from .quantize.calibration import load_calibration

    out_dir = Path(out_dir)
    library = params["library"]
    hide_unused_integrations(library)
    backend = get_backend(library)
    p = {k: v for k, v in params.items() if k != "library"}
    record: QuantRecord = {"model": model, "scheme": scheme, "library": library, "params": p,
              "bits": backend.bits(p), "method": backend.method(p), "compute_dtype": backend.compute_dtype(p, "cpu"),
              "host": host_record(1)}
    if graphs_dir and backend.uses_graphs:
        record["graphs"] = str(graphs_dir)
    calibration = None
    if backend.needs_calibration(p):
        calibration, utts = load_calibration(model_dir, calibration_manifest, calibration_settings)
        record.update(calibration_utterances=utts, calibration_tokens=calibration.max_new_tokens)
    from .evaluate.memory import peak_rss_mb

    with written_dir(out_dir) as tmp:
        try:
            build_artifact(record, backend, Path(model_dir), scheme, p, calibration, tmp, sensitivity_csv,
                           Path(graphs_dir) if graphs_dir else None)
        except LibraryLimitation as e:
            log.error("%s cannot quantise this: %s\n%s", library, e, traceback.format_exc())
            record.update(status=limitation_status(e), reason=f"{library}: {e}"[:500], log=str(log_file))
        record["peak_rss_mb"] = round(peak_rss_mb(), 1)
        if declared_mem_mb:
            record["declared_mem_mb"] = int(declared_mem_mb)
            if record["peak_rss_mb"] > declared_mem_mb:
                log.warning("%s/%s: peak memory %.0f MB exceeds the %d MB its rule declares (resources.mem_mb): "
                            "a cluster would kill this job", model, scheme, record["peak_rss_mb"], declared_mem_mb)
        record[DIGESTS_KEY] = file_digests(tmp)  # the finished artifact, as every later job must find it
    # beside the artifact: rule quantize's declared `record` output
    write_record(record_path(out_dir), QuantRecord, record)
    log.info("%s/%s: %s", model, scheme, {k: record.get(k) for k in ("status", "artifact_bytes", "param_bytes")})


# --------------------------------------------------------------------------- sensitivity


def sensitivity_job(model: str, model_dir: str | Path, scheme: str, params: dict,
                    calibration_manifest: str | Path, calibration_settings: dict,
                    out_csv: str | Path, out_json: str | Path, out_plot: str | Path) -> None:
    """Layer sensitivity of ``scheme`` on ``model`` (:mod:`whisperquant.evaluate.sensitivity`): table, facts, plot."""
    import pandas as pd

    from .evaluate.sensitivity import COLUMNS, layer_sensitivity
    from .quantize import get_backend
    from .quantize.calibration import load_calibration
    from .report.sensitivity_plot import plot_sensitivity

    library = params["library"]
    hide_unused_integrations(library)
    p = {k: v for k, v in params.items() if k != "library"}
    calibration, utts = load_calibration(model_dir, calibration_manifest, calibration_settings)
    rows, facts = layer_sensitivity(Path(model_dir), library, p, calibration)
    df = pd.DataFrame(rows, columns=list(COLUMNS))
    write_text(out_csv, df.to_csv(index=False, float_format="%.6g", lineterminator="\n"))
    top = df.nlargest(5, "kl")[["module", "kl", "sqnr_db", "top1_pct"]].to_dict("records")
    write_record(out_json, SensitivityRecord, {"model": model, "scheme": scheme, **facts,
                                               "bits": get_backend(library).bits(p),
                                               "calibration_utterances": utts, "top5_by_kl": top})
    plot_sensitivity(df, Path(out_plot).with_suffix(""), f"{model} / {scheme}")
    log.info("%s/%s: %d layers in %.0f s; most sensitive %s", model, scheme, len(rows), facts["total_s"],
             [t["module"] for t in top])


# --------------------------------------------------------------------------- transcribe


def transcribe_job(model: str, model_dir: str | Path, scheme: str, params: dict, artifact_dir: str | Path,
                   device: str, corpus_manifest: str | Path, out_jsonl: str | Path, out_timing: str | Path,
                   transcription: dict, threads: int, log_file: str | Path, exclusive: bool = False, *,
                   code: str, thread_binding: dict | None = None) -> None:
    """Load the saved artifact once and transcribe the corpus (resumable), timing it by the protocol.

    ``model_mem_mb`` is the growth of the process' resident memory from just before
    the artifact is loaded to just after (garbage collected, freed heap pages handed
    back: :func:`whisperquant.evaluate.memory.load_measured`): what the loaded model holds, with no fp32 copy on
    the way for the backends that load onto a meta skeleton.  ``exclusive`` says whether
    the job held every core of its machine; ``thread_binding`` what
    :func:`whisperquant.evaluate.threads.bind_openmp_threads` did before torch loaded; ``code`` is
    the stage's code digest for the cell's library (the rule's ``code`` parameter,
    :func:`whisperquant.provenance.code_digest`): a partial transcript made by other code is not resumed.
    """
    import torch

    hide_unused_integrations(params["library"])  # before anything imports transformers
    from transformers import WhisperProcessor

    from .evaluate.memory import load_measured
    from .evaluate.transcribe import fingerprint, generate_kwargs_for, load_corpus, partial_path, transcribe_corpus
    from .quantize import LibraryLimitation, get_backend
    from .quantize.artifact import verified_record

    set_threads(threads)
    qrec = verified_record(artifact_dir)
    backend = get_backend(params["library"])
    p = {k: v for k, v in params.items() if k != "library"}
    if "mixed" in p and qrec["status"] == "ok":
        p = qrec["resolved_params"]  # the per-layer formats the plan chose when the artifact was made
    base: TimingRecord = {"model": model, "scheme": scheme, "device": device, "library": params["library"],
            "corpus_manifest": str(corpus_manifest), "compute_dtype": backend.compute_dtype(p, device)}
    if qrec["status"] != "ok":
        write_text(out_jsonl, "")
        unsupported = qrec["status"] == "unsupported"  # the quantising host lacked what the scheme needs
        write_record(out_timing, TimingRecord, {
            **base, "status": "unsupported" if unsupported else "failed",
            "reason": ("" if unsupported else "quantisation failed: ") + qrec["reason"], "log": qrec["log"]})
        return
    if device == "cuda" and not torch.cuda.is_available():
        write_text(out_jsonl, "")
        write_record(out_timing, TimingRecord, {
            **base, "status": "unsupported", "log": str(log_file),
            "reason": "no CUDA device where this job ran (torch.cuda.is_available() is False)"})
        return
    try:
        model_obj, model_mem_mb, load_s = load_measured(backend, Path(model_dir), p, Path(artifact_dir), device)
        dtype = backend.input_dtype(p, device)
        if device == "cuda" and transcription.get("cuda_compile"):
            # Opt-in: a static KV cache lets torch.compile specialise the decoder step once.
            model_obj.generation_config.cache_implementation = "static"
            model_obj.forward = torch.compile(model_obj.forward, mode="reduce-overhead", fullgraph=False)
        processor = WhisperProcessor.from_pretrained(str(model_dir))
        utts = load_corpus(corpus_manifest)
        gen = generate_kwargs_for(model_obj, transcription["language"], transcription["max_new_tokens"])
        # Everything the finished batches depend on: a partial made by other code, another
        # artifact or other settings is discarded instead of resumed.
        fp = fingerprint(cell=base, params=p, gen=gen, batch=transcription["batch_size"], artifact=qrec,
                         code=code, manifest=Path(corpus_manifest).read_text())
        timing = transcribe_corpus(model_obj, processor, utts, out_jsonl, batch_size=transcription["batch_size"],
                                   generate_kwargs=gen, device=device, dtype=dtype, fp=fp, keep_partial=True)
        # Speed: the fixed timing workload, paired against fp32 in this process (evaluate/speed.py).
        # Memory above was the cell's model alone; the reference is loaded only now.
        timing.update(time_against_fp32(model_obj, gen, dtype, backend, p, model_dir, processor, utts, device,
                                        transcription, threads))
    except LibraryLimitation as e:
        log.error("%s cannot run this: %s\n%s", params["library"], e, traceback.format_exc())
        write_text(out_jsonl, "")
        partial_path(out_jsonl).unlink(missing_ok=True)  # a row with its reason: no batches to keep
        write_record(out_timing, TimingRecord, {**base, "status": limitation_status(e),
                                                "reason": f"{params['library']}: {e}"[:500],
                                                "log": str(log_file), "host": host_record(threads, device)})
        return
    write_record(out_timing, TimingRecord, {**base, **timing, "status": "ok", "load_s": round(load_s, 3),
                                            "threads": threads, "exclusive": bool(exclusive),
                                            "thread_binding": thread_binding or {"bound": None,
                                                                                 "reason": "not requested"},
                                            "model_mem_mb": round(model_mem_mb, 1),
                                            "host": host_record(threads, device)})
    # the accuracy pass's batches were kept until now: a failure or a kill while timing redoes only the timing
    partial_path(out_jsonl).unlink(missing_ok=True)


def time_against_fp32(model_obj, gen: dict, dtype, backend, params: dict, model_dir: str | Path, processor,
                      utts: list, device: str, transcription: dict, threads: int) -> dict:
    """The cell's speed by the paired protocol (:mod:`.evaluate.speed`): its model against the fp32
    model of the same checkpoint and device, alternating on the corpus' fixed timing workload.

    The fp32 cell is its own reference: its pairs decode the same model twice, which shows
    the protocol's own noise on this host (a speedup interval around 1.00).
    """
    import gc

    from .evaluate.memory import hold_freed_heap
    from .evaluate.speed import EnergyMeter, RaisedPriority, TimingSettings, paired_timing, timing_workload
    from .evaluate.transcribe import decode_batch, generate_kwargs_for
    from .quantize import get_backend

    settings = TimingSettings.from_config(transcription.get("timing"))
    batch = timing_workload(utts, settings.units)
    same = backend.library == "fp32" and params.get("dtype", "float32") == "float32"
    if same:
        ref, ref_gen, ref_dtype = model_obj, gen, dtype
    else:
        ref = get_backend("fp32").load(Path(model_dir), {}, Path(model_dir), device)
        ref_gen = generate_kwargs_for(ref, transcription["language"], transcription["max_new_tokens"])
        ref_dtype = None

    def run(model, g, dt):
        return lambda b: decode_batch(model, processor, b, g, device, dt)[1:]

    from tqdm import tqdm

    # From here on a decode's speed must not depend on the heap's history (evaluate/memory.py); the
    # accuracy pass before it, whose peak memory is the record's, ran with glibc's defaults, as a user's would.
    allocator = hold_freed_heap()
    bar = tqdm(desc="paired timing", unit="pair", file=sys.stderr)
    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    try:
        with RaisedPriority(settings.nice) as priority:
            out = paired_timing(run(model_obj, gen, dtype), run(ref, ref_gen, ref_dtype), batch, settings,
                                cores=1 if device == "cuda" else threads, same_model=same,
                                energy=EnergyMeter(device), on_pair=lambda n: bar.update(1))
    finally:
        bar.close()
    # what the host was doing: the 1-minute load average before and after (this job's own threads count)
    out.update(timing_priority=priority.outcome, allocator=allocator, load_1m_before=load_before,
               load_1m_after=os.getloadavg()[0] if load_before is not None else None)
    if device == "cuda":
        out["gpu_s_per_audio_h"] = out.pop("core_s_per_audio_h")
    out["timing_units"] = [u.id for u in batch]
    log.info("paired timing: speedup vs fp32 %.3f [%.3f, %.3f] over %d pairs (%s); RTFx %.2f, fp32 %.2f",
             out["speedup_vs_fp32"], out["speedup_low"], out["speedup_high"], out["pairs"], out["timing_stop"],
             out["rtfx"], out["fp32_rtfx"])
    del ref
    gc.collect()
    return out


# --------------------------------------------------------------------------- score


def score_job(transcript: str | Path, timing: str | Path, manifest: str | Path, out_json: str | Path,
              out_tsv: str | Path) -> None:
    """Per-utterance word errors and hallucination flags, the corpus WER (errors / reference words)
    and the numbers of empty and looping hypotheses (:mod:`whisperquant.evaluate.utterance_scores`)."""
    from .evaluate.utterance_scores import UTT_HEADER, score_transcript

    t = read_json(timing)
    if t.get("status") != "ok":
        write_text(out_tsv, UTT_HEADER + "\n")
        write_record(out_json, ScoreRecord, {"status": t.get("status", "failed"), "reason": t.get("reason"),
                                             "log": t.get("log")})
        return
    lines, totals = score_transcript(transcript, manifest)
    write_text(out_tsv, "\n".join(lines) + "\n")
    write_record(out_json, ScoreRecord, {"status": "ok", **totals})
