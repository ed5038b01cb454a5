"""How long Snakemake takes to plan: the study's configuration (dry run) and a no-op rerun.

    python benchmarks/bench_dag.py
"""

from __future__ import annotations

import re
import statistics
import subprocess
import sys
import time

import _common


def timed(args: list[str], repeats: int = 3) -> tuple[float, str]:
    times, out = [], ""
    for _ in range(repeats):
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "snakemake", *args], cwd=_common.REPO, capture_output=True,
                              text=True)
        times.append(time.perf_counter() - t0)
        out = proc.stdout + proc.stderr
    return statistics.median(times), out


def main() -> None:
    t, out = timed(["-n", "--quiet", "rules", "--configfile", "config/paper.yaml"])
    m = re.search(r"^total\s+(\d+)", out, re.M)
    print(f"snakemake -n --configfile config/paper.yaml: median {t:.2f} s, {m.group(1) if m else '?'} jobs "
          "(target < 10 s)")
    t, out = timed(["-n", "--quiet", "rules"])
    m = re.search(r"^total\s+(\d+)", out, re.M)
    print(f"snakemake -n (default config, after a finished run): median {t:.2f} s, "
          f"{m.group(1) if m else 'nothing to do'} jobs planned")
    t, out = timed(["--cores", "2"])
    print(f"snakemake --cores 2 no-op rerun of the default config: median {t:.2f} s (target < 10 s)")


if __name__ == "__main__":
    main()
