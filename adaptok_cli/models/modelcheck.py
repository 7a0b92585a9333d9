"""Model files checked before anything is built from them.

A config from a file says how large a network to build; a file of a few bytes could ask for 100,000
layers or widths of gigabytes, or for values the code divides by. So every field is checked against
a sane range first (`check_fields`, with the ranges written next to each family's config:
tinytok.TinyTokConfig, lit.LITConfig, vae_configs.py), and then the network the config implies is
built on torch's meta device (no memory, no weights) and its tensors compared with the ones the file
holds (`mismatch`): a config must describe exactly the weights that come with it.
ValueError names the field; callers turn it into ModelUnavailableError (exit 69).
"""
from __future__ import annotations

import math
from typing import Callable, NamedTuple


class Field(NamedTuple):
    """A test of one config value, and what it wants, for messages."""
    ok: Callable[[object], bool]
    wants: str


def integer(lo: int, hi: int) -> Field:
    return Field(lambda v: type(v) is int and lo <= v <= hi, f"an integer in {lo}..{hi}")


def number(lo: float, hi: float) -> Field:
    return Field(lambda v: type(v) in (int, float) and math.isfinite(v) and lo <= v <= hi, f"a number in {lo}..{hi}")


def boolean() -> Field:
    return Field(lambda v: type(v) is bool, "true or false")


def one_of(*choices) -> Field:
    return Field(lambda v: type(v) in (str, int) and v in choices and type(v) is type(choices[0]),
                 f"one of {', '.join(map(str, choices))}")


def listed(item: Field, shortest: int, longest: int) -> Field:
    return Field(lambda v: type(v) is list and shortest <= len(v) <= longest and all(item.ok(x) for x in v),
                 f"a list of {shortest}..{longest} items, each {item.wants}")


def optional(field: Field) -> Field:
    return Field(lambda v: v is None or field.ok(v), f"null or {field.wants}")


def check_fields(config, fields: dict[str, Field], what: str, rules=(), strict: bool = True) -> dict:
    """config checked field by field (fields absent take the family's defaults); rules: (field,
    test(config), what is wrong) checked after, between fields. strict: a field not in `fields` is
    refused (our own formats); otherwise it is left out (diffusers ignores what its class does not
    take) and private `_...` fields must be short strings -> the fields that are known."""
    if not isinstance(config, dict):
        raise ValueError(f"{what} config is not a map")
    known = {}
    for key, value in config.items():
        if key in fields:
            if not fields[key].ok(value):
                raise ValueError(f"{what} config field {key} is {_short(value)}: it must be {fields[key].wants}")
            known[key] = value
        elif strict:
            raise ValueError(f"{what} config has an unknown field {_short(key)}")
        elif str(key).startswith("_") and not (type(value) is str and len(value) <= 256):
            raise ValueError(f"{what} config field {_short(key)} is {_short(value)}: it must be a short string")
    for key, test, wrong in rules:
        if not test(config):
            raise ValueError(f"{what} config field {key}: {wrong}")
    return known


def _short(v) -> str:
    s = repr(v)
    return s if len(s) <= 60 else s[:57] + "..."


def mismatch(build: Callable, shapes: dict[str, tuple], allow_extra: bool = False) -> str | None:
    """Why the tensors a file holds (name -> shape) are not those of the network build() makes (None:
    they are). The network is built on the meta device: nothing is allocated. allow_extra: tensors
    the network does not have are left alone (diffusers ignores them)."""
    import torch
    with torch.device("meta"):
        model = build()
    want = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    for k, shape in want.items():
        if k not in shapes:
            return f"the weights lack {k} {shape}, which its config implies"
        if tuple(shapes[k]) != shape:
            return f"weights {k} are {tuple(shapes[k])}, its config implies {shape}"
    extra = [] if allow_extra else sorted(set(shapes) - set(want))
    return f"the weights hold {extra[0]}, which its config does not have" if extra else None
