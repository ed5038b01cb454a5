"""Every quantisation backend on a small random-weight Whisper (no Hub, CPU only).

For each scheme variant below:

* the target Linears really change representation (module / weight type and the
  dtype of what is stored), and no full-precision copy of a target weight is
  left in the artifact;
* ``generate()`` runs;
* save -> load in a *fresh process* gives the tokens (and decoder logits) of the
  in-memory model, generated after saving (bitsandbytes 4-bit repacks its
  weights at the first forward on CPU, so saving comes first);
* the bytes of the quantised modules in the artifact (``sizes.artifact_sizes``)
  are at most fp32 bytes / the factor stated for the variant.

The variants cover every parameter value of every library at least once; the
full cross products (HQQ 5 bit-widths x 3 group sizes, bitsandbytes types x
double quantisation x compute dtypes, quanto weights x activations) were run
through the same checks by hand, which take too long for the suite on 2 cores.

Config-time rejection (no model loaded) is tested at the end.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from whisperquant.quantize import DEFAULT_TARGETS, SchemeError, get_backend
from whisperquant.quantize.backends.pytorch import _x86_without_vnni
from workflow_utils import package_env


@dataclass(frozen=True)
class Variant:
    id: str
    library: str
    params: dict
    module: str  # class name of each target module after quantisation
    weight: str  # class name of what holds the weight (or "-" when the module has no .weight)
    kind: str  # "weight-only" | "dynamic" | "static": must appear in method()
    factor: float  # fp32 bytes of the target modules / artifact bytes of them, at least


# Size factors, per quantised weight (fp32 = 32 bits).  On this model every
# target is 256x256, 1024x256 or 256x1024, so per-channel overheads are small:
#   int8 + one fp32 scale per output row (+ bias, fp32)         ~3.9x -> >= 3.5
#   hqq 8-bit g128: 8 + (fp16 scale + zero)/128 = 8.25 bits      3.88x -> >= 3.5
#   4-bit nf4/fp4 (bnb blocks of 64, fp32 absmax): 4.5 bits       ~7.0x -> >= 6.0
#     with double quantisation (8-bit absmax):                    ~7.5x -> >= 7.0
#   hqq 4-bit g64: 4 + 32/64 = 4.5 bits                           7.0x -> >= 6.0
#   quanto int4 (group 128, fp32 scale + shift): 4.5 bits         7.0x -> >= 6.0
#   hqq 3-bit g128 (10 values per int32 = 3.2 bits) + 0.25       9.3x -> >= 8.0
#   hqq 2-bit g64: 2 + 0.5 = 2.5 bits                            12.4x -> >= 10.0
#   quanto int2 (group 128): 2.5 bits                            12.4x -> >= 10.0
#   hqq 1-bit g32: 1 + 1 = 2 bits -- the fp16 scale and zero of a group
#     of 32 cost 1 bit per weight (hqq's default meta_dtype, float16):       >= 10.0
# (Biases stay fp32 everywhere; they are counted in the module bytes.)
#: This host is x86 without VNNI (read from its CPU flags, as the backend reads them).
NO_VNNI = _x86_without_vnni()
VARIANTS = [
    Variant("pytorch-dynamic-per_tensor", "pytorch", {"mode": "dynamic", "granularity": "per_tensor"},
            "Linear", "method", "dynamic", 3.5),
    Variant("pytorch-dynamic-per_channel", "pytorch", {"mode": "dynamic", "granularity": "per_channel"},
            "Linear", "method", "dynamic", 3.5),
    # 8-bit activations need VNNI (fbgemm saturates without it: refused, see test_full_grid_runs_on_cpu);
    # on a host without it these two run with 7-bit activations, as the refusal says to
    Variant("pytorch-static-histogram", "pytorch", {"mode": "static", "reduce_range": NO_VNNI}, "_Static", "-",
            "static", 3.5),
    Variant("pytorch-static-minmax-per_channel-rr", "pytorch",
            {"mode": "static", "observer": "minmax", "granularity": "per_channel", "reduce_range": True},
            "_Static", "-", "static", 3.5),
    Variant("pytorch-static-float-output", "pytorch",
            {"mode": "static", "granularity": "per_channel", "output": "float", "reduce_range": NO_VNNI},
            "StaticFloatOutputLinear", "-", "static", 3.5),
    Variant("torchao-int8-dynamic", "torchao", {"config": "int8_dynamic_activation_int8_weight"},
            "Linear", "Int8Tensor", "dynamic", 3.5),
    Variant("torchao-int8-static-asym", "torchao",
            {"config": "int8_static_activation_int8_weight", "act_mapping": "asymmetric"},
            "Linear", "Int8Tensor", "static", 3.5),
    Variant("torchao-int8-static-sq", "torchao",
            {"config": "int8_static_activation_int8_weight", "smoothquant": True},
            "Linear", "Int8Tensor", "static", 3.4),
    Variant("torchao-int8-dynamic-sq-alpha0.8", "torchao",
            {"config": "int8_dynamic_activation_int8_weight", "smoothquant": True, "smoothquant_alpha": 0.8},
            "Linear", "Int8Tensor", "dynamic", 3.4),
    Variant("torchao-int8-weight-only-per_tensor", "torchao",
            {"config": "int8_weight_only", "granularity": "per_tensor"}, "Linear", "Int8Tensor", "weight-only", 3.5),
    Variant("quanto-w8", "quanto", {"weights": "int8"}, "QLinear", "WeightQBytesTensor", "weight-only", 3.5),
    Variant("quanto-wf8", "quanto", {"weights": "float8"}, "QLinear", "WeightQBytesTensor", "weight-only", 3.5),
    Variant("quanto-w4", "quanto", {"weights": "int4"}, "QLinear", "WeightQBitsTensor", "weight-only", 6.0),
    Variant("quanto-w2", "quanto", {"weights": "int2"}, "QLinear", "WeightQBitsTensor", "weight-only", 10.0),
    Variant("quanto-w8a8", "quanto", {"weights": "int8", "activations": "int8"},
            "QLinear", "WeightQBytesTensor", "static", 3.5),
    Variant("quanto-wf8af8", "quanto", {"weights": "float8", "activations": "float8"},
            "QLinear", "WeightQBytesTensor", "static", 3.5),
    Variant("hqq-1bit-g32", "hqq", {"bits": 1, "group_size": 32}, "HQQLinear", "-", "weight-only", 10.0),
    Variant("hqq-2bit-g64", "hqq", {"bits": 2, "group_size": 64}, "HQQLinear", "-", "weight-only", 10.0),
    Variant("hqq-3bit-g128", "hqq", {"bits": 3, "group_size": 128}, "HQQLinear", "-", "weight-only", 8.0),
    Variant("hqq-4bit-g64", "hqq", {"bits": 4, "group_size": 64}, "HQQLinear", "-", "weight-only", 6.0),
    # float32 scales and zeros: 4 + 64/64 = 5 bits, 6.4x
    Variant("hqq-4bit-g64-meta32", "hqq", {"bits": 4, "group_size": 64, "meta_dtype": "float32"}, "HQQLinear", "-",
            "weight-only", 6.0),
    Variant("hqq-8bit-g128", "hqq", {"bits": 8, "group_size": 128}, "HQQLinear", "-", "weight-only", 3.5),
    Variant("bnb-int8", "bnb", {"quant_type": "int8", "threshold": 6.0},
            "Linear8bitLt", "Int8Params", "dynamic", 3.5),
    Variant("bnb-nf4", "bnb", {"quant_type": "nf4"}, "Linear4bit", "Params4bit", "weight-only", 6.0),
    Variant("bnb-fp4-dq-fp16", "bnb", {"quant_type": "fp4", "double_quant": True, "compute_dtype": "float16"},
            "Linear4bit", "Params4bit", "weight-only", 7.0),
    Variant("bnb-nf4-dq-bf16", "bnb", {"quant_type": "nf4", "double_quant": True, "compute_dtype": "bfloat16"},
            "Linear4bit", "Params4bit", "weight-only", 7.0),
]
IDS = [v.id for v in VARIANTS]
BY_ID = {v.id: v for v in VARIANTS}

# Stored dtypes that count as "quantised" for a target weight in the artifact.
_QUANT_DTYPES = {"I8", "U8", "I32", "F8_E4M3", "F8_E5M2"}


def _resolve(v: Variant) -> dict:
    return get_backend(v.library).resolve(v.id, dict(v.params))


def _safetensors_header(path: Path) -> dict:
    import struct

    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        return json.loads(f.read(n))


# The fresh process: a second Python interpreter, started before the first
# variant is quantised, that reads one job (JSON) per line from stdin as each
# artifact is saved, loads it with its backend, greedy-decodes the evaluation
# features and answers with the tokens and the logits of one teacher-forced
# decoder pass.  It runs while the test process quantises the next variant
# (both on one thread, so that the float arithmetic is the same in both).
_RELOAD = r"""
import json, sys, warnings
from pathlib import Path
warnings.filterwarnings("ignore")
import torch
from safetensors.torch import load_file
from whisperquant.quantize import get_backend
torch.set_num_threads(1)
base, feats = Path(sys.argv[1]), load_file(sys.argv[2])["eval"]
print(json.dumps({"ready": True}), flush=True)
for line in sys.stdin:
    item = json.loads(line)
    try:
        m = get_backend(item["library"]).load(base, item["params"], Path(item["artifact"]), "cpu")
        with torch.no_grad():
            tok = m.generate(feats)
            logits = m(input_features=feats, decoder_input_ids=tok).logits
        res = {"tokens": tok.tolist(), "logits": logits.flatten()[:4096].tolist()}
    except Exception as e:
        res = {"error": f"{type(e).__name__}: {e}"}
    print(json.dumps({"id": item["id"], **res}), flush=True)
