"""Make the in-repo package importable when the workflow runs without ``pip install``.

The checkout's own package comes first, ahead of an installed (or editable-installed) whisperquant
of another checkout on ``sys.path``: a job runs the code its rule's code digest was computed from.
"""

import sys
from pathlib import Path

_pkg_root = str(Path(__file__).resolve().parents[1])
if sys.path[:1] != [_pkg_root]:
    if _pkg_root in sys.path:
        sys.path.remove(_pkg_root)
    sys.path.insert(0, _pkg_root)
