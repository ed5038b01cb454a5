"""Model import: every configured Whisper as an fp32 transformers checkpoint (CTranslate2 reader/converter, Hub)."""
