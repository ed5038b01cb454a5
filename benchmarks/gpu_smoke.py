"""One short CUDA smoke run of every backend on a small model (for a machine with an NVIDIA GPU).

For each scheme: quantise on the GPU (bitsandbytes and HQQ quantise at load),
save, reload with ``device="cuda"``, transcribe the clips through the
pipeline's own engine (CUDA-synchronised timing, model load excluded), and
print RTFx, peak GPU memory and WER.  A scheme that cannot run prints its
reason instead of stopping the others.

    python benchmarks/gpu_smoke.py [--model tiny.en] [--limit 4]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import _common

SCHEMES = ["fp32", "quanto-w8", "quanto-w4", "hqq-4bit-g64", "bnb-int8", "bnb-nf4"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default="tiny.en")
    ap.add_argument("--limit", type=int, default=4)
    ap.add_argument("--schemes", default=",".join(SCHEMES))
    args = ap.parse_args()

    import torch
    from transformers import WhisperProcessor
    from whisperquant.evaluate.scoring import corpus_errors
    from whisperquant.evaluate.transcribe import generate_kwargs_for, load_corpus, transcribe_corpus
    from whisperquant.quantize import get_backend

    if not torch.cuda.is_available():
        raise SystemExit("no CUDA device: this smoke test is for a machine with an NVIDIA GPU")
    print(f"device: {torch.cuda.get_device_name(0)}, torch {torch.__version__}")
    cfg = _common.config()
    mdir = _common.model_dir(args.model)
    processor = WhisperProcessor.from_pretrained(str(mdir))
    utts = load_corpus(_common.corpus(args.limit))
    rows = []
    for name in args.schemes.split(","):
        spec = dict(cfg["schemes"][name])
        backend = get_backend(spec.pop("library"))
        params = backend.resolve(name, spec)
        reason = backend.unsupported_reason(params, "cuda")
        if reason:
            rows.append({"scheme": name, "status": f"unsupported: {reason}"})
            continue
        try:
            with tempfile.TemporaryDirectory() as tmp:
                model = backend.quantize(mdir, params, None)
                backend.save(model, params, Path(tmp))
                del model
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
                model = backend.load(mdir, params, Path(tmp), "cuda")
                dtype = torch.float16 if name == "fp32" else None
                if dtype is not None:
                    model = model.to(dtype)
                out = Path(tmp) / "t.jsonl"
                t = transcribe_corpus(model, processor, utts, out, batch_size=8, device="cuda", dtype=dtype,
                                      generate_kwargs=generate_kwargs_for(model, "en", 128), progress=False)
                hyps = [json.loads(line) for line in out.read_text().splitlines()]
                wer = corpus_errors((h["reference"], h["hypothesis"]) for h in hyps).wer
            rows.append({"scheme": name, "status": "ok", "rtfx": t["rtfx"], "peak_gpu_mb": t["peak_gpu_mb"],
                         "wer_pct": 100 * wer})
        except Exception as e:
            rows.append({"scheme": name, "status": f"failed: {type(e).__name__}: {e}"[:200]})
    print(_common.table(rows, ["scheme", "status", "rtfx", "peak_gpu_mb", "wer_pct"]))


if __name__ == "__main__":
    main()
