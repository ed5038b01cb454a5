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

import functools
import json
import logging
import os
import shutil
import sys
import time
import traceback
from pathlib import Path

from .evaluate.host import host_record
from .records import read_json, write_json, write_text

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


# --------------------------------------------------------------------------- quantize


_BUDGET_ATTEMPTS = 4


def mixed_planner(model_dir: str | Path, backend, params: dict, sensitivity_csv: str | Path):
    """The planner of a scheme's ``mixed:`` block (:mod:`.quantize.mixed`): ``plan(overshoot)`` gives
    (facts for the quantize record, the library's parameters for the plan).

    The table, the architecture and the fixed bytes are read once; a budget scheme is planned
    again with ``overshoot`` (bytes the byte model missed on the previous plan) off its budget.
    """
    import csv

    from .quantize import mixed
    from .quantize.linear_swap import WEIGHTS
    from .quantize.modules import architecture, target_linears

    spec = params["mixed"]
    arch = architecture(Path(model_dir))
    targets = target_linears(arch, params["targets"])
    numel = {m: arch.get_submodule(m).weight.numel() for m in targets}
    with open(sensitivity_csv, newline="", encoding="utf-8") as f:
        table = list(csv.DictReader(f))

    def layer_bytes(m: str, w) -> float:
        return backend.weight_bytes(params, numel[m], w)

    if "budget_mb" in spec:
        facts_file = Path(sensitivity_csv).with_suffix(".json")
        facts = read_json(facts_file)
        if "bits" not in facts:
            raise ValueError(f"{facts_file}: no 'bits' (the width the layers were measured at); "
                             "rerun the sensitivity rule")
        # everything but the target Linears' weights, as the fp32 checkpoint stores it
        fixed = Path(model_dir, WEIGHTS).stat().st_size - sum(layer_bytes(m, mixed.FLOAT) for m in targets)

    def plan(overshoot: float = 0.0) -> tuple[dict, dict]:
        if "keep" in spec:
            chosen = mixed.rule_plan(table, targets, spec["keep"], spec.get("keep_bits", mixed.FLOAT),
                                     params.get("bits", backend.bits(params)))
            info = {}
        else:
            try:
                chosen = mixed.budget_plan(table, targets, float(facts["bits"]), spec["choices"],
                                           spec["budget_mb"] * 1e6 - overshoot, fixed, layer_bytes)
            except ValueError as e:
                raise ValueError(f"{e} (sensitivity table of {spec['sensitivity']})") from None
            info = {"estimated_bytes": round(fixed + sum(layer_bytes(m, w) for m, w in chosen.items()))}
        resolved = mixed.resolved_params(params, chosen, backend.bits(params))
        return {**info, "sensitivity": spec["sensitivity"], "widths": mixed.summary(chosen),
                "mean_bits": round(mixed.mean_bits(chosen, numel), 4), "plan": chosen}, resolved

    return plan


def load_calibration(model_dir: str | Path, manifest: str | Path, settings: dict):
    """The calibration set of a calibrated job: the first ``settings['utterances']`` utterances of
    ``manifest`` as log-mel batches, decoded with ``settings``' token limit and language; and their ids."""
    from transformers import WhisperProcessor

    from .data.audio import load_audio
    from .evaluate.transcribe import load_corpus
    from .quantize.calibration import CalibrationSet, calibration_features

    utts = load_corpus(manifest)[: int(settings["utterances"])]
    processor = WhisperProcessor.from_pretrained(str(model_dir))
    batches = calibration_features(processor, [load_audio(u.audio_path, u.id) for u in utts])
    return (CalibrationSet(batches, int(settings["max_new_tokens"]), settings.get("language", "en")),
            [u.id for u in utts])


