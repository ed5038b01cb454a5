"""Quantisation backends, one module per library, registered by name."""

from . import bnb, fp32, hqq, pytorch, quanto, torchao  # noqa: F401  (registration side effects)
from .base import DEFAULT_TARGETS, REGISTRY, Backend, SchemeError, get_backend

__all__ = ["DEFAULT_TARGETS", "REGISTRY", "Backend", "SchemeError", "get_backend"]
