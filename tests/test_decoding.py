"""Decoding logs: the transformers warnings that come with every Whisper generate call are dropped, nothing else.

The tokens themselves are checked where decoding is (test_quality, test_backends, test_workflow's
transcripts); here, that tiny.en's batched greedy decoding of two real clips logs none of the three
warnings and still gives the tokens it gave before they were silenced.
"""

from __future__ import annotations

import logging

import pytest

# What transformers 5.24 logged on every batch before (verbatim, from a transcription log).
NOT_OURS = [
    "Passing `generation_config` together with generation-related arguments=({'suppress_tokens', "
    "'begin_suppress_tokens'}) is deprecated and will be removed in future versions. Please pass either a "
    "`generation_config` object OR all generation parameters explicitly, but not both.",
    # the same set printed in the other order (set order varies between processes)
    "Passing `generation_config` together with generation-related arguments=({'begin_suppress_tokens', "
    "'suppress_tokens'}) is deprecated and will be removed in future versions.",
    "The attention mask is not set with a batched input, and cannot be inferred from input because pad token is "
    "same as eos token. As a consequence, you may observe unexpected behavior. Please pass your input's "
    "`attention_mask` to obtain reliable results.",
    "Both `max_new_tokens` (=64) and `max_length`(=448) seem to have been set. `max_new_tokens` will take "
    "precedence. Please refer to the documentation for more information. "
    "(https://huggingface.co/docs/transformers/main/en/main_classes/text_generation)",
]
# Near misses that must still be logged: a config mixed with another argument, the other mask warning.
STILL_LOGGED = [
    "Passing `generation_config` together with generation-related arguments=({'temperature'}) is deprecated "
    "and will be removed in future versions.",
    "Passing `generation_config` together with generation-related arguments=({'suppress_tokens', 'top_k'}) is "
    "deprecated and will be removed in future versions.",
    "The attention mask and the pad token id were not set, with a batched input. As a consequence, you may "
    "observe unexpected behavior.",
    "Setting `pad_token_id` to `eos_token_id`:50256 for open-end generation.",
]
# tiny.en's greedy tokens for librispeech-61-70968-0000 and librivox-0930, batched together, 64 new
# tokens at most (recorded before the warnings were silenced; 50256 is <|endoftext|>, the padding).
TOKENS = [
    [679, 2540, 257, 10416, 8224, 1028, 262, 18731, 11, 508, 550, 23717, 2157, 262, 29461, 319, 262, 1364, 13],
    [679, 1244, 772, 423, 587, 925, 716, 3379, 2241, 13, 50256, 50256, 50256, 50256, 50256, 50256, 50256, 50256,
     50256],
]


class _Records(logging.Handler):
    def __init__(self):
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record):
        self.messages.append(record.getMessage())


@pytest.fixture
def generation_log():
    """What reaches transformers' generation logger's handlers (after the logger's own filters)."""
    logger = logging.getLogger("transformers.generation.utils")
    records = _Records()
    logger.addHandler(records)
    try:
        yield records
    finally:
        logger.removeHandler(records)


def test_only_the_warnings_that_do_not_apply_are_dropped(generation_log):
    from whisperquant.models.decoding import quiet_whisper_generate_warnings

    quiet_whisper_generate_warnings()
    quiet_whisper_generate_warnings()  # idempotent: one filter
    logger = logging.getLogger("transformers.generation.utils")
    assert sum(type(f).__name__ == "_DropNotOurs" for f in logger.filters) == 1
    for message in NOT_OURS + STILL_LOGGED:
        logger.warning(message)
    assert generation_log.messages == STILL_LOGGED


@pytest.mark.slow
def test_batched_decoding_logs_none_of_them_and_gives_the_same_tokens(tiny_en, two_clip_corpus, generation_log):
    import torch
    from transformers import WhisperForConditionalGeneration, WhisperProcessor
    from transformers.utils import logging as hf_logging
    from whisperquant.data.audio import load_audio
    from whisperquant.evaluate.transcribe import generate_kwargs_for, load_corpus

    model = WhisperForConditionalGeneration.from_pretrained(str(tiny_en)).eval()
    processor = WhisperProcessor.from_pretrained(str(tiny_en))
    utts = load_corpus(two_clip_corpus)
    feats = processor.feature_extractor([load_audio(u.audio_path, u.id) for u in utts], sampling_rate=16000,
                                        return_tensors="pt").input_features
    hf_logging.warning_once.cache_clear()  # two of them are logged once per process: as if this were the first call
    with torch.no_grad():
        tokens = model.generate(feats, **generate_kwargs_for(model, "en", 64))
    assert [u.id for u in utts] == ["librispeech-61-70968-0000", "librivox-0930"]
    assert tokens.tolist() == TOKENS
    assert generation_log.messages == []