def quantize_job(model: str, model_dir: str | Path, scheme: str, params: dict, out_dir: str | Path,
                 calibration_manifest: str | Path | None, calibration_settings: dict | None,
                 log_file: str | Path, sensitivity_csv: str | Path | None = None) -> None:
    """Quantise, save and size one (model, scheme); a LibraryLimitation becomes a failed record.

    The artifact is ``out_dir``; its record (sizes, the sha256 of every artifact file) is
    ``<out_dir>.json`` beside it (:func:`whisperquant.quantize.artifact.record_path`).  A scheme
    with a ``mixed:`` block is quantised with the per-layer formats planned from
    ``sensitivity_csv``; the plan and the parameters it became are in the record.
    """
    from .quantize import LibraryLimitation, get_backend
    from .quantize.artifact import DIGESTS_KEY, file_digests, record_path
    from .quantize.modules import linear_names

    out_dir = Path(out_dir)
    library = params["library"]
    backend = get_backend(library)
    p = {k: v for k, v in params.items() if k != "library"}
    tmp = out_dir.with_name(f".{out_dir.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    record = {"model": model, "scheme": scheme, "library": library, "params": p,
              "bits": backend.bits(p), "method": backend.method(p), "compute_dtype": backend.compute_dtype(p, "cpu"),
              "host": host_record(1)}
    config_params = p
    calibration = None
    if backend.needs_calibration(p):
        calibration, utts = load_calibration(model_dir, calibration_manifest, calibration_settings)
        record.update(calibration_utterances=utts, calibration_tokens=calibration.max_new_tokens)
    budget = (p.get("mixed") or {}).get("budget_mb")
    planner = mixed_planner(model_dir, backend, p, sensitivity_csv) if "mixed" in p else None
    overshoot = 0.0
    for attempt in range(1, _BUDGET_ATTEMPTS + 1):
        if planner is not None:
            info, p = planner(overshoot)
            record.update(mixed={**info, "attempts": attempt}, resolved_params=p, bits=info["mean_bits"],
                          method=f"{backend.method(config_params)}; mixed from {info['sensitivity']}'s "
                                 "sensitivity: " + ", ".join(f"{n}x {w}" for w, n in info["widths"].items()))
        t0 = time.perf_counter()
        try:
            backend.build(Path(model_dir), p, calibration, tmp)  # quantise and save, or an engine's conversion
            record["quantize_s"] = round(time.perf_counter() - t0, 3)
        except LibraryLimitation as e:
            log.error("%s cannot quantise this: %s\n%s", library, e, traceback.format_exc())
            record.update(status=limitation_status(e), reason=f"{library}: {e}"[:500], log=str(log_file))
            break
        names, _ = linear_names(Path(model_dir), p["targets"])
        record.update(status="ok", quantized_modules=len(names), **backend.sizes(tmp, names))
        if budget is None or record["artifact_bytes"] <= budget * 1e6:
            break
        # The allocator's byte model leaves out the file's per-tensor header entries and padding:
        # plan again with the budget lowered by what the model missed on this plan.
        overshoot = max(overshoot, record["artifact_bytes"] - record["mixed"]["estimated_bytes"])
        log.info("plan %d: %d bytes over the %.3f MB budget; planning again", attempt,
                 record["artifact_bytes"] - budget * 1e6, budget)
        shutil.rmtree(tmp)
        tmp.mkdir()
    else:
        raise ValueError(f"schemes.{scheme}.mixed.budget_mb: {budget} MB not met after {_BUDGET_ATTEMPTS} plans "
                         f"(last artifact {record['artifact_bytes'] / 1e6:.3f} MB)")
    record[DIGESTS_KEY] = file_digests(tmp)  # the finished artifact, as every later job must find it
    if out_dir.exists():
        shutil.rmtree(out_dir)
    os.replace(tmp, out_dir)
    write_json(record_path(out_dir), record)  # beside the artifact: rule quantize's declared `record` output
    log.info("%s/%s: %s", model, scheme, {k: record.get(k) for k in ("status", "artifact_bytes", "param_bytes")})


# --------------------------------------------------------------------------- sensitivity


def sensitivity_job(model: str, model_dir: str | Path, scheme: str, params: dict,
                    calibration_manifest: str | Path, calibration_settings: dict,
                    out_csv: str | Path, out_json: str | Path, out_plot: str | Path) -> None:
    """Layer sensitivity of ``scheme`` on ``model`` (:mod:`whisperquant.evaluate.sensitivity`): table, facts, plot."""
    import pandas as pd

    from .evaluate.sensitivity import COLUMNS, layer_sensitivity
    from .quantize import get_backend
    from .report.plots import plot_sensitivity

    library = params["library"]
    p = {k: v for k, v in params.items() if k != "library"}
    calibration, utts = load_calibration(model_dir, calibration_manifest, calibration_settings)
    rows, facts = layer_sensitivity(Path(model_dir), library, p, calibration)
    df = pd.DataFrame(rows, columns=list(COLUMNS))
    write_text(out_csv, df.to_csv(index=False, float_format="%.6g", lineterminator="\n"))
    top = df.nlargest(5, "kl")[["module", "kl", "sqnr_db", "top1_pct"]].to_dict("records")
    write_json(out_json, {"model": model, "scheme": scheme, **facts, "bits": get_backend(library).bits(p),
                          "calibration_utterances": utts,
                          "top5_by_kl": top})
    plot_sensitivity(df, Path(out_plot).with_suffix(""), f"{model} / {scheme}")
    log.info("%s/%s: %d layers in %.0f s; most sensitive %s", model, scheme, len(rows), facts["total_s"],
             [t["module"] for t in top])


