"""How long Snakemake takes to plan: the study's configuration, a synthetic 2,000-cell grid, a no-op rerun.

    python benchmarks/bench_dag.py [--repeats 5] [--only paper|synthetic|floor|noop]

Every figure is the median of ``--repeats`` whole ``snakemake`` processes (each
re-parses the Snakefile, validates the config and builds the DAG, as every
SLURM job does too).  The synthetic grid is 1,000 copies of one PyTorch
dynamic-int8 scheme (plus the fp32 baseline) on both embedded models and the
clean corpus: 2,002 cells, about 6,300 jobs.

``floor`` measures what Snakemake itself costs on this machine, so the two figures
above can be read: the dry run of a one-rule Snakefile (start-up and imports), and
of a bare Snakefile with the synthetic grid's shape (quantize -> transcribe ->
score per cell, one aggregate; shell rules, no params, resources or conda
environments).  No workflow can plan faster than its floor.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def timed(args: list[str], repeats: int) -> tuple[float, float, float, str]:
    times, out = [], ""
    for _ in range(repeats):
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "snakemake", *args], cwd=REPO, capture_output=True, text=True)
        times.append(time.perf_counter() - t0)
        out = proc.stdout + proc.stderr
        if proc.returncode:
            raise SystemExit(f"snakemake {' '.join(args)} failed:\n{out[-3000:]}")
    return statistics.median(times), min(times), max(times), out


def synthetic_config(path: Path, copies: int = 1000) -> Path:
    """The default config with ``copies`` renamed copies of one scheme on both embedded models."""
    cfg = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    schemes = {"fp32": {"library": "fp32"}}
    schemes.update({f"dyn{i:04d}": {"library": "pytorch", "mode": "dynamic"} for i in range(copies)})
    cfg["schemes"] = schemes
    cfg["grid"] = {"models": ["tiny.en", "base"], "schemes": "all", "devices": ["cpu"], "corpora": ["clean"]}
    cfg["results"] = str(path.parent / "results")
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


ONE_RULE = 'rule all:\n    output: "a"\n    shell: "touch {output}"\n'

#: the synthetic grid's job shape with nothing of whisperquant in it
BARE_GRID = '''
SCHEMES = [f"s{i:04d}" for i in range(1001)]
MODELS = ["tiny.en", "base"]
rule all:
    input: "res/summary.csv"
rule aggregate:
    input: expand("res/scores/{m}/{s}.json", m=MODELS, s=SCHEMES)
    output: "res/summary.csv"
    shell: "touch {output}"
rule quantize:
    input: "models/{m}"
    output: directory("res/quantized/{m}/{s}")
    log: "logs/quantize/{m}/{s}.log"
    shell: "mkdir -p {output}"
rule transcribe:
    input: model="models/{m}", artifact="res/quantized/{m}/{s}", corpus="corpus.tsv"
    output: transcript="res/transcripts/{m}/{s}.jsonl", timing="res/transcripts/{m}/{s}.timing.json"
    log: "logs/transcribe/{m}/{s}.log"
    shell: "touch {output}"
rule score:
    input: transcript="res/transcripts/{m}/{s}.jsonl", timing="res/transcripts/{m}/{s}.timing.json"
    output: "res/scores/{m}/{s}.json"
    log: "logs/score/{m}/{s}.log"
    shell: "touch {output}"
rule import_model:
    output: directory("models/{m}")
    shell: "mkdir -p {output}"
rule corpus:
    output: "corpus.tsv"
    shell: "touch {output}"
'''


def _jobs(out: str) -> str:
    m = re.search(r"^total\s+(\d+)", out, re.M)
    return m.group(1) if m else "nothing to do:"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--only", choices=("paper", "synthetic", "floor", "noop"), action="append")
    args = ap.parse_args(argv)
    sys.stdout.reconfigure(line_buffering=True)  # each figure as soon as it is measured
    only = set(args.only or ("paper", "synthetic", "floor", "noop"))
    if "paper" in only:
        t, lo, hi, out = timed(["-n", "--quiet", "rules", "--configfile", "config/paper.yaml"], args.repeats)
        print(f"snakemake -n --configfile config/paper.yaml: median {t:.2f} s (min {lo:.2f}, max {hi:.2f}), "
              f"{_jobs(out)} jobs (target < 1.5 s)")
    if "synthetic" in only:
        with tempfile.TemporaryDirectory() as tmp:
            cfg = synthetic_config(Path(tmp) / "synthetic.yaml")
            t, lo, hi, out = timed(["-n", "--quiet", "rules", "--configfile", str(cfg)], args.repeats)
        print(f"snakemake -n, synthetic grid of 2,002 cells: median {t:.2f} s (min {lo:.2f}, max {hi:.2f}), "
              f"{_jobs(out)} jobs (target < 10 s)")
    if "floor" in only:
        with tempfile.TemporaryDirectory() as tmp:
            for name, text in (("one-rule", ONE_RULE), ("bare-grid", BARE_GRID)):
                snakefile = Path(tmp) / f"{name}.smk"
                snakefile.write_text(text)
                t, lo, hi, out = timed(["-s", str(snakefile), "-d", tmp, "-n", "--quiet", "rules",
                                        "--workflow-profile", "none"], args.repeats)
                print(f"floor, snakemake -n of a {name} Snakefile: median {t:.2f} s (min {lo:.2f}, "
                      f"max {hi:.2f}), {_jobs(out)} jobs")
    if "noop" in only:
        # a no-op only after a finished default run: otherwise `--cores 2` would run the whole grid
        _, _, _, out = timed(["-n", "--quiet", "rules"], 1)
        if _jobs(out) != "nothing to do:":
            print(f"no-op rerun skipped: the default config still has {_jobs(out)} jobs to run "
                  "(run `snakemake --cores all` first)")
        else:
            t, lo, hi, out = timed(["--cores", "2"], args.repeats)
            print(f"snakemake --cores 2 no-op rerun of the default config: median {t:.2f} s (min {lo:.2f}, "
                  f"max {hi:.2f}) (target < 10 s)")


if __name__ == "__main__":
    main()
