"""Make the in-repo package importable when the workflow runs without ``pip install``.

The checkout's own package goes first on ``sys.path`` even when it is already there:
Snakemake appends its own process' path (which holds it) to a script's, behind an
editable install of another checkout that would otherwise shadow this one.
"""

import sys
from pathlib import Path

_pkg_root = str(Path(__file__).resolve().parents[1])
if sys.path[:1] != [_pkg_root]:
    sys.path.insert(0, _pkg_root)
