"""Configuration checks and the grid of cells, shared by the Snakefile and the tests.

- :mod:`.schema`: the JSON schema applied with its defaults; :class:`ConfigError`, whose
  message starts with the offending key path;
- :mod:`.checks`: :func:`check_config`, the rules a schema cannot express, and the
  resolved schemes (:func:`resolve_schemes`);
- :mod:`.grid`: the cells (:func:`cells`: runnable, and unsupported with a reason) and what
  each rule's params hold.

The code digest of each stage is :mod:`whisperquant.provenance`.
"""

from .checks import check_config, model_dims, resolve_schemes
from .grid import (
    QUANTIZE_MEM_FACTOR,
    Cell,
    block_schemes,
    cells,
    device_unavailable,
    downloads_dir,
    grid_blocks,
    grid_corpora,
    grid_models,
    job_mem_mb,
    library_params,
    model_params,
    quantize_mem_factor,
    scheme_names,
    transcription_params,
)
from .schema import SCHEMA, ConfigError, key_path, validate_schema

__all__ = ["QUANTIZE_MEM_FACTOR", "SCHEMA", "Cell", "ConfigError", "block_schemes", "cells", "check_config",
           "device_unavailable", "downloads_dir", "grid_blocks", "grid_corpora", "grid_models", "job_mem_mb",
           "key_path", "library_params", "model_dims", "model_params", "quantize_mem_factor", "resolve_schemes",
           "scheme_names", "transcription_params", "validate_schema"]
