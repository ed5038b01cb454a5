"""The greedy decoding rule of every transcription and calibration pass.

It lives with the models because both the quantize stage (calibration decodes
with the evaluation's prompt) and the evaluate stage use it.
"""

from __future__ import annotations


def is_multilingual(model) -> bool:
    """OpenAI's own rule: English-only checkpoints have 51,864 tokens, multilingual ones more.

    (``generation_config.is_multilingual`` is not reliable: transformers fills it in
    for English-only checkpoints too, and a language token then derails decoding.)
    """
    return int(model.config.vocab_size) >= 51865


def generate_kwargs_for(model, language: str, max_new_tokens: int) -> dict:
    """Greedy decoding; multilingual checkpoints get the language and the transcribe task."""
    kwargs = {"do_sample": False, "num_beams": 1, "max_new_tokens": max_new_tokens}
    if is_multilingual(model):
        kwargs.update(language=language, task="transcribe")
    return kwargs
