"""The engine interface: a deployment runtime as a backend of the grid.

A PyTorch-side library hands the pipeline a quantised ``nn.Module``; an engine
(CTranslate2, ONNX Runtime, OpenVINO) instead builds its own artifact from the
fp32 checkpoint -- a converted, exported or compressed file in the runtime's
format -- and decodes with the runtime.  Its cells are ordinary grid cells:
quantised (:meth:`Engine.build`), sized from the bytes of what the runtime
loads (:meth:`Engine.sizes`), transcribed by the same
:func:`~whisperquant.evaluate.transcribe.transcribe_corpus` under the same
timing protocol, and scored like every other.

The loaded object is an :class:`EngineModel`: what ``transcribe_corpus``
drives, with transformers' calling convention (``generate(features,
language=..., task=..., max_new_tokens=...)`` returning token ids), the
model's config and generation config, and the same greedy rule
(:func:`~whisperquant.quantize.backends._graphs.greedy_generate` or the
runtime's own greedy search with the same prompt and suppression lists).

Adding a runtime = one module in ``quantize/backends/`` with one
:class:`Engine` subclass.  An engine meets the contract of every backend
(:class:`~whisperquant.quantize.base.Backend`) and nothing of the PyTorch-side
one (:class:`~whisperquant.quantize.modules.ModuleBackend`): it has no
``nn.Module`` to quantise or save.  This module counts in the code digest of
the libraries that import it only.
"""

from __future__ import annotations

import os
from abc import abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .base import Backend
from .calibration import calibration_tokens


def runtime_threads() -> int:
    """The job's thread count (``set_threads`` gave it to torch before the model is loaded)."""
    import torch

    return max(1, torch.get_num_threads())


class EngineModel:
    """A runtime's loaded model behind transformers' ``generate`` convention (greedy only)."""

    def __init__(self, model_dir: Path, decode: Callable[[Any, list[int], int], list[list[int]]],
                 keep: Any = None) -> None:
        from transformers import GenerationConfig, WhisperConfig

        self.config = WhisperConfig.from_pretrained(str(model_dir))
        self.generation_config = GenerationConfig.from_pretrained(str(model_dir))
        self._decode = decode
        self._keep = keep  # the runtime's session objects, alive as long as the model

    def prompt(self, language: str | None, task: str | None) -> list[int]:
        """The prompt transformers' Whisper ``generate`` builds: start, [language, task,] no timestamps."""
        gc = self.generation_config
        ids = [int(gc.decoder_start_token_id)]
        if language is not None:
            ids += [int(gc.lang_to_id[f"<|{language}|>"]), int(gc.task_to_id[task or "transcribe"])]
        return [*ids, int(gc.no_timestamps_token_id)]

    def generate(self, input_features, *, max_new_tokens: int, language: str | None = None,
                 task: str | None = None, do_sample: bool = False, num_beams: int = 1) -> list[list[int]]:
        if do_sample or num_beams != 1:
            raise ValueError("engines decode greedily only (do_sample=False, num_beams=1)")
        feats = input_features.numpy() if hasattr(input_features, "numpy") else input_features
        return self._decode(feats, self.prompt(language, task), max_new_tokens)

    def suppression(self) -> tuple[list[int], list[int]]:
        """(tokens never generated, tokens not generated first): the generation config's lists."""
        gc = self.generation_config
        return list(gc.suppress_tokens or []), list(gc.begin_suppress_tokens or [])


def calibration_settings(model_dir: Path, calibration) -> dict:
    """The greedy rule's keyword arguments for calibration decoding: the evaluation's prompt (English,
    transcribe, no timestamps), suppression lists and end of text, and the calibration set's token
    limit (:func:`~whisperquant.quantize.calibration.calibration_tokens`), as every calibrated scheme."""
    meta = EngineModel(model_dir, lambda *a: [])
    suppress, begin = meta.suppression()
    multilingual = int(meta.config.vocab_size) >= 51865  # OpenAI's rule (transcribe.is_multilingual)
    return {"prompt": meta.prompt("en" if multilingual else None, "transcribe" if multilingual else None),
            "eos": int(meta.generation_config.eos_token_id), "suppress": suppress, "begin_suppress": begin,
            "max_new_tokens": calibration_tokens(calibration), "config": meta.config}


class Engine(Backend):
    """A deployment runtime: builds its artifact from the fp32 checkpoint, decodes with its own kernels."""

    #: The files of an artifact the runtime loads (globs); their bytes are ``artifact_bytes``.
    artifact_files: tuple[str, ...] = ()

    @abstractmethod
    def build(self, base_model_dir: Path, params: dict, calibration, out_dir: Path) -> None:
        """Write the runtime's artifact for ``params`` into ``out_dir``."""

    @abstractmethod
    def load(self, base_model_dir: Path, params: dict, artifact_dir: Path, device: str) -> EngineModel:
        """The runtime's session over ``artifact_dir``, threads as the job set them."""

    def tensor_bytes(self, artifact_dir: Path) -> dict[str, int]:
        """Stored tensor name -> bytes; names start with the transformers module they belong to where
        the format keeps it (override)."""
        return {}

    def module_of(self, tensor: str) -> str:
        """The transformers module path a stored tensor name belongs to (override where names differ)."""
        return tensor

    def sizes(self, artifact_dir: Path, quantized_modules: list[str]) -> dict[str, int]:
        files = sorted({p for pattern in self.artifact_files for p in artifact_dir.glob(pattern) if p.is_file()})
        if not files:
            raise FileNotFoundError(f"{artifact_dir}: no {' / '.join(self.artifact_files)} file was written")
        tensors = self.tensor_bytes(artifact_dir)
        prefixes = tuple(m + "." for m in quantized_modules)
        in_targets = sum(b for k, b in tensors.items() if self.module_of(k).startswith(prefixes))
        total = sum(tensors.values())
        return {"artifact_bytes": sum(os.path.getsize(p) for p in files), "param_bytes": total,
                "quantized_module_bytes": in_targets, "float_param_bytes": total - in_targets}
