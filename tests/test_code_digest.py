"""A stage's code digest covers the cell's own library (or corpus source) module, not the others'.

Snakemake reruns a job when its ``code`` parameter changes; editing one backend
must rerun that library's cells only, and adding a corpus source must not
rebuild every other corpus.  Proven on a copy of the package.
"""

from __future__ import annotations

import shutil

import pytest
from whisperquant import config


@pytest.fixture
def package(tmp_path, monkeypatch):
    copy = tmp_path / "whisperquant"
    shutil.copytree(config.PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(config, "PACKAGE", copy)
    config.code_digest.cache_clear()
    yield copy
    config.code_digest.cache_clear()


def _edit(path):
    path.write_text(path.read_text() + "\n# edited\n")
    config.code_digest.cache_clear()


def test_editing_one_backend_changes_only_its_librarys_digest(package):
    before = {lib: config.code_digest("quantize", lib) for lib in ("hqq", "bnb", "pytorch")}
    whole = config.code_digest("quantize")
    _edit(package / "quantize" / "backends" / "bnb.py")
    assert config.code_digest("quantize", "bnb") != before["bnb"]
    assert config.code_digest("quantize", "hqq") == before["hqq"]
    assert config.code_digest("quantize", "pytorch") == before["pytorch"]
    assert config.code_digest("quantize") != whole  # without a variant, every module counts


def test_shared_quantize_code_changes_every_librarys_digest(package):
    before = {lib: config.code_digest("transcribe", lib) for lib in ("hqq", "bnb")}
    _edit(package / "quantize" / "linear_swap.py")
    assert all(config.code_digest("transcribe", lib) != d for lib, d in before.items())


def test_a_corpus_source_counts_the_sibling_modules_it_imports(package):
    before = {src: config.code_digest("corpus", src) for src in ("kaldi", "embedded", "manifest")}
    _edit(package / "data" / "sources" / "manifest.py")  # kaldi imports from it
    assert config.code_digest("corpus", "manifest") != before["manifest"]
    assert config.code_digest("corpus", "kaldi") != before["kaldi"]
    assert config.code_digest("corpus", "embedded") == before["embedded"]

