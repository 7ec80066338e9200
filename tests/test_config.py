"""Typed configuration: presets, overrides, validation with one line naming the key."""

from __future__ import annotations

import dataclasses

import pytest

from safemeta.config import ConfigError, build, diff, field_docs, parse_overrides
from safemeta.tabular.meta import TabularSafeMetaConfig as Cfg


def test_every_field_has_a_doc() -> None:
    docs = field_docs(Cfg)
    assert set(docs) == {f.name for f in dataclasses.fields(Cfg)}
    assert all(len(d) > 5 for d in docs.values())


def test_layers_override_in_order_and_coerce_types() -> None:
    cfg = build(Cfg, {"iterations": 5, "lam": 2}, {"lam": "0.25", "meta_grad": "full"})
    assert cfg.iterations == 5 and cfg.lam == 0.25 and isinstance(cfg.lam, float)
    assert cfg.meta_grad == "full"
    assert diff(cfg) == {"iterations": 5, "lam": 0.25, "meta_grad": "full"}


@pytest.mark.parametrize(
    "layer,match",
    [
        ({"nope": 1}, r"unknown key 'nope'.*accepted: seed"),
        ({"iterations": "ten"}, r"^iterations: expected an integer, got 'ten'"),
        ({"iterations": -1}, r"^iterations: got -1; accepted >= 0"),
        ({"lam": 0}, r"^lam: got 0.0; accepted >= 1e-06 and <= 1e\+06"),
        ({"init_logit_scale": 1e308}, r"^init_logit_scale: got 1e\+308; accepted >= 0 and <= 100"),
        ({"meta_batch": 10**9}, r"^meta_batch: got 1000000000; accepted >= 1 and <= 10000"),
        ({"lam": "nan"}, r"^lam: expected a finite number"),
        ({"meta_grad": "second"}, r"^meta_grad: got 'second'; accepted hessian_free, full"),
        ({"device": "tpu"}, r"^device: got 'tpu'; accepted cpu, cuda"),
        ({"meta_margin": 2}, r"^meta_margin: got 2.0; accepted >= 0 and <= 1"),
        ({"seed": True}, r"^seed: expected an integer"),
    ],
)
def test_bad_values_raise_one_line_naming_the_key(layer: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match) as e:
        build(Cfg, layer)
    assert "\n" not in str(e.value)


def test_parse_overrides() -> None:
    assert parse_overrides(["a=1", "b = x=y"]) == {"a": "1", "b": "x=y"}
    with pytest.raises(ConfigError, match="--set: expected key=value"):
        parse_overrides(["novalue"])


def _registered_configs() -> list[type]:
    from safemeta.algos import _ALGOS, algorithm

    return [algorithm(a, f).Config for a, f in _ALGOS]


@pytest.mark.parametrize("cfg_cls", _registered_configs(), ids=lambda c: c.__name__)
def test_every_numeric_field_has_finite_bounds_and_rejects_huge_values(cfg_cls: type) -> None:
    """1e308 is a float that parses, 10**30 an integer: a field without an upper bound would
    let them through into a run (and e.g. torch.set_num_threads would crash on it)."""
    import typing

    hints = typing.get_type_hints(cfg_cls)
    for f in dataclasses.fields(cfg_cls):
        m, kinds = f.metadata, set(typing.get_args(hints[f.name])) or {hints[f.name]}
        if not kinds & {int, float} or m.get("choices"):
            continue
        assert m.get("high") is not None, f"{cfg_cls.__name__}.{f.name} has no upper bound"
        assert m.get("low") is not None, f"{cfg_cls.__name__}.{f.name} has no lower bound"
        huge, negative = ("1e308", "-1e308") if float in kinds else (str(10**30), str(-(10**30)))
        for value in (huge, negative):
            with pytest.raises(ConfigError, match=rf"^{f.name}: got "):  # the range, not the type
                build(cfg_cls, {f.name: value})
