"""The greedy decoding rule of every transcription and calibration pass.

It lives with the models because both the quantize stage (calibration decodes
with the evaluation's prompt) and the evaluate stage use it.
"""

from __future__ import annotations

import logging
import re


def is_multilingual(model) -> bool:
    """OpenAI's own rule: English-only checkpoints have 51,864 tokens, multilingual ones more.

    (``generation_config.is_multilingual`` is not reliable: transformers fills it in
    for English-only checkpoints too, and a language token then derails decoding.)
    """
    return int(model.config.vocab_size) >= 51865


def generate_kwargs_for(model, language: str, max_new_tokens: int) -> dict:
    """Greedy decoding; multilingual checkpoints get the language and the transcribe task.

    Plain keyword arguments, as ``WhisperForConditionalGeneration.generate`` documents them and as
    the pipeline's own engines (``quantize/engine.py``) take them.  Also silences the three
    warnings transformers logs on every such call that say nothing about this call (see
    :func:`quiet_whisper_generate_warnings`).
    """
    quiet_whisper_generate_warnings()
    kwargs = {"do_sample": False, "num_beams": 1, "max_new_tokens": max_new_tokens}
    if is_multilingual(model):
        kwargs.update(language=language, task="transcribe")
    return kwargs


# Warnings that transformers 5.24 logs (``transformers.generation.utils``) on *every* short-form
# ``WhisperForConditionalGeneration.generate`` call, however it is called, and that do not apply:
_NOT_OURS = (
    # Whisper's own generate calls GenerationMixin.generate with its prepared generation_config *and*
    # suppress_tokens/begin_suppress_tokens (a workaround in generation_whisper.py, transformers PR
    # #48108); passing our settings as a GenerationConfig object instead changes nothing.  Only that
    # set of arguments is dropped: any other generation argument mixed with a config is still reported.
    re.compile(r"Passing `generation_config` together with generation-related arguments="
               r"\(\{(?:'(?:begin_)?suppress_tokens'(?:, )?)+\}\) is deprecated"),
    # The "attention mask" of an encoder-decoder is the encoder's: Whisper's encoder does not use one
    # (its input is always a 30 s log-mel window, audio padded with silence, as trained), and short-form
    # generate only reads it for batched long-form audio, which the pipeline never decodes.  Every row
    # starts from the same prompt tokens, so there is no decoder padding for a mask to describe either.
    re.compile(r"The attention mask is not set with a batched input, and cannot be inferred from input "
               r"because pad token is same as eos token\."),
    # max_length is generation_config.json's (448, the decoder's positions); max_new_tokens, which we set,
    # takes precedence as the message says, and Whisper's generate caps it at the positions left.
    re.compile(r"Both `max_new_tokens` \(=\d+\) and `max_length`\(=\d+\) seem to have been set\. "
               r"`max_new_tokens` will take precedence\."),
)


class _DropNotOurs(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(p.match(message) for p in _NOT_OURS)


def quiet_whisper_generate_warnings() -> None:
    """Drop exactly the warnings of ``_NOT_OURS`` from transformers' generation logger (idempotent).

    Everything else transformers says about generation, warnings included, still reaches the log.
    """
    logger = logging.getLogger("transformers.generation.utils")
    if not any(isinstance(f, _DropNotOurs) for f in logger.filters):
        logger.addFilter(_DropNotOurs())
