"""Batch-size sweep and length-sorted vs unsorted batches for one model (fp32).

    python benchmarks/bench_batching.py [--model base] [--sizes 1,4,8,16]
"""

from __future__ import annotations

import argparse
import random
import time

import _common


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default="base")
    ap.add_argument("--sizes", default="1,4,8,16")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--limit", type=int, default=16)
    args = ap.parse_args()

    import torch
    from transformers import WhisperProcessor
    from whisperquant.data.audio import load_audio
    from whisperquant.evaluate.transcribe import generate_kwargs_for, load_corpus
    from whisperquant.quantize.modules import load_fp32

    torch.set_num_threads(args.threads)
    mdir = _common.model_dir(args.model)
    model, processor = load_fp32(mdir), WhisperProcessor.from_pretrained(str(mdir))
    utts = load_corpus(_common.corpus(args.limit))
    audio = {u.id: load_audio(u.audio_path) for u in utts}
    gen = generate_kwargs_for(model, "en", 128)
    total = sum(u.duration for u in utts)

    def run(order, bs) -> float:
        t0 = time.perf_counter()
        with torch.no_grad():
            for i in range(0, len(order), bs):
                b = order[i : i + bs]
                f = processor.feature_extractor([audio[u.id] for u in b], sampling_rate=16000,
                                                return_tensors="pt").input_features
                model.generate(f, **gen)
        return time.perf_counter() - t0

    sorted_order = sorted(utts, key=lambda u: (-u.duration, u.id))
    shuffled = list(utts)
    random.Random(0).shuffle(shuffled)
    run(sorted_order[:2], 2)  # warm-up
    rows = []
    for bs in (int(s) for s in args.sizes.split(",")):
        s, u = run(sorted_order, bs), run(shuffled, bs)
        rows.append({"batch": bs, "sorted_rtfx": total / s, "unsorted_rtfx": total / u, "sorted/unsorted_time": s / u})
    print(f"model {args.model} fp32, {len(utts)} clips ({total:.1f} s), threads {args.threads}")
    print(_common.table(rows, ["batch", "sorted_rtfx", "unsorted_rtfx", "sorted/unsorted_time"]))


if __name__ == "__main__":
    main()
