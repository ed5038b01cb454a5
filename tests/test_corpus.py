"""The embedded corpus: fixed, verified, deterministic; the noisy condition; bad audio."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import soundfile as sf
from whisperquant.data.audio import AudioError, load_audio, mix_noise, write_wav
from whisperquant.data.manifest import read_manifest
from whisperquant.data.sources.embedded import build_embedded, definition, pack, utterance_ids
from whisperquant.data.sources.noisy import build_noisy, utterance_seed


def test_definition_is_fixed_and_disjoint():
    d = definition()
    ids = [u["id"] for u in d["utterances"]]
    assert len(ids) == len(set(ids))
    ev, cal = set(utterance_ids("eval")), set(utterance_ids("calibration"))
    assert len(ev) == 126 and len(cal) == 32 and not ev & cal
    assert all(len(u["sha256"]) == 64 for u in d["utterances"])


def test_pack_is_greedy_order_preserving_and_never_mixes_sources():
    utts = [{"id": i, "artifact": a} for i, a in
            [("a1", "x"), ("a2", "x"), ("a3", "x"), ("b1", "y"), ("b2", "y"), ("a4", "x"), ("a5", "x")]]
    seconds = {"a1": 6, "a2": 6, "a3": 6, "b1": 20, "b2": 1, "a4": 30, "a5": 2}
    units = [[u["id"] for u in unit] for unit in pack(utts, seconds, 18, 0.5)]
    # a1+a2 = 12.5 s; + a3 would be 19 s > 18: a3 starts the next unit; b1 alone exceeds 18: a unit of its own;
    # b2 cannot join across b1's unit (20 + 0.5 + 1 > 18); a4 (30 s) is alone; a5 starts again
    assert units == [["a1", "a2"], ["a3"], ["b1"], ["b2"], ["a4"], ["a5"]]
    assert [len(u) for u in pack(utts[:3], seconds, 18.9, 0.5)] == [2, 1]  # 6 + 0.5 + 6 + 0.5 + 6 = 19 s
    assert [len(u) for u in pack(utts[:3], seconds, 19, 0.5)] == [3]


def test_packed_units_join_audio_and_references(tmp_path, download_cache):
    ids = ["librivox-0870", "librivox-0880", "librivox-0890", "librispeech-61-70968-0000"]
    single = read_manifest(build_embedded(tmp_path / "single", download_cache, "eval", ids=ids))
    packed = read_manifest(build_embedded(tmp_path / "packed", download_cache, "eval", ids=ids, pack_seconds=12))
    by_id = {r.id: r for r in single}
    units = (tmp_path / "packed" / "units.tsv").read_text().splitlines()
    assert units[0] == "unit\tutterances\tstarts_s"
    members = {line.split("\t")[0]: line.split("\t")[1].split(",") for line in units[1:]}
    assert sorted(members) == sorted(r.id for r in packed)
    assert sorted(u for m in members.values() for u in m) == sorted(ids)
    for r in packed:
        parts = [by_id[u] for u in members[r.id]]
        assert len({p.id.split("-")[0] for p in parts}) == 1  # one source per unit
        assert r.reference == " ".join(p.reference for p in parts)
        expected = sum(float(p.duration) for p in parts) + 0.5 * (len(parts) - 1)
        assert float(r.duration) == pytest.approx(expected, abs=0.002)
        assert float(r.duration) <= 12 or len(parts) == 1
        audio, _ = sf.read(tmp_path / "packed" / r.audio)
        first, _ = sf.read(tmp_path / "single" / parts[0].audio)
        assert (audio[: first.shape[0]] == first).all()  # the unit starts with its first utterance, unchanged


def test_manifest_rows(two_clip_corpus):
    rows = read_manifest(two_clip_corpus)
    assert [r.id for r in rows] == ["librispeech-61-70968-0000", "librivox-0930"]
    ls = rows[0]
    assert ls.reference.startswith("HE BEGAN A CONFUSED COMPLAINT")
    assert float(ls.duration) == pytest.approx(4.905, abs=0.01)
    wav = two_clip_corpus.parent / ls.audio
    assert hashlib.sha256(wav.read_bytes()).hexdigest() == ls.sha256
    audio, rate = sf.read(wav)
    assert rate == 16000 and audio.ndim == 1


def test_rebuild_is_byte_identical(tmp_path, two_clip_corpus, download_cache):
    again = build_embedded(tmp_path, download_cache, "eval", ids=["librispeech-61-70968-0000", "librivox-0930"])
    assert again.read_bytes() == two_clip_corpus.read_bytes()


def test_noisy_condition_is_deterministic_and_at_the_snr(tmp_path, two_clip_corpus):
    a = build_noisy(two_clip_corpus.parent, tmp_path / "a", snr_db=5, seed=7)
    b = build_noisy(two_clip_corpus.parent, tmp_path / "b", snr_db=5, seed=7)
    assert a.read_text() == b.read_text()
    clean = load_audio(two_clip_corpus.parent / "wav" / "librivox-0930.wav")
    noisy = load_audio(tmp_path / "a" / "wav" / "librivox-0930.wav")
    snr = 10 * np.log10(np.mean(clean**2) / np.mean((noisy - clean) ** 2))
    assert snr == pytest.approx(5, abs=0.2)
    # the seed depends on the utterance, not on its position in the corpus
    assert utterance_seed(7, "x") == utterance_seed(7, "x") != utterance_seed(7, "y")


def test_unknown_ids_are_named():
    with pytest.raises(ValueError, match="no-such-utt"):
        utterance_ids("eval", ids=["no-such-utt"])


# --- bad audio: each case named by its utterance id, or repaired ---------------------------


def test_missing_file(tmp_path):
    with pytest.raises(AudioError, match=r"utterance u1: audio file .* does not exist"):
        load_audio(tmp_path / "nope.wav", "u1")


def test_empty_file(tmp_path):
    (tmp_path / "e.wav").write_bytes(b"")
    with pytest.raises(AudioError, match="utterance u2: audio is empty"):
        load_audio(tmp_path / "e.wav", "u2")


def test_corrupt_file(tmp_path):
    (tmp_path / "c.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunkjunkjunk")
    with pytest.raises(AudioError, match="utterance u3: cannot decode audio"):
        load_audio(tmp_path / "c.wav", "u3")


def test_zero_samples(tmp_path):
    sf.write(tmp_path / "z.wav", np.zeros((0,), dtype=np.int16), 16000)
    with pytest.raises(AudioError, match="utterance u4: audio has no samples"):
        load_audio(tmp_path / "z.wav", "u4")


def test_multichannel_is_downmixed(tmp_path):
    t = np.linspace(0, 1, 16000, endpoint=False)
    left, right = 0.5 * np.sin(2 * np.pi * 440 * t), np.zeros_like(t)
    sf.write(tmp_path / "s.wav", np.stack([left, right], axis=1), 16000, subtype="FLOAT")
    mono = load_audio(tmp_path / "s.wav", "u5")
    assert mono.shape == (16000,)
    assert np.allclose(mono, left / 2, atol=1e-6)


def test_other_rates_are_resampled(tmp_path):
    t = np.linspace(0, 1, 44100, endpoint=False)
    sf.write(tmp_path / "r.wav", 0.5 * np.sin(2 * np.pi * 440 * t), 44100, subtype="FLOAT")
    out = load_audio(tmp_path / "r.wav", "u6")
    assert out.shape[0] == 16000
    spectrum = np.abs(np.fft.rfft(out))
    assert abs(np.argmax(spectrum) - 440) <= 1  # 1 Hz bins over one second


def test_wav_roundtrip_is_sample_exact(tmp_path):
    pcm = (np.arange(-32768, 32768, 7, dtype=np.int32)).astype(np.int16)
    write_wav(tmp_path / "x.wav", pcm.astype(np.float32) / 32768.0)
    back, _ = sf.read(tmp_path / "x.wav", dtype="int16")
    assert np.array_equal(back, pcm)


def test_noise_mixing_is_seeded():
    x = np.sin(np.linspace(0, 100, 16000)).astype(np.float32)
    assert np.array_equal(mix_noise(x, 10, 3), mix_noise(x, 10, 3))
    assert not np.array_equal(mix_noise(x, 10, 3), mix_noise(x, 10, 4))
