"""The one calibration routine every calibrated scheme runs.

A static scheme fixes activation ranges in advance from forward passes over a
calibration set that never overlaps the evaluation corpora (checked in
:mod:`whisperquant.config`).  Every backend observes the same passes: the
encoder over each batch of log-mel features and the decoder through greedy
decoding with the evaluation's own prompt (language and task tokens,
no timestamps) for up to ``max_new_tokens`` tokens, so the observers see the
activations the evaluation will produce -- a sentence, not a fixed handful of
tokens -- and two libraries' static schemes are calibrated on exactly the same
speech.  The number of utterances and tokens are config parameters
(``calibration.utterances``, ``calibration.max_new_tokens``), recorded in
each calibrated cell's quantize record (``results/quantized/<model>/<scheme>.json``).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    import torch

#: Greedy tokens per calibration batch when the config does not say: the evaluation's default.
MAX_NEW_TOKENS = 96


@dataclass
class CalibrationSet:
    """Log-mel batches of the calibration utterances and the decoding rule their passes follow.

    Iterating yields the feature batches, so a backend that only needs the encoder's inputs
    treats it as the list it holds.
    """

    batches: list = field(default_factory=list)
    max_new_tokens: int = MAX_NEW_TOKENS
    language: str = "en"

    def __iter__(self) -> Iterator[torch.Tensor]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


def calibration_features(processor, audio: list[np.ndarray], batch_size: int = 8) -> list[torch.Tensor]:
    """Log-mel batches for calibration forward passes."""
    feats = []
    for i in range(0, len(audio), batch_size):
        f = processor.feature_extractor(audio[i : i + batch_size], sampling_rate=16000, return_tensors="pt")
        feats.append(f.input_features)
    return feats


def calibration_tokens(calibration) -> int:
    """Greedy tokens per batch for ``calibration`` (a :class:`CalibrationSet`, or a bare list of batches)."""
    return int(getattr(calibration, "max_new_tokens", MAX_NEW_TOKENS))


def run_calibration(model: torch.nn.Module, calibration: CalibrationSet | list | None, what: str) -> None:
    """Run the calibration passes through ``model`` (its observers record what they see).

    ``what`` names the scheme kind in the error raised when no calibration set was given.
    """
    import torch

    from ..models.decoding import generate_kwargs_for

    if not calibration:
        raise ValueError(f"{what} needs a calibration set")
    # never past the decoder's positions (448 on Whisper; a small test model has fewer): prompt <= 4 tokens
    tokens = min(calibration_tokens(calibration), int(model.config.max_target_positions) - 4)
    gen = generate_kwargs_for(model, getattr(calibration, "language", "en"), tokens)
    with torch.no_grad():
        for feats in calibration:
            model.generate(feats, **gen)


def load_calibration(model_dir: str | Path, manifest: str | Path, settings: dict) -> tuple[CalibrationSet, list[str]]:
    """The calibration set of a calibrated job: the first ``settings['utterances']`` utterances of
    ``manifest`` as log-mel batches, decoded with ``settings``' token limit and language; and their ids."""
    from transformers import WhisperProcessor

    from ..data.audio import load_audio
    from ..evaluate.transcribe import load_corpus

    utts = load_corpus(manifest)[: int(settings["utterances"])]
    processor = WhisperProcessor.from_pretrained(str(model_dir))
    batches = calibration_features(processor, [load_audio(u.audio_path, u.id) for u in utts])
    return (CalibrationSet(batches, int(settings["max_new_tokens"]), settings.get("language", "en")),
            [u.id for u in utts])
