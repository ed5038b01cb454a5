"""Shared setup for the benchmarks: the embedded corpus and converted models, built on demand.

Benchmarks measure whole runs on this machine and print ratios measured in the
same run (shared machines drift; never compare absolute times across runs).
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "workflow"))
CACHE = Path(os.environ.get("WHISPERQUANT_BENCH_DIR", REPO / "resources" / "bench"))
DOWNLOADS = Path(os.environ.get("WHISPERQUANT_TEST_CACHE", REPO / "resources" / "downloads"))


def config() -> dict:
    return yaml.safe_load((REPO / "config" / "config.yaml").read_text())


def model_dir(name: str) -> Path:
    """The fp32 checkpoint of an embedded model (the workflow's own if present)."""
    for candidate in (REPO / "resources" / "models" / name, CACHE / "models" / name):
        if (candidate / "model.safetensors").exists():
            return candidate
    from whisperquant.models.importers import import_model

    return import_model(name, config()["models"][name], CACHE / "models" / name, DOWNLOADS)


def corpus(limit: int | None = None) -> Path:
    """The default config's clean corpus (manifest path): the workflow's own if built, else built here.

    With ``limit``, the first ``limit`` utterances, unpacked.
    """
    existing = REPO / "resources" / "corpora" / "clean" / "manifest.tsv"
    if existing.exists() and limit is None:
        return existing
    from whisperquant.data.sources.embedded import build_embedded

    spec = config()["corpora"]["clean"]
    out = CACHE / "corpora" / f"clean-{limit or 'default'}"
    if (out / "manifest.tsv").exists():
        return out / "manifest.tsv"
    if limit:
        return build_embedded(out, DOWNLOADS, "eval", limit=limit)
    return build_embedded(out, DOWNLOADS, spec["set"], pack_seconds=spec.get("pack_seconds"),
                          pack_gap_seconds=spec.get("pack_gap_seconds", 0.5))


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run_child(code: str, timeout: int = 1800) -> dict:
    """Run ``code`` in a fresh interpreter (own RSS, own imports); it prints one JSON line last."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "workflow") + os.pathsep + str(REPO / "benchmarks")}
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=timeout)
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit {proc.returncode}",
                "process_s": time.perf_counter() - t0}
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["process_s"] = time.perf_counter() - t0
    return out


def table(rows: list[dict], columns: list[str]) -> str:
    widths = {c: max(len(c), *(len(_fmt(r.get(c))) for r in rows)) for c in columns}
    lines = ["  ".join(c.ljust(widths[c]) for c in columns), "  ".join("-" * widths[c] for c in columns)]
    lines += ["  ".join(_fmt(r.get(c)).ljust(widths[c]) for c in columns) for r in rows]
    return "\n".join(lines)


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.3f}"
    return "" if v is None else str(v)
