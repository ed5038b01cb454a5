"""How long Snakemake takes to plan: the study's configuration, a synthetic 2,000-cell grid, a no-op rerun.

    python benchmarks/bench_dag.py [--repeats 5] [--only paper|synthetic|noop]

Every figure is the median of ``--repeats`` whole ``snakemake`` processes (each
re-parses the Snakefile, validates the config and builds the DAG, as every
SLURM job does too).  The synthetic grid is 1,000 copies of one PyTorch
dynamic-int8 scheme (plus the fp32 baseline) on both embedded models and the
clean corpus: 2,002 cells, about 6,200 jobs.
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


def _jobs(out: str) -> str:
    m = re.search(r"^total\s+(\d+)", out, re.M)
    return m.group(1) if m else "nothing to do:"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--only", choices=("paper", "synthetic", "noop"), action="append")
    args = ap.parse_args(argv)
    only = set(args.only or ("paper", "synthetic", "noop"))
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
    if "noop" in only:
        t, lo, hi, out = timed(["--cores", "2"], args.repeats)
        print(f"snakemake --cores 2 no-op rerun of the default config: median {t:.2f} s (min {lo:.2f}, "
              f"max {hi:.2f}) (target < 10 s; meaningful after a finished default run)")


if __name__ == "__main__":
    main()
