"""Make the in-repo package importable when the workflow runs without ``pip install``."""

import sys
from pathlib import Path

_pkg_root = str(Path(__file__).resolve().parents[1])
if _pkg_root not in sys.path:
    sys.path.insert(0, _pkg_root)
