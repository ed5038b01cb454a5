"""Pipeline transcription cell vs a minimal standalone transformers generate() loop.

Same model, clips, batch size, threads and decoding settings; the two are run
alternately (A B A B ...) in this one process after a warm-up, and the median
ratio pipeline/standalone is printed.  Target: <= 1.05.

    python benchmarks/bench_engine.py [--model base] [--batch-size 8] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import _common


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default="base")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--limit", type=int, default=16)
    args = ap.parse_args()

    import torch
    from transformers import WhisperProcessor
    from whisperquant.data.audio import load_audio
    from whisperquant.evaluate.transcribe import generate_kwargs_for, load_corpus, transcribe_corpus
    from whisperquant.quantize.modules import load_fp32

    torch.set_num_threads(args.threads)
    mdir = _common.model_dir(args.model)
    manifest = _common.corpus(args.limit)
    model = load_fp32(mdir)
    processor = WhisperProcessor.from_pretrained(str(mdir))
    utts = load_corpus(manifest)
    gen = generate_kwargs_for(model, "en", 128)

    def standalone() -> float:
        # The loop a person would write: load, extract, generate, decode; same batches.
        ordered = sorted(utts, key=lambda u: (-u.duration, u.id))
        t0 = time.perf_counter()
        with torch.no_grad():
            for i in range(0, len(ordered), args.batch_size):
                batch = ordered[i : i + args.batch_size]
                audio = [load_audio(u.audio_path) for u in batch]
                feats = processor(audio, sampling_rate=16000, return_tensors="pt").input_features
                out = model.generate(feats, **gen)
                processor.batch_decode(out, skip_special_tokens=True)
        return time.perf_counter() - t0

    def pipeline() -> float:
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            transcribe_corpus(model, processor, utts, Path(tmp) / "t.jsonl", batch_size=args.batch_size,
                              generate_kwargs=gen, progress=False)
            return time.perf_counter() - t0

    standalone()  # warm-up (allocator, kernels)
    ratios, a_times, b_times = [], [], []
    for _ in range(args.repeats):
        a, b = pipeline(), standalone()
        a_times.append(a)
        b_times.append(b)
        ratios.append(a / b)
    audio_s = sum(u.duration for u in utts)
    print(f"model {args.model}, {len(utts)} clips ({audio_s:.1f} s audio), batch {args.batch_size}, "
          f"threads {args.threads}, {args.repeats} pairs")
    print(_common.table([
        {"loop": "pipeline (transcribe_corpus)", "median_s": statistics.median(a_times),
         "rtfx": audio_s / statistics.median(a_times)},
        {"loop": "standalone generate()", "median_s": statistics.median(b_times),
         "rtfx": audio_s / statistics.median(b_times)},
    ], ["loop", "median_s", "rtfx"]))
    print(f"ratio pipeline/standalone: median {statistics.median(ratios):.3f} "
          f"(min {min(ratios):.3f}, max {max(ratios):.3f}); target <= 1.05")


if __name__ == "__main__":
    main()
