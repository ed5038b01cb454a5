"""The machine a number was measured on: CPU model, the ISA features that change kernels, cores,
GPU, and the versions of every runtime.

WER and speed both depend on the host: fbgemm's int8 kernels round differently with and
without VNNI (PyTorch dynamic int8 on Whisper base: 1.38 % WER on an AVX-512 VNNI host,
2.07 % on an AVX2-only one), torch.ao 8-bit static needs VNNI, CTranslate2 offers int16
only through Intel MKL.  So every quantize and transcription record carries
:func:`host_record`, and the summary a short :func:`host_id` and :func:`isa_label`, so a
table that mixes hosts says so instead of silently comparing them.

Read from ``/proc/cpuinfo`` and the process' CPU affinity (no library needed); GPU facts
from torch when a CUDA device was used.  Nothing here is estimated.
"""

from __future__ import annotations

import hashlib
import os
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

from .threads import available_cores

#: The CPU flags (as /proc/cpuinfo spells them) that select different GEMM kernels in the
#: libraries this project runs, in the order :func:`isa_label` names them.
ISA_FLAGS = (
    "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "avx512_bf16", "avx512_fp16",
    "amx_tile", "amx_int8", "amx_bf16", "neon", "asimd", "asimddp", "sve", "i8mm", "bf16",
)
#: Distributions whose versions decide a cell's numbers (those installed are recorded).
RUNTIMES = (
    "torch", "transformers", "optimum-quanto", "hqq", "bitsandbytes", "torchao", "ctranslate2", "onnxruntime",
    "openvino", "nncf",
)


def _cpuinfo(text: str) -> dict[str, Any]:
    """Model name, vendor and flags of the first processor in a /proc/cpuinfo text."""
    info: dict[str, Any] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            if info.get("flags") is not None:
                break  # the end of the first processor's block
            continue
        key, value = key.strip().lower(), value.strip()
        if key in ("model name", "cpu model", "hardware") and "cpu_model" not in info:
            info["cpu_model"] = value
        elif key == "vendor_id" and "vendor" not in info:
            info["vendor"] = value
        elif key in ("flags", "features") and "flags" not in info:
            info["flags"] = value.split()
    return info


def cpu_facts(cpuinfo_path: str | Path = "/proc/cpuinfo") -> dict[str, Any]:
    """CPU model, vendor, machine and the kernel-relevant ISA features present (:data:`ISA_FLAGS`)."""
    try:
        info = _cpuinfo(Path(cpuinfo_path).read_text(encoding="utf-8", errors="replace"))
    except OSError:
        info = {}
    flags = set(info.get("flags") or ())
    return {
        "cpu_model": info.get("cpu_model") or platform.processor() or platform.machine(),
        "cpu_vendor": info.get("vendor", ""),
        "machine": platform.machine(),
        "isa": [f for f in ISA_FLAGS if f in flags],
        "isa_known": bool(info.get("flags")),
    }


def _versions() -> dict[str, str]:
    out = {}
    for name in RUNTIMES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def gpu_facts() -> dict[str, Any] | None:
    """Name, compute capability and driver of the CUDA device in use, or None without one."""
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    i = torch.cuda.current_device()
    props = torch.cuda.get_device_properties(i)
    facts = {"name": props.name, "capability": f"{props.major}.{props.minor}",
             "memory_mb": round(props.total_memory / 2**20), "cuda": torch.version.cuda}
    try:
        import pynvml  # nvidia-ml-py, where installed

        pynvml.nvmlInit()
        facts["driver"] = pynvml.nvmlSystemGetDriverVersion()
    except Exception:  # no NVML: the driver stays unrecorded, with the reason
        facts["driver"] = None
        facts["driver_reason"] = "NVML not available (nvidia-ml-py not installed or no driver library)"
    return facts


def host_record(threads: int | None = None, device: str = "cpu") -> dict[str, Any]:
    """What a record says of the machine it was made on (see the module docstring)."""
    rec: dict[str, Any] = {**cpu_facts(), "cores_available": available_cores(), "cpu_count": os.cpu_count(),
                           "hostname": platform.node(), "os": f"{platform.system()} {platform.release()}",
                           "python": platform.python_version(), "versions": _versions()}
    if threads is not None:
        rec["threads"] = int(threads)
    if device == "cuda":
        rec["gpu"] = gpu_facts()
    rec["id"] = host_id(rec)
    return rec


def isa_label(host: dict | None) -> str:
    """The kernel-relevant features of a host record, joined: ``avx2+fma+avx512f+avx512_vnni``."""
    if not host:
        return ""
    isa = [f for f in host.get("isa", ()) if f not in ("fma", "f16c", "avx512bw")]  # implied by the rest here
    return "+".join(isa) if isa else ("none" if host.get("isa_known") else "unknown")


def host_id(host: dict | None) -> str:
    """A short id for a kind of machine: CPU model, ISA, cores available and GPU (not the hostname:
    two nodes of one type are one host for comparing speed)."""
    if not host:
        return ""
    gpu = (host.get("gpu") or {}).get("name", "")
    key = "|".join([str(host.get("cpu_model", "")), ",".join(host.get("isa", ())), str(host.get("cores_available")),
                    gpu])
    words = str(host.get("cpu_model") or host.get("machine") or "cpu").lower().replace("(r)", "").replace("(tm)", "")
    stem = "-".join(w for w in words.replace("@", " ").split() if w.isalnum() and w not in ("cpu", "processor"))[:24]
    return f"{stem or 'cpu'}-{host.get('cores_available')}c-{hashlib.sha256(key.encode()).hexdigest()[:6]}"


def lacks(host: dict, *features: str) -> bool:
    """Whether ``host`` is known to have none of ``features`` (False when its flags are unknown)."""
    return bool(host.get("isa_known")) and not set(features) & set(host.get("isa", ()))


def describe(host: dict | None) -> str:
    """One line for a person: ``AMD EPYC (AuthenticAMD), avx2, 2 cores``."""
    if not host:
        return "unknown host"
    vendor = f" ({host['cpu_vendor']})" if host.get("cpu_vendor") else ""
    gpu = (host.get("gpu") or {}).get("name")
    return (f"{host.get('cpu_model')}{vendor}, {isa_label(host)}, {host.get('cores_available')} cores"
            + (f", GPU {gpu}" if gpu else ""))
