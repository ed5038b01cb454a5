"""Quantisation: the backend interface, the lazy registry, one module per library.

Public API: :func:`get_backend`, :func:`libraries`, :func:`register`,
:class:`Backend`, :class:`SchemeError`, :data:`DEFAULT_TARGETS`.  Importing
this package imports no torch and no quantisation library.
"""

from .base import DEFAULT_TARGETS, Backend
from .registry import SchemeError, get_backend, libraries, register

__all__ = ["DEFAULT_TARGETS", "Backend", "SchemeError", "get_backend", "libraries", "register"]
