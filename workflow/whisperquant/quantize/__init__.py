"""Quantisation: the backend contract, the lazy registry, one module per library.

Public API: :func:`get_backend`, :func:`libraries`, :func:`register`; the contracts
:class:`Backend` (every library), :class:`ModuleBackend` (a PyTorch-side library: its
artifact is the quantised ``nn.Module``) and, in :mod:`.engine`, ``Engine`` (a runtime);
:class:`SchemeError`, :class:`LibraryLimitation`, :class:`HostLimitation`;
:data:`DEFAULT_TARGETS`.  Importing this package imports no torch and no quantisation library.
"""

from .base import DEFAULT_TARGETS, Backend
from .errors import HostLimitation, LibraryLimitation, SchemeError
from .modules import ModuleBackend
from .registry import get_backend, libraries, register

__all__ = ["DEFAULT_TARGETS", "Backend", "HostLimitation", "LibraryLimitation", "ModuleBackend", "SchemeError",
           "get_backend", "libraries", "register"]
