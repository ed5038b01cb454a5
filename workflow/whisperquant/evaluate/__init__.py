"""Evaluation: the transcription engine, WER scoring with Whisper's normaliser, and the statistics of it."""
