"""Quantisation: the backend interface, the lazy registry, one module per library.

Public API: :func:`get_backend`, :func:`libraries`, :func:`register`,
:class:`Backend`, :class:`SchemeError`, :class:`LibraryLimitation`, :class:`HostLimitation`,
:data:`DEFAULT_TARGETS`.  Importing
this package imports no torch and no quantisation library.
"""

from .base import DEFAULT_TARGETS, Backend
from .registry import HostLimitation, LibraryLimitation, SchemeError, get_backend, libraries, register

__all__ = ["DEFAULT_TARGETS", "Backend", "HostLimitation", "LibraryLimitation", "SchemeError", "get_backend",
           "libraries", "register"]