"""


def _fresh_process(base: Path, features, work: Path) -> subprocess.Popen:
    from safetensors.torch import save_file

    save_file({"eval": features.contiguous()}, str(work / "features.safetensors"))
    env = package_env()
    return subprocess.Popen([sys.executable, "-c", _RELOAD, str(base), str(work / "features.safetensors")],
                            env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=open(work / "stderr.txt", "w"), text=True)


@pytest.fixture(scope="module")
def quantized(tiny_whisper_dir, tiny_whisper_features, tmp_path_factory):
    """Quantise, inspect, save (and hand to the fresh process), then generate in memory -- every variant."""
    import warnings

    import torch
    from whisperquant.quantize.modules import load_fp32, target_linears

    warnings.filterwarnings("ignore", message=".*max_new_tokens.*")
    root = tmp_path_factory.mktemp("artifacts")
    feats = tiny_whisper_features["eval"]
    names = target_linears(load_fp32(tiny_whisper_dir), DEFAULT_TARGETS)
    fresh = _fresh_process(tiny_whisper_dir, feats, root)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    results, sent = {}, 0
    try:
        for v in VARIANTS:
            backend = get_backend(v.library)
            params = _resolve(v)
            art = root / v.id
            art.mkdir()
            try:
                calib = tiny_whisper_features["calibration"] if backend.needs_calibration(params) else None
                model = backend.quantize(tiny_whisper_dir, params, calib)
                mods = [model.get_submodule(n) for n in names]
                rep = {(type(m).__name__, type(m.weight).__name__ if hasattr(m, "weight") else "-") for m in mods}
                backend.save(model, params, art)  # before any forward (bnb 4-bit repacks on the first one)
                fresh.stdin.write(json.dumps({"id": v.id, "library": v.library, "params": params,
                                              "artifact": str(art)}) + "\n")
                fresh.stdin.flush()
                sent += 1
                with torch.no_grad():
                    tok = model.generate(feats)
                    logits = model(input_features=feats, decoder_input_ids=tok).logits
                results[v.id] = {"params": params, "artifact": art, "representation": rep,
                                 "tokens": tok.tolist(), "logits": logits.flatten()[:4096].tolist()}
            except Exception as e:  # reported by each test of this variant
                results[v.id] = {"error": f"{type(e).__name__}: {e}"}
        fresh.stdin.close()
        answers = [json.loads(line) for line in fresh.stdout]
        fresh.wait(timeout=600)
    finally:
        torch.set_num_threads(threads)
        if fresh.poll() is None:
            fresh.kill()
    reloaded = {a["id"]: a for a in answers if "id" in a}
    if len(reloaded) != sent:
        pytest.fail(f"fresh process answered {len(reloaded)} of {sent} artifacts (rc {fresh.returncode}):\n"
                    + (root / "stderr.txt").read_text()[-3000:])
    return {"names": names, "results": results, "reloaded": reloaded}


def _ok(quantized, vid):
    r = quantized["results"][vid]
    if "error" in r:
        pytest.fail(f"{vid}: quantise/save/generate failed: {r['error']}")
    return r


@pytest.mark.parametrize("vid", IDS)
def test_target_linears_change_representation(quantized, vid):
    v, r = BY_ID[vid], _ok(quantized, vid)
    assert r["representation"] == {(v.module, v.weight)}, r["representation"]
    # ...and what is stored for them is packed/integer/float8, never a full float matrix.
    header = _safetensors_header(next(Path(r["artifact"]).glob("*.safetensors")))
    for name in quantized["names"]:
        stored = {k: h for k, h in header.items() if k.startswith(name + ".")}
        assert stored, f"{vid}: nothing stored for {name}"
        assert any(h["dtype"] in _QUANT_DTYPES for h in stored.values()), (name, stored)
        for k, h in stored.items():
            if h["dtype"] in ("F32", "F16", "BF16"):
                n = 1
                for d in h["shape"]:
                    n *= d
                assert n < 256 * 256, f"{vid}: full-precision {k} {h['shape']} left in the artifact"


@pytest.mark.parametrize("vid", IDS)
def test_generate_and_fresh_process_reload_give_identical_tokens(quantized, vid):
    r = _ok(quantized, vid)
    assert len(r["tokens"][0]) > 3, r["tokens"]  # generate() decoded something
    back = quantized["reloaded"][vid]
    assert "error" not in back, back.get("error")
    assert back["tokens"] == r["tokens"]
    diff = max(abs(a - b) for a, b in zip(back["logits"], r["logits"], strict=True))
    scale = max(abs(a) for a in r["logits"])
    assert diff <= 1e-5 * scale, f"{vid}: reloaded logits differ by {diff} (max |logit| {scale})"


@pytest.mark.parametrize("vid", IDS)
def test_artifact_is_smaller_by_the_bit_width_factor(quantized, tiny_whisper_dir, vid):
    from whisperquant.quantize.sizes import artifact_sizes

    v, r = BY_ID[vid], _ok(quantized, vid)
    fp32 = artifact_sizes(tiny_whisper_dir, quantized["names"])["quantized_module_bytes"]
    q = artifact_sizes(r["artifact"], quantized["names"])["quantized_module_bytes"]
    assert q > 0
    assert fp32 / q >= v.factor, f"{vid}: only {fp32 / q:.2f}x smaller than fp32 (expected >= {v.factor}x)"


def test_hqq_stores_scales_and_zeros_in_float16_by_default(quantized):
    """As hqq keeps them in its usual float16 setting; ``meta_dtype: float32`` costs 2 bytes more per value."""
    from safetensors import safe_open

    paths = {v: Path(_ok(quantized, v)["artifact"]) / "model.safetensors"
             for v in ("hqq-4bit-g64", "hqq-4bit-g64-meta32")}
    meta = {}
    for v, path in paths.items():
        with safe_open(str(path), "pt") as f:
            meta[v] = {k: f.get_slice(k) for k in f.keys() if k.endswith((".scale", ".zero"))}  # noqa: SIM118
    assert {s.get_dtype() for s in meta["hqq-4bit-g64"].values()} == {"F16"}
    assert {s.get_dtype() for s in meta["hqq-4bit-g64-meta32"].values()} == {"F32"}
    values = sum(math.prod(s.get_shape()) for s in meta["hqq-4bit-g64"].values())
    extra = paths["hqq-4bit-g64-meta32"].stat().st_size - paths["hqq-4bit-g64"].stat().st_size
    assert abs(extra - 2 * values) < 4096  # the safetensors header differs a little


@pytest.mark.parametrize("vid", IDS)
def test_declarations_agree_with_each_other(vid):
    """What a backend declares about a scheme (kind, calibration, compute dtype, bits) is one story.

    Weight-only schemes dequantise into a float matmul, so they must not claim int8 compute;
    dynamic and static schemes quantise activations too (int8, or float8 for quanto's float8
    activations); only static ones calibrate -- and SmoothQuant, whose smoothing factor comes
    from the calibration set whatever the activation quantiser.
    """
    v = BY_ID[vid]
    b, p = get_backend(v.library), _resolve(v)
    method, compute = b.method(p), b.compute_dtype(p, "cpu")
    assert v.kind in method, method
    assert ("static" in method) == (v.kind == "static")
    assert b.needs_calibration(p) == (v.kind == "static" or "SmoothQuant" in method)
    if v.kind == "weight-only":
        assert compute in ("float32", "float16", "bfloat16"), compute
    else:
        assert compute.startswith("int8") or compute.startswith("float8"), compute
    assert b.bits(p) in (1, 2, 3, 4, 8)
    reason = b.unsupported_reason(p, "cpu")
    # The only CPU restriction: torch.ao static with full 8-bit activations on an x86 CPU without VNNI.
    assert reason is None or "VNNI" in reason, reason


def test_bnb_compute_dtype_is_honoured_on_cpu(tiny_whisper_dir):
    """float32 compute is dequantise-then-F.linear in float32, and differs from bfloat16 compute."""
    import torch
    from bitsandbytes.functional import dequantize_4bit

    b = get_backend("bnb")
    x = torch.randn(3, 256, generator=torch.Generator().manual_seed(0))
    out = {}
    for dt in ("float32", "bfloat16"):
        model = b.quantize(tiny_whisper_dir, b.resolve(dt, {"quant_type": "nf4", "compute_dtype": dt}))
        lin = model.get_submodule("model.encoder.layers.0.fc1")
        w = dequantize_4bit(lin.weight.data, lin.weight.quant_state).float()
        with torch.no_grad():
            out[dt] = lin(x)
        if dt == "float32":
            assert torch.equal(out[dt], torch.nn.functional.linear(x, w, lin.bias.float()))
    assert not torch.equal(out["float32"], out["bfloat16"])


# --------------------------------------------------------------------------- the full grid


def _full_grid() -> list[tuple[str, dict]]:
    g = [("pytorch", {"mode": "dynamic", "granularity": gr}) for gr in ("per_tensor", "per_channel")]
    g += [("pytorch", {"mode": "static", "granularity": gr, "observer": o, "reduce_range": r})
          for gr in ("per_tensor", "per_channel") for o in ("minmax", "histogram") for r in (False, True)]
    g += [("pytorch", {"mode": "static", "granularity": "per_channel", "output": "float", "reduce_range": r})
          for r in (False, True)]
    g += [("torchao", {"config": c, "granularity": gr, "act_mapping": a})
          for c in ("int8_dynamic_activation_int8_weight", "int8_static_activation_int8_weight", "int8_weight_only")
          for gr in ("per_channel", "per_tensor") for a in ("symmetric", "asymmetric")
          if not (c == "int8_weight_only" and a == "asymmetric")]
    g += [("torchao", {"config": c, "smoothquant": True, "act_mapping": a})
          for c in ("int8_dynamic_activation_int8_weight", "int8_static_activation_int8_weight")
          for a in ("symmetric", "asymmetric")]
    g += [("quanto", {"weights": w, "activations": a})
          for w in ("int8", "int4", "int2", "float8") for a in ("none", "int8", "float8")]
    g += [("hqq", {"bits": bits, "group_size": gs}) for bits in (1, 2, 3, 4, 8) for gs in (32, 64, 128)]
    g += [("hqq", {"bits": bits, "group_size": 64, "axis": 0}) for bits in (1, 4, 8)]
    g += [("bnb", {"quant_type": "int8", "threshold": t}) for t in (0.0, 6.0)]
    g += [("bnb", {"quant_type": q, "double_quant": d, "compute_dtype": c})
          for q in ("nf4", "fp4") for d in (False, True) for c in ("float32", "float16", "bfloat16")]
    return g


FULL_GRID = _full_grid()
#: The variants' combinations as the backends resolve them (this host's ``reduce_range`` included).
_VARIANT_PARAMS = [(v.library, _resolve(v)) for v in VARIANTS]
#: The full grid less what a variant already is: the ``quantized`` fixture checks those more strictly
#: (reload in a fresh process, representation, size factor), so they are not quantised a second time here.
FULL_GRID_REST = [(lib, p) for lib, p in FULL_GRID
                  if (lib, get_backend(lib).resolve("grid", dict(p))) not in _VARIANT_PARAMS]


@pytest.mark.slow
@pytest.mark.parametrize(("library", "params"), FULL_GRID_REST,
                         ids=[f"{lib}-" + "-".join(map(str, p.values())) for lib, p in FULL_GRID_REST])
def test_full_grid_runs_on_cpu(tiny_whisper_dir, tiny_whisper_features, tmp_path, library, params):
    """Every combination the study lists that no variant above is: quantise -> save -> load (same process)
    -> same tokens."""
    import torch
    from whisperquant.quantize.modules import load_fp32, target_linears
    from whisperquant.quantize.sizes import artifact_sizes

    b = get_backend(library)
    p = b.resolve("grid", params)
    reason = b.unsupported_reason(p, "cpu")
    assert reason is None or "VNNI" in reason, reason
    if reason:  # what this host lacks: refused before any work, naming the host and the fix
        from whisperquant.quantize import HostLimitation

        with pytest.raises(HostLimitation, match=r"lacks VNNI.*set reduce_range: true"):
            b.quantize(tiny_whisper_dir, p, tiny_whisper_features["calibration"])
        return
    names = target_linears(load_fp32(tiny_whisper_dir), p["targets"])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        calib = tiny_whisper_features["calibration"] if b.needs_calibration(p) else None
        model = b.quantize(tiny_whisper_dir, p, calib)
        b.save(model, p, tmp_path)
        with torch.no_grad():
            tokens = model.generate(tiny_whisper_features["eval"])
            again = b.load(tiny_whisper_dir, p, tmp_path, "cpu").generate(tiny_whisper_features["eval"])
    finally:
        torch.set_num_threads(threads)
    assert tokens.tolist() == again.tolist()
    fp32 = artifact_sizes(tiny_whisper_dir, names)["quantized_module_bytes"]
    q = artifact_sizes(tmp_path, names)["quantized_module_bytes"]
    # Loose bound for every cell (the per-scheme factors are checked above): 8-bit and wider
    # metadata stay above 3x, 4-bit and below above 5x.
    assert fp32 / q >= (3.0 if b.bits(p) >= 8 else 5.0), fp32 / q


# --------------------------------------------------------------------------- config time


def test_unknown_library_is_rejected_naming_the_scheme():
    from whisperquant.config import ConfigError, resolve_schemes

    with pytest.raises(SchemeError, match="unknown library 'nope'"):
        get_backend("nope")
    with pytest.raises(ConfigError, match=r"schemes\.my-scheme\.library: .*'nope'.*valid: .*torchao"):
        resolve_schemes({"schemes": {"my-scheme": {"library": "nope"}}})


@pytest.mark.parametrize(("library", "params", "key"), [
    # HQQ's Quantizer accepts 5 and 6 bits but stores them one value per byte
    # ("8bit_u8", "todo: bitpacking" in hqq 0.2.8): a "5-bit" artifact would be
    # exactly as large as 8-bit.  The study offers the widths hqq really packs.
    ("hqq", {"bits": 5}, "bits"),
    ("hqq", {"bits": 1.58}, "bits"),
    ("hqq", {"group_size": 48}, "group_size"),
    ("bnb", {"quant_type": "int4"}, "quant_type"),
    ("bnb", {"quant_type": "int8", "double_quant": True}, "double_quant"),
    ("quanto", {"weights": "int3"}, "weights"),
    ("quanto", {"activations": "int4"}, "activations"),
    ("pytorch", {"mode": "qat"}, "mode"),
    ("pytorch", {"reduce_range": "yes"}, "reduce_range"),
    ("torchao", {"config": "int4_weight_only"}, "config"),
    ("torchao", {"config": "int8_weight_only", "act_mapping": "asymmetric"}, "act_mapping"),
    ("torchao", {"bits": 4}, "bits"),  # unknown key
    ("torchao", {"config": "int8_weight_only", "smoothquant": True}, "smoothquant"),
    ("torchao", {"smoothquant": True, "smoothquant_alpha": 1.5}, "smoothquant_alpha"),
    ("torchao", {"smoothquant": True, "smoothquant_alpha": 1}, "smoothquant_alpha"),  # an int
])
def test_bad_parameters_are_rejected_naming_scheme_and_key(library, params, key):
    with pytest.raises(SchemeError, match=rf"^schemes\.bad-scheme\.{key}: "):
        get_backend(library).resolve("bad-scheme", params)


def test_group_size_must_divide_the_layer_width():
    b = get_backend("hqq")
    p = b.resolve("hqq-g256", {"bits": 4, "group_size": 256})
    tiny_en = {"d_model": 384, "ffn_dim": 1536}
    with pytest.raises(SchemeError, match=r"^schemes\.hqq-g256\.group_size: 256 does not divide .*d_model=384"):
        b.check_model("hqq-g256", p, tiny_en)
    b.check_model("hqq-g128", b.resolve("hqq-g128", {"group_size": 128}), tiny_en)


@pytest.mark.parametrize(("library", "params", "needs"), [
    ("pytorch", {"mode": "static"}, True),
    ("pytorch", {"mode": "dynamic"}, False),
    ("torchao", {"config": "int8_static_activation_int8_weight"}, True),
    ("torchao", {"config": "int8_dynamic_activation_int8_weight"}, False),
    ("torchao", {"config": "int8_weight_only"}, False),
    ("torchao", {"config": "int8_dynamic_activation_int8_weight", "smoothquant": True}, True),
    ("quanto", {"weights": "int8", "activations": "int8"}, True),
    ("quanto", {"weights": "int4", "activations": "float8"}, True),
    ("quanto", {"weights": "int8"}, False),
    ("hqq", {}, False),
    ("bnb", {}, False),
    ("fp32", {}, False),
])
def test_static_schemes_need_calibration(library, params, needs):
    b = get_backend(library)
    assert b.needs_calibration(b.resolve("s", params)) is needs


@pytest.mark.parametrize(("library", "params"), [
    ("pytorch", {"mode": "static", "reduce_range": True}),  # runs on every x86 CPU
    ("torchao", {"config": "int8_static_activation_int8_weight"}),
    ("torchao", {"smoothquant": True}),
    ("quanto", {"activations": "int8"}),
])
def test_static_scheme_without_calibration_set_fails(tiny_whisper_dir, library, params):
    b = get_backend(library)
    with pytest.raises(ValueError, match="calibration"):
        b.quantize(tiny_whisper_dir, b.resolve("s", params), None)


def test_devices_are_declared():
    for library in ("pytorch", "torchao"):
        b = get_backend(library)
        assert "no cuda implementation" in b.unsupported_reason(b.resolve("s", {}), "cuda")


def test_smoothquant_factor_and_static_scale_are_torchaos():
    """One pass of per-channel min/max gives what torchao's SmoothQuantObserver computes from every
    stored input: the same smoothing factor, and the same per-tensor scale of the smoothed input
    (torchao's observer quantises x / s itself).  Inputs with an outlier channel, as Whisper's have."""
    import torch
    from torchao.prototype.smoothquant.core import SmoothQuantObserver
    from torchao.quantization import PerTensor
    from torchao.quantization.quantize_.workflows import QuantizeTensorToInt8Kwargs
    from whisperquant.quantize.backends.torchao import _static_qparams, smoothing_factor

    torch.manual_seed(0)
    weight = torch.randn(48, 64)
    batches = [torch.randn(2, 7, 64) * (1 + 40 * (torch.arange(64) == 5)) for _ in range(3)]
    ref = SmoothQuantObserver(weight, alpha=0.5)
    for x in batches:
        ref(x)
    kwargs = QuantizeTensorToInt8Kwargs(granularity=PerTensor())
    ref_s, ref_scale, _ = ref.calculate_qparams(weight_quant_kwargs=kwargs)

    flat = torch.cat([x.reshape(-1, 64) for x in batches])
    lo, hi = flat.amin(0), flat.amax(0)
    s = smoothing_factor(lo, hi, weight, 0.5)
    torch.testing.assert_close(s, ref_s, rtol=1e-6, atol=0)
    from torchao.quantization import MappingType
    scale, _ = _static_qparams((lo / s).min().item(), (hi / s).max().item(), MappingType.SYMMETRIC)
    torch.testing.assert_close(scale.flatten(), ref_scale.flatten(), rtol=1e-6, atol=0)
    # and smoothing really flattens the outlier: the input's range shrinks relative to its median channel
    spread = lambda a, b: (torch.maximum(a.abs(), b.abs()).max() / torch.maximum(a.abs(), b.abs()).median())  # noqa: E731
    assert spread(lo / s, hi / s) < spread(lo, hi) / 4


@pytest.mark.skipif(__import__("platform").machine().lower() not in ("x86_64", "amd64"), reason="fbgemm is x86")
def test_static_float_output_linear_is_the_integer_arithmetic_rescaled():
    """The float-output static Linear computes exactly dequant(q(x)) @ dequant(W)^T + b: the input is
    quantised with its static scale, nothing is requantised, so an output far outside the input's range
    (the outliers that zero the requantised variant's outputs) comes back intact."""
    import torch
    from torch.ao.quantization.observer import PerChannelMinMaxObserver
    from whisperquant.quantize.backends.pytorch import (
        _engine,
        _quantize_weight,
        _static_float_output,
        _x86_without_vnni,
    )

    if _x86_without_vnni():
        pytest.skip("fbgemm's u8 x s8 kernels can saturate without VNNI (the backend reports such a CPU)")
    _engine()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 7, 64, generator=g)
    w = torch.randn(96, 64, generator=g) * 0.2
    w[0] *= 400.0  # one output channel far larger than the rest, as encoder.3.fc2's outliers
    b = torch.randn(96, generator=g)
    obs = PerChannelMinMaxObserver(dtype=torch.qint8, qscheme=torch.per_channel_symmetric)
    obs(w)
    qw = _quantize_weight(w, obs)
    scale = float(x.max() - x.min()) / 255
    zp = round(float(-x.min()) / scale)
    layer = _static_float_output()(64, 96, qw, b, scale, zp)
    y = layer(x)
    exact = torch.quantize_per_tensor(x, scale, zp, torch.quint8).dequantize() @ qw.dequantize().T + b
    assert y.shape == (3, 7, 96) and y.dtype == torch.float32
    assert torch.allclose(y, exact, atol=1e-3 * float(exact.abs().max()))
    assert float(y[..., 0].abs().max()) > 100  # the outlier channel is not clipped to an 8-bit output grid
    assert float((y - torch.nn.functional.linear(x, w, b)).abs().max()) < 0.05 * float(exact.abs().max())
