"""OpenAI's published Whisper dimensions, for the ``random`` model source (no imports: config time uses it).

name -> (d_model, layers of the encoder and of the decoder, attention heads, FFN width).  Every
one has 80 mel bins (large-v3: 128), 1,500 audio and 448 text positions and 51,865 tokens (the
English-only ``.en`` models: 51,864).
"""

ARCHITECTURES: dict[str, tuple[int, int, int, int]] = {
    "tiny": (384, 4, 6, 1536),
    "base": (512, 6, 8, 2048),
    "small": (768, 12, 12, 3072),
    "medium": (1024, 24, 16, 4096),
    "large": (1280, 32, 20, 5120),
}


def dims(name: str) -> dict[str, int]:
    """The ``dims`` a model config would state for architecture ``name`` (layer widths)."""
    d, _layers, _heads, ffn = ARCHITECTURES[name]
    return {"d_model": d, "ffn_dim": ffn}
