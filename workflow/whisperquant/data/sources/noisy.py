"""Corpus source ``noisy``: another corpus with white Gaussian noise mixed in at a fixed SNR.

Each utterance gets its own seed derived from the config's ``seed`` and its id,
so the noise of one utterance does not depend on which others the corpus holds
or in which order they are built; reruns are byte-identical.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from ..audio import SAMPLE_RATE, AudioError, mix_noise
from ..manifest import SPEAKERS, materialize, read_manifest, read_speakers, write_speakers


def build(name: str, spec: dict, out_dir: Path, cache_dir: Path, upstream: Path | None = None) -> Path:
    """The noisy copy of the corpus named by ``from`` (its manifest is ``upstream``)."""
    if upstream is None:
        raise ValueError(f"corpora.{name}.from: a noisy corpus needs the manifest of the corpus it derives from")
    return build_noisy(Path(upstream).parent, out_dir, spec["snr_db"], spec["seed"])


def utterance_seed(base_seed: int, utt_id: str) -> int:
    """A per-utterance seed that does not depend on corpus order or size."""
    return int.from_bytes(hashlib.sha256(f"{base_seed}:{utt_id}".encode()).digest()[:8], "little")


def build_noisy(source_dir: str | Path, out_dir: str | Path, snr_db: float, seed: int) -> Path:
    """The noisy condition: white Gaussian noise at ``snr_db`` with a per-utterance seed."""
    import soundfile as sf

    source_dir = Path(source_dir)
    rows = read_manifest(source_dir)

    def loader(row):
        def load() -> np.ndarray:
            samples, rate = sf.read(str(source_dir / row.audio), dtype="float32")
            if rate != SAMPLE_RATE:
                raise AudioError(f"utterance {row.id}: {row.audio} is {rate} Hz, expected {SAMPLE_RATE}")
            return mix_noise(samples, snr_db, utterance_seed(seed, row.id))
        return load

    manifest = materialize(((r.id, r.reference, loader(r)) for r in rows), out_dir)
    speakers = source_dir / SPEAKERS  # the same utterances, the same speakers
    write_speakers(out_dir, read_speakers(speakers).items() if speakers.exists() else ())
    return manifest
