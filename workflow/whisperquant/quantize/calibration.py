"""The one calibration routine every calibrated scheme runs.

A static scheme fixes activation ranges in advance from forward passes over a
calibration set that never overlaps the evaluation corpora (checked in
:mod:`whisperquant.config`).  Every backend observes the same passes: the
encoder over each batch of log-mel features and the decoder through greedy
``generate`` for :data:`MAX_NEW_TOKENS` tokens, so two libraries' static
schemes are calibrated on exactly the same activations.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    import torch

#: Decoder tokens generated per calibration batch.
MAX_NEW_TOKENS = 24


def calibration_features(processor, audio: list[np.ndarray], batch_size: int = 8) -> list[torch.Tensor]:
    """Log-mel batches for calibration forward passes."""
    feats = []
    for i in range(0, len(audio), batch_size):
        f = processor.feature_extractor(audio[i : i + batch_size], sampling_rate=16000, return_tensors="pt")
        feats.append(f.input_features)
    return feats


def run_calibration(model: torch.nn.Module, calibration: list[torch.Tensor] | None, what: str) -> None:
    """Run the calibration passes through ``model`` (its observers record what they see).

    ``what`` names the scheme kind in the error raised when no calibration set was given.
    """
    import torch

    if not calibration:
        raise ValueError(f"{what} needs a calibration set")
    with torch.no_grad():
        for feats in calibration:
            model.generate(feats, max_new_tokens=MAX_NEW_TOKENS)
