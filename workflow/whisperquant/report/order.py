"""The report's row order: model, corpus, library, bits descending, scheme (numbers by value), device.

One fixed order, so the summary table, its Markdown and the figures' legends diff cleanly between runs.
"""

from __future__ import annotations

import math
import re

import pandas as pd

__all__ = ["LIBRARY_ORDER", "effective_bits", "sort_summary"]

#: Report order of libraries; unknown libraries follow, alphabetically.
LIBRARY_ORDER = ("fp32", "pytorch", "torchao", "quanto", "hqq", "bnb", "ctranslate2", "onnxruntime", "openvino")


def _library_rank(lib: str) -> tuple[int, str]:
    return (LIBRARY_ORDER.index(lib), "") if lib in LIBRARY_ORDER else (len(LIBRARY_ORDER), lib)


def effective_bits(row: pd.Series) -> float:
    """Bit-width of a row; fp32 rows with empty ``bits`` count as 32."""
    bits = pd.to_numeric(pd.Series([row.get("bits")]), errors="coerce").iloc[0]
    if pd.isna(bits) and str(row.get("library")) == "fp32":
        return 32.0
    return float(bits)


def _natural_key(text: str) -> str:
    """Sort key that orders embedded numbers by value ("g32" < "g64" < "g128"), deterministically."""
    return re.sub(r"\d+", lambda m: f"{int(m.group()):012d}", text.lower()) + "\x00" + text


def sort_summary(df: pd.DataFrame) -> pd.DataFrame:
    """Report order: model, corpus, library (:data:`LIBRARY_ORDER`), bits descending, scheme, device.

    Scheme names compare "naturally" (numbers by value), so group sizes read g32, g64, g128.
    """
    if df.empty:
        return df.copy()
    keys = pd.DataFrame(
        {
            "model": df["model"].astype(str),
            "corpus": df["corpus"].astype(str),
            "lib_rank": [_library_rank(str(x))[0] for x in df["library"]],
            "lib_name": [_library_rank(str(x))[1] for x in df["library"]],
            # bits descending; rows without a bit-width sort last within their library
            "neg_bits": [
                math.inf if math.isnan(b) else -b for b in (effective_bits(r) for _, r in df.iterrows())
            ],
            "scheme": [_natural_key(str(x)) for x in df["scheme"]],
            "device": df["device"].astype(str) if "device" in df.columns else "",
        },
        index=df.index,
    )
    order = keys.sort_values(list(keys.columns), kind="mergesort").index
    return df.loc[order]
