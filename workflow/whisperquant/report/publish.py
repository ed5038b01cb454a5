"""Publish a finished report: copy the staged files into ``results/report/``.

Snakemake deletes a job's outputs before the job runs.  Rule ``aggregate`` writes
into a staging folder, so a failed aggregation deletes only the staging; rule
``publish_report`` runs once the whole staged report exists and copies it over
the previous one (each file through a temporary name and a rename).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def publish(pairs: list[tuple[str | Path, str | Path]]) -> None:
    """Copy each staged ``(source, destination)`` file or folder into place, replacing what is there."""
    for src, dst in pairs:
        src, dst = Path(src), Path(dst)
        if not src.exists():
            raise FileNotFoundError(f"{src}: the staged report is incomplete; nothing of it published")
    for src, dst in pairs:
        src, dst = Path(src), Path(dst)
        dst.parent.mkdir(parents=True, exist_ok=True)
        tmp = dst.with_name(f".{dst.name}.tmp-{os.getpid()}")
        if src.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.copytree(src, tmp)
            if dst.exists():
                shutil.rmtree(dst)
        else:
            shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