# --------------------------------------------------------------------------- transcribe


def verified_record(artifact_dir: str | Path) -> dict:
    """The quantize record beside ``artifact_dir``; for an ok one, the artifact's files checked against it
    (:func:`whisperquant.quantize.artifact.verify_artifact`: a changed, missing or extra file is an error)."""
    from .quantize.artifact import record_path, verify_artifact

    qrec = read_json(record_path(artifact_dir))
    if qrec.get("status") == "ok":
        verify_artifact(artifact_dir, qrec)
    return qrec


def _rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


@functools.cache
def _malloc_trim():
    """glibc's ``malloc_trim``, or None (not Linux, or a libc without it such as musl); looked up once."""
    import ctypes

    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None).malloc_trim  # the process' own symbols: glibc's where it is linked
    except (OSError, AttributeError):
        return None


def _settled_rss_mb() -> float:
    """Resident memory after garbage collection, with the C heap's freed pages handed back.

    Loading builds transient buffers (unpacking, repacking, conversions); glibc keeps
    their freed pages resident, which measured 25 MB for torch.ao's int8 prepacking
    and 65 MB for quanto int4's requantisation here -- memory the model does not hold.
    ``malloc_trim(0)`` returns them; where glibc is absent the figure includes them.
    """
    import gc

    gc.collect()
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
    return _rss_mb()


