"""Audio decoding: any supported file -> 16 kHz mono float32, or a clear error.

Whisper's feature extractor expects 16 kHz mono.  Multi-channel audio is
averaged to mono and other rates are resampled with soxr (high quality,
deterministic).  Missing, empty and corrupt files raise :class:`AudioError`
naming the utterance, so one bad file is reported instead of silently
transcribed as silence.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

SAMPLE_RATE = 16_000


class AudioError(ValueError):
    """An utterance whose audio cannot be used."""


def decode_bytes(data: bytes, fmt: str | None = None, utt_id: str = "?") -> tuple[np.ndarray, int]:
    """Decode encoded audio bytes to (float32 samples [frames, channels], rate)."""
    if not data:
        raise AudioError(f"utterance {utt_id}: audio is empty (0 bytes)")
    if fmt == "g722":
        import av

        try:
            with av.open(io.BytesIO(data), format="g722") as container:
                frames = [f.to_ndarray() for f in container.decode(audio=0)]
                rate = container.streams.audio[0].rate
        except (av.FFmpegError, ValueError) as e:
            raise AudioError(f"utterance {utt_id}: cannot decode G.722 audio: {e}") from e
        pcm = np.concatenate(frames, axis=1).T  # [frames, channels]
        scale = 32768.0 if pcm.dtype == np.int16 else 1.0
        return pcm.astype(np.float32) / scale, rate
    import soundfile as sf

    try:
        samples, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError) as e:
        raise AudioError(f"utterance {utt_id}: cannot decode audio ({e})") from e
    return samples, rate


def to_mono_16k(samples: np.ndarray, rate: int, utt_id: str = "?") -> np.ndarray:
    """Average channels and resample to 16 kHz with soxr."""
    if samples.ndim == 2:
        samples = samples.mean(axis=1) if samples.shape[1] > 1 else samples[:, 0]
    if samples.size == 0:
        raise AudioError(f"utterance {utt_id}: audio has no samples")
    if not np.all(np.isfinite(samples)):
        raise AudioError(f"utterance {utt_id}: audio contains NaN or infinite samples")
    if rate != SAMPLE_RATE:
        import soxr

        samples = soxr.resample(samples, rate, SAMPLE_RATE, quality="HQ")
    return np.ascontiguousarray(samples, dtype=np.float32)


def load_audio(path: str | Path, utt_id: str = "?") -> np.ndarray:
    """Read a file as 16 kHz mono float32, whatever its channels and rate."""
    path = Path(path)
    if not path.exists():
        raise AudioError(f"utterance {utt_id}: audio file {path} does not exist")
    fmt = "g722" if path.suffix == ".g722" else None
    samples, rate = decode_bytes(path.read_bytes(), fmt, utt_id)
    return to_mono_16k(samples, rate, utt_id)


def write_wav(path: str | Path, samples: np.ndarray) -> None:
    """Write 16 kHz mono 16-bit PCM (clipped), the corpus' canonical, byte-stable format.

    The scale (32768) is soundfile's, so decoding 16-bit audio and writing it back is exact.
    """
    import soundfile as sf

    pcm = np.clip(np.round(samples * 32768.0), -32768, 32767).astype(np.int16)
    sf.write(str(path), pcm, SAMPLE_RATE, subtype="PCM_16", format="WAV")


def mix_noise(samples: np.ndarray, snr_db: float, seed: int) -> np.ndarray:
    """Add white Gaussian noise at ``snr_db`` relative to the utterance's own power."""
    rng = np.random.default_rng(seed)
    power = float(np.mean(samples.astype(np.float64) ** 2))
    noise = rng.standard_normal(samples.shape[0])
    noise *= np.sqrt(power / (10.0 ** (snr_db / 10.0)))
    return (samples + noise).astype(np.float32)
