"""What a backend raises: a scheme it cannot honour (config time), a library or host that cannot do
what a scheme asks (run time).

A module of its own so that the backend contract (:mod:`.base`), the registry and the
mixed-precision checks can all raise them without importing each other.
"""

from __future__ import annotations


class SchemeError(ValueError):
    """A scheme whose parameters a backend cannot honour (raised at config time)."""


class LibraryLimitation(RuntimeError):
    """Raised by a backend at run time when its library cannot do what a scheme asks.

    The only exception a job turns into a ``failed`` row (a missing kernel, a shape
    the library rejects); every other exception fails the job loudly.  Raise it from
    the library's own error: ``raise LibraryLimitation("no int2 kernel on CPU") from e``.
    """


class HostLimitation(LibraryLimitation):
    """The host where the job ran lacks what the scheme needs: an ISA feature (VNNI for
    torch.ao 8-bit static), a compute type a runtime's build offers only on other CPUs.

    An ``unsupported`` row naming the host's feature, not a ``failed`` one: a run's
    failed rows are only real failures.  The message should name the host
    (:func:`whisperquant.evaluate.host.describe`) and what it lacks.
    """