def _fault_in(model) -> None:
    """Read every plain tensor of ``model`` once, so weights a loader left memory-mapped count as resident.

    (A mapped page is resident only once touched; without this, a loader that maps
    the file would look smaller than one that reads it.)  Packed and wrapper tensors
    of the quantisation libraries are built in memory the process owns.
    """
    import torch

    if not isinstance(model, torch.nn.Module):
        return  # an engine's session: its runtime read the artifact into memory it owns
    with torch.no_grad():
        for t in [*model.parameters(), *model.buffers()]:
            if t.device.type == "cpu" and not t.is_quantized and not hasattr(t, "__tensor_flatten__") and t.numel():
                t.reshape(-1)[:: max(1, 4096 // t.element_size())].sum()  # one element per 4 KiB page


def transcribe_job(model: str, model_dir: str | Path, scheme: str, params: dict, artifact_dir: str | Path,
                   device: str, corpus_manifest: str | Path, out_jsonl: str | Path, out_timing: str | Path,
                   transcription: dict, threads: int, log_file: str | Path, exclusive: bool = False, *,
                   code: str) -> None:
    """Load the saved artifact once and transcribe the corpus (resumable), timing it by the protocol.

    ``model_mem_mb`` is the growth of the process' resident memory from just before
    the artifact is loaded to just after (garbage collected, freed heap pages handed
    back: :func:`_settled_rss_mb`): what the loaded model holds, with no fp32 copy on
    the way for the backends that load onto a meta skeleton.  ``exclusive`` says whether
    the job held every core of its machine; ``code`` is the stage's code digest for the cell's library
    (the rule's ``code`` parameter, :func:`whisperquant.config.code_digest`): a partial transcript made
    by other code is not resumed.
    """
    import torch
    from transformers import WhisperProcessor

    from .evaluate.transcribe import fingerprint, generate_kwargs_for, load_corpus, transcribe_corpus
    from .quantize import LibraryLimitation, get_backend

    set_threads(threads)
    qrec = verified_record(artifact_dir)
    backend = get_backend(params["library"])
    p = {k: v for k, v in params.items() if k != "library"}
    if "mixed" in p and qrec["status"] == "ok":
        p = qrec["resolved_params"]  # the per-layer formats the plan chose when the artifact was made
    base = {"model": model, "scheme": scheme, "device": device, "library": params["library"],
            "corpus_manifest": str(corpus_manifest), "compute_dtype": backend.compute_dtype(p, device)}
    if qrec["status"] != "ok":
        write_text(out_jsonl, "")
        unsupported = qrec["status"] == "unsupported"  # the quantising host lacked what the scheme needs
        write_json(out_timing, {**base, "status": "unsupported" if unsupported else "failed",
                                "reason": ("" if unsupported else "quantisation failed: ") + qrec["reason"],
                                "log": qrec["log"]})
        return
    if device == "cuda" and not torch.cuda.is_available():
        write_text(out_jsonl, "")
        write_json(out_timing, {**base, "status": "unsupported", "log": str(log_file),
                                "reason": "no CUDA device where this job ran (torch.cuda.is_available() is False)"})
        return
    from .quantize.modules import architecture

    architecture(Path(model_dir))  # the modelling code's imports and first-use set-up are not the model's
    rss0 = _settled_rss_mb()
    t0 = time.perf_counter()
    try:
        model_obj = backend.load(Path(model_dir), p, Path(artifact_dir), device)
        _fault_in(model_obj)
        model_mem_mb = _settled_rss_mb() - rss0
        load_s = time.perf_counter() - t0
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
                                   generate_kwargs=gen, device=device, dtype=dtype, fp=fp)
        # Speed: the fixed timing workload, paired against fp32 in this process (evaluate/speed.py).
        # Memory above was the cell's model alone; the reference is loaded only now.
        timing.update(time_against_fp32(model_obj, gen, dtype, backend, p, model_dir, processor, utts, device,
                                        transcription, threads))
    except LibraryLimitation as e:
        log.error("%s cannot run this: %s\n%s", params["library"], e, traceback.format_exc())
        write_text(out_jsonl, "")
        write_json(out_timing, {**base, "status": limitation_status(e), "reason": f"{params['library']}: {e}"[:500],
                                "log": str(log_file), "host": host_record(threads, device)})
        return
    write_json(out_timing, {**base, **timing, "status": "ok", "load_s": round(load_s, 3), "threads": threads,
                            "exclusive": bool(exclusive), "model_mem_mb": round(model_mem_mb, 1),
                            "host": host_record(threads, device)})


def time_against_fp32(model_obj, gen: dict, dtype, backend, params: dict, model_dir: str | Path, processor,
                      utts: list, device: str, transcription: dict, threads: int) -> dict:
    """The cell's speed by the paired protocol (:mod:`.evaluate.speed`): its model against the fp32
    model of the same checkpoint and device, alternating on the corpus' fixed timing workload.

    The fp32 cell is its own reference: its pairs decode the same model twice, which shows
    the protocol's own noise on this host (a speedup interval around 1.00).
    """
    import gc

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
    out.update(timing_priority=priority.outcome, load_1m_before=load_before,
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
    and the numbers of empty and looping hypotheses (:mod:`whisperquant.evaluate.regressions`)."""
    from .data.manifest import read_manifest
    from .evaluate.regressions import regression_flags
    from .evaluate.scoring import ZERO, normalize, word_errors

    header = "id\tref_words\tsubstitutions\tdeletions\tinsertions\thits\terrors\tempty\tlooping"
    t = read_json(timing)
    if t.get("status") != "ok":
        write_text(out_tsv, header + "\n")
        write_json(out_json, {"status": t.get("status", "failed"), "reason": t.get("reason"), "log": t.get("log")})
        return
    rows = [json.loads(line) for line in Path(transcript).read_text(encoding="utf-8").split("\n") if line]
    expected = {r.id: r.reference for r in read_manifest(manifest)}
    got = {r["id"] for r in rows}
    if got != set(expected):
        missing = sorted(set(expected) - got)
        raise ValueError(f"{transcript}: transcript does not cover the corpus ({len(missing)} missing, "
                         f"e.g. {missing[:1]}); refusing to score a partial transcript")
    lines = [header]
    total, empty, looping = ZERO, 0, 0
    for r in sorted(rows, key=lambda r: r["id"]):
        if r["reference"] != expected[r["id"]]:
            raise ValueError(f"utterance {r['id']}: reference in {transcript} differs from {manifest}")
        ref, hyp = normalize(r["reference"]), normalize(r["hypothesis"])
        e = word_errors(ref, hyp)  # = score_pair(reference, hypothesis), normalising once
        flags = regression_flags(ref, hyp)
        total = total + e
        empty += flags.empty
        looping += flags.looping
        lines.append("\t".join(map(str, (r["id"], e.ref_words, e.substitutions, e.deletions, e.insertions,
                                         e.hits, e.errors, int(flags.empty), int(flags.looping)))))
    write_text(out_tsv, "\n".join(lines) + "\n")
    write_json(out_json, {"status": "ok", "n_utts": len(rows), **total.asdict(), "empty_hyps": empty,
                          "looping_hyps": looping})
