"""A job imports transformers without the hqq/torchao integrations it does not use, and still runs them
itself where its library does (whisperquant.models.transformers_import).

Only transformers' own probes are answered so: any other ``importlib.util.find_spec`` still finds both.

Each case runs in a fresh Python process: what transformers imported is decided once per process.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from workflow_utils import package_env

_CHILD = r"""
import importlib.util, json, sys
from whisperquant.models.transformers_import import hide_unused_integrations
hidden = hide_unused_integrations(sys.argv[1])
again = hide_unused_integrations(sys.argv[1])
import transformers.modeling_utils
imported_by_transformers = {p: p in sys.modules for p in ("hqq", "torchao")}
from transformers.utils import import_utils
probes = {"hqq": import_utils.is_hqq_available(), "torchao": import_utils.is_torchao_available()}
found = {p: importlib.util.find_spec(p) is not None for p in ("hqq", "torchao")}  # anyone else still finds them
import hqq.core.quantize, torchao  # as our backends import them
print(json.dumps({"hidden": sorted(hidden), "again": sorted(again), "imported": imported_by_transformers,
                  "probes": probes, "found": found}))
"""


# each package once hidden and once kept (every other library hides both, as hqq's case hides torchao)
@pytest.mark.parametrize(("library", "hidden"), [("hqq", ["torchao"]), ("pt2e", ["hqq"])])
def test_transformers_skips_only_the_integrations_the_library_does_not_use(library, hidden):
    proc = subprocess.run([sys.executable, "-c", _CHILD, library], capture_output=True, text=True, timeout=300,
                          env=package_env())
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["hidden"] == hidden
    for package in ("hqq", "torchao"):
        # a hidden package is neither imported nor reported available by transformers; a kept one is both
        assert out["imported"][package] is (package not in hidden), out
        assert out["probes"][package] is (package not in hidden), out
    assert out["found"] == {"hqq": True, "torchao": True}
    assert out["again"] == []  # a second call adds nothing
