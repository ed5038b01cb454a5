"""Only a backend's typed LibraryLimitation becomes a row; every other exception fails the job.

A programming error (TypeError, AttributeError) or an out-of-memory inside a
backend must stop the job with its traceback, so Snakemake's ``retries`` act
and the bug cannot hide behind a ``failed`` row.  The toy backends are defined
here, outside the package.
"""

from __future__ import annotations

import json

import pytest
from whisperquant.jobs import quantize_job, transcribe_job
from whisperquant.quantize import DEFAULT_TARGETS, LibraryLimitation, ModuleBackend, register
from whisperquant.quantize.artifact import record_path
from whisperquant.quantize.registry import unregister


def _toy(error: BaseException, where: str):
    @register
    class Broken(ModuleBackend):
        library = "broken"

        def quantize_model(self, model, params, calibration=None):
            if where == "quantize":
                raise error
            return model

        def save(self, model, params, out_dir):
            model.save_pretrained(out_dir, safe_serialization=True)

        def load(self, base_model_dir, params, artifact_dir, device):
            raise error

    return Broken


@pytest.fixture
def broken():
    yield _toy
    unregister("broken")


PARAMS = {"library": "broken", "targets": DEFAULT_TARGETS}


def _quantize(model_dir, out, log):
    quantize_job("m", model_dir, "s", PARAMS, out, None, None, log)


@pytest.mark.parametrize("error", [TypeError("unsupported operand"), AttributeError("no attribute 'qweight'"),
                                   MemoryError("out of memory"), RuntimeError("CUDA out of memory")])
def test_a_bug_or_oom_while_quantizing_fails_the_job(broken, tiny_whisper_dir, tmp_path, error):
    broken(error, "quantize")
    with pytest.raises(type(error), match=str(error)):
        _quantize(tiny_whisper_dir, tmp_path / "artifact", tmp_path / "q.log")
    assert not (tmp_path / "artifact").exists()  # nothing that looks finished


def test_a_library_limitation_while_quantizing_is_a_failed_row(broken, tiny_whisper_dir, tmp_path):
    broken(LibraryLimitation("no int3 kernel on this CPU"), "quantize")
    _quantize(tiny_whisper_dir, tmp_path / "artifact", tmp_path / "q.log")
    rec = json.loads((tmp_path / "artifact.json").read_text())  # the record, beside the artifact
    assert rec["status"] == "failed"
    assert rec["reason"] == "broken: no int3 kernel on this CPU"
    assert rec["log"] == str(tmp_path / "q.log")


def _transcribe(model_dir, artifact, tmp_path):
    transcribe_job("m", model_dir, "s", PARAMS, artifact, "cpu", tmp_path / "manifest.tsv",
                   tmp_path / "out.jsonl", tmp_path / "out.timing.json",
                   {"language": "en", "max_new_tokens": 8, "batch_size": 1}, 1, tmp_path / "t.log", code="test")


def test_a_bug_while_transcribing_fails_the_job(broken, tiny_whisper_dir, tmp_path):
    broken(TypeError("expected Tensor"), "load")
    _quantize(tiny_whisper_dir, tmp_path / "artifact", tmp_path / "q.log")
    with pytest.raises(TypeError, match="expected Tensor"):
        _transcribe(tiny_whisper_dir, tmp_path / "artifact", tmp_path)
    assert not (tmp_path / "out.timing.json").exists()


def test_a_library_limitation_while_transcribing_is_a_failed_row(broken, tiny_whisper_dir, tmp_path):
    broken(LibraryLimitation("no CPU kernel for 2-bit"), "load")
    _quantize(tiny_whisper_dir, tmp_path / "artifact", tmp_path / "q.log")
    _transcribe(tiny_whisper_dir, tmp_path / "artifact", tmp_path)
    rec = json.loads((tmp_path / "out.timing.json").read_text())
    assert (rec["status"], rec["reason"]) == ("failed", "broken: no CPU kernel for 2-bit")


def test_what_the_host_lacks_is_an_unsupported_row_naming_it(broken, tiny_whisper_dir, tmp_path):
    """A HostLimitation (an ISA feature, a runtime build's compute type) is an ``unsupported`` row, at quantise
    time and at load time, with the host in the record: a run's ``failed`` rows are only real failures."""
    from whisperquant.quantize import HostLimitation

    broken(HostLimitation("this host (AMD EPYC, avx2, 2 cores) lacks VNNI"), "load")
    _quantize(tiny_whisper_dir, tmp_path / "artifact", tmp_path / "q.log")
    _transcribe(tiny_whisper_dir, tmp_path / "artifact", tmp_path)
    rec = json.loads((tmp_path / "out.timing.json").read_text())
    assert (rec["status"], rec["reason"]) == ("unsupported", "broken: this host (AMD EPYC, avx2, 2 cores) lacks VNNI")
    assert rec["host"]["id"] and "cpu_model" in rec["host"]
    unregister("broken")
    broken(HostLimitation("no int16 kernels on this CPU"), "quantize")
    _quantize(tiny_whisper_dir, tmp_path / "artifact2", tmp_path / "q.log")
    assert json.loads(record_path(tmp_path / "artifact2").read_text())["status"] == "unsupported"
    _transcribe(tiny_whisper_dir, tmp_path / "artifact2", tmp_path)  # the cell stays unsupported, not failed
    rec = json.loads((tmp_path / "out.timing.json").read_text())
    assert (rec["status"], rec["reason"]) == ("unsupported", "broken: no int16 kernels on this CPU")


def test_the_ctranslate2_compute_type_a_host_lacks_names_the_host(tmp_path):
    """CTranslate2's own list of what this CPU gets decides; a type outside it is a HostLimitation naming the host."""
    import ctranslate2
    from whisperquant.quantize import HostLimitation, get_backend

    supported = ctranslate2.get_supported_compute_types("cpu")
    if "int16" in supported:
        pytest.skip(f"this host's CTranslate2 offers int16 on CPU ({sorted(supported)}): nothing to refuse")
    backend = get_backend("ctranslate2")
    with pytest.raises(HostLimitation, match=r"this host \(.*\) gets no int16 kernels"):
        backend.load(tmp_path, backend.resolve("s", {"compute_type": "int16"}), tmp_path, "cpu")
