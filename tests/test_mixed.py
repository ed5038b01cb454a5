"""Mixed precision's plans: pure functions over a sensitivity table, tested without a model."""

from __future__ import annotations

import pytest
from whisperquant.quantize import mixed
from whisperquant.quantize.errors import SchemeError

LAYERS = ["a", "b", "c", "d"]
TABLE = [{"module": "a", "kl": "0.001"}, {"module": "b", "kl": "0.5"}, {"module": "c", "kl": "0.02"},
         {"module": "d", "kl": "0.0001"}]
NUMEL = {"a": 1000, "b": 1000, "c": 4000, "d": 1000}


def _bytes(m, w):
    return NUMEL[m] * (4.0 if w == "float" else w / 8)


def test_the_rule_keeps_the_k_most_damaging_layers():
    assert mixed.rule_plan(TABLE, LAYERS, 2, "float", 4) == {"a": 4, "b": "float", "c": "float", "d": 4}
    assert mixed.rule_plan(TABLE, LAYERS, 1, 8, 4) == {"a": 4, "b": 8, "c": 4, "d": 4}


def test_the_allocator_spends_bytes_where_damage_per_byte_is_largest():
    fixed = 100.0
    smallest = fixed + sum(_bytes(m, 2) for m in LAYERS)  # 1,850 bytes
    assert mixed.budget_plan(TABLE, LAYERS, 4, [2, 4, 8], smallest, fixed, _bytes) == dict.fromkeys(LAYERS, 2)
    # b (most sensitive, small) widens first: 250 bytes take it to 4 bits, 500 more to 8
    plan = mixed.budget_plan(TABLE, LAYERS, 4, [2, 4, 8], smallest + 250, fixed, _bytes)
    assert plan == {"a": 2, "b": 4, "c": 2, "d": 2}
    plan = mixed.budget_plan(TABLE, LAYERS, 4, [2, 4, 8], smallest + 750, fixed, _bytes)
    assert plan == {"a": 2, "b": 8, "c": 2, "d": 2}
    # the plan never exceeds the budget, and a bigger budget never predicts more damage
    for extra in range(0, 6000, 250):
        plan = mixed.budget_plan(TABLE, LAYERS, 4, [2, 4, 8], smallest + extra, fixed, _bytes)
        assert fixed + sum(_bytes(m, w) for m, w in plan.items()) <= smallest + extra
    everything = fixed + sum(_bytes(m, 8) for m in LAYERS)
    assert mixed.budget_plan(TABLE, LAYERS, 4, [2, 4, 8], everything, fixed, _bytes) == dict.fromkeys(LAYERS, 8)


def test_the_allocator_names_the_smallest_plan_when_the_budget_is_too_small():
    with pytest.raises(ValueError, match=r"0\.00 MB is below the smallest plan \(every layer at 2: 0\.00 MB\)"):
        mixed.budget_plan(TABLE, LAYERS, 4, [2, 4], 10, 100, _bytes)


def test_a_table_without_a_target_is_refused():
    with pytest.raises(ValueError, match=r"no row for 1 target layer.*e\.g\. e"):
        mixed.rule_plan(TABLE, [*LAYERS, "e"], 1, "float", 4)


def test_resolved_params_narrow_targets_and_list_other_widths():
    params = {"bits": 4, "group_size": 64, "targets": "^x", "mixed": {"sensitivity": "s", "keep": 1}}
    out = mixed.resolved_params(params, {"a.q": 4, "b": "float", "c": 8}, 4.0)
    assert out == {"bits": 4, "group_size": 64, "targets": r"^(a\.q|c)$", "layer_bits": {"c": 8}}
    assert mixed.mean_bits({"a": 4, "b": "float"}, {"a": 3, "b": 1}) == pytest.approx((12 + 32) / 4)
    assert mixed.summary({"a": 4, "b": "float", "c": 4}) == {"float": 1, "4": 2}
    with pytest.raises(ValueError, match="keeps every layer in float"):
        mixed.resolved_params(params, {"a": "float"}, 4.0)


@pytest.mark.parametrize(("spec", "message"), [
    ({"keep": 2}, r"mixed\.sensitivity: name the scheme"),
    ({"sensitivity": "s"}, "exactly one of keep"),
    ({"sensitivity": "s", "keep": 2, "budget_mb": 3}, "exactly one of keep"),
    ({"sensitivity": "s", "keep": 0}, r"mixed\.keep: expected a positive integer"),
    ({"sensitivity": "s", "keep": 2, "keep_bits": 5}, r"mixed\.keep_bits: 5 is not offered; valid: 1, 2, 3, 4, 8"),
    ({"sensitivity": "s", "budget_mb": 3}, r"mixed\.choices: list at least two"),
    ({"sensitivity": "s", "budget_mb": 3, "choices": [2, 7]}, r"mixed\.choices: 7 is not offered"),
    ({"sensitivity": "s", "keep": 1, "bogus": 1}, r"mixed\.bogus: unknown key"),
])
def test_config_errors_name_the_key(spec, message):
    with pytest.raises(SchemeError, match=message):
        mixed.check_spec("m", spec, (1, 2, 3, 4, 8))


def test_a_library_without_per_layer_widths_may_only_keep_layers_in_float():
    from whisperquant.quantize import get_backend

    backend = get_backend("pytorch")
    ok = backend.resolve("m", {"mode": "static", "mixed": {"sensitivity": "s", "keep": 3}})
    assert ok["mixed"] == {"sensitivity": "s", "keep": 3}
    with pytest.raises(SchemeError, match=r"schemes\.m\.mixed\.keep_bits: 8 is not offered; valid: float"):
        backend.resolve("m", {"mode": "static", "mixed": {"sensitivity": "s", "keep": 3, "keep_bits": 8}})
    with pytest.raises(SchemeError, match=r"schemes\.m\.mixed: ctranslate2 quantises no chosen set of layers"):
        get_backend("ctranslate2").resolve("m", {"mixed": {"sensitivity": "s", "keep": 3}})
