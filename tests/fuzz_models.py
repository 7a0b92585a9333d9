"""Fuzz model files from strangers: TinyTok and LIT safetensors and diffusers VAE folders whose configs
hold senseless values must be refused with a ModelUnavailableError (exit 69), or load and run: never
another exception, a hang, or a memory blow-up.

    python tests/fuzz_models.py --iterations 10000 --seed 1

Each case starts from a small valid model (TinyTok and LIT made here, tiny diffusers VAEs of the six
families saved with save_pretrained) and sets one to three config fields to a hostile value: other
types, zero, negative, huge, nested, lists of the wrong length or kind, unknown fields. A file that
loads is also run (TinyTok: encode and decode 5 frames; LIT: one forward pass; a diffusers VAE: its
factor probe runs while loading). Each case runs under an alarm (a hang) and the process under an
address-space limit (a blow-up becomes a MemoryError, counted as a crash).

Prints one JSON line: counts per outcome, per model kind, the slowest case, peak RSS.
The test suite runs a short version (tests/test_model_files.py).
"""
from __future__ import annotations

import argparse
import json
import math
import random
import resource
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from adaptok_cli.errors import AdaptokError
from adaptok_cli.core.lit import LIT, LITConfig, load_lit, save_lit
from adaptok_cli.models.tinytok import TinyTok, TinyTokConfig
from adaptok_cli.models.tokenizer import load_tokenizer, safetensors_metadata, save_tinytok

sys.path.insert(0, str(Path(__file__).parent))
from fuzz_container import _alarm, alarmed, finish, outcome_of  # noqa: E402

HOSTILE = [0, -1, 1, 2, 3, 5, 7, 64, 1 << 20, 10 ** 9, 2 ** 63, 1.5, -0.0, math.inf, math.nan, True, False, None, "",
           "x", "silu", "os.system", [], [0], [1, 1], [True], [1] * 100, [[1]], {}, {"a": 1}, "9" * 400]


def deep(n: int):
    v: list = []
    for _ in range(n):
        v = [v]
    return v


def hostile_value(old, rng: random.Random):
    """A value for a field that held `old`: from the hostile pool, or one of old's kind but off."""
    if rng.random() < 0.5:
        return rng.choice(HOSTILE + [deep(rng.choice([10, 40]))])
    if isinstance(old, bool):
        return not old
    if isinstance(old, int):
        return rng.choice([0, old - 1, old + 1, old * 2, old * 64, -old, old // 3])
    if isinstance(old, float):
        return rng.choice([0.0, old * 10, -old, 1e30])
    if isinstance(old, list):
        edits = [old[:-1], old + old[-1:], old[::-1], [x * 2 if type(x) is int else x for x in old], old * 3]
        return rng.choice(edits)
    return rng.choice(["", old + "x" if isinstance(old, str) else "x"])


def mutate_config(config: dict, rng: random.Random, extra_keys=()) -> dict:
    config = dict(config)
    for _ in range(rng.randint(1, 3)):
        r = rng.random()
        if r < 0.08:
            config[rng.choice(["evil", "_private", *extra_keys])] = rng.choice(HOSTILE)
        elif r < 0.12 and config:
            config.pop(rng.choice(sorted(config)))
        else:
            key = rng.choice(sorted(config))
            config[key] = hostile_value(config[key], rng)
    return config


def with_config(src: Path, dst: Path, config: dict) -> Path:
    """src's tensors saved again with this config in its metadata."""
    with open(src, "rb") as f:
        meta = safetensors_metadata(f)
    save_file(load_file(str(src)), str(dst), metadata={**meta, "config": json.dumps(config)})
    return dst


def bases(folder: Path) -> dict:
    """A small TinyTok and LIT, and tiny diffusers VAEs of every family (when diffusers is installed)."""
    torch.manual_seed(0)
    out = {}
    tiny = TinyTokConfig(width=16, shallow=8, enc_blocks=1, dec_blocks=1)
    save_tinytok(TinyTok(tiny), torch.ones(16), folder / "tinytok.safetensors")
    out["tinytok"] = (folder / "tinytok.safetensors", tiny.to_dict())
    lit = LITConfig(dim=16, layers=1, heads=2)
    save_lit(LIT(lit), folder / "lit.safetensors", "0" * 16)
    out["lit"] = (folder / "lit.safetensors", lit.to_dict())
    try:
        from test_diffusers import FAMILIES, save_vae
    except ImportError:
        return out
    for name in FAMILIES:
        save_vae(name, folder / name)
        out[name] = (folder / name, json.loads((folder / name / "config.json").read_text()))
    return out


def run_case(kind: str, base: Path, config: dict, work: Path):
    """Load the mutated model and run it once; AdaptokError when it is refused."""
    if kind == "tinytok":
        tok = load_tokenizer(str(with_config(base, work / "t.safetensors", config)))
        z, _ = tok.encode(torch.zeros(5, 3, 32, 32))
        tok.decode(z)
    elif kind == "lit":
        model, _ = load_lit(with_config(base, work / "l.safetensors", config))
        c, t = model.cfg.channels, 2
        held = torch.zeros(1, t, c, 8, 8)
        mask = torch.ones(1, t, 8, 8)
        model(held, mask, mask * 0, torch.zeros(1, 2))
    else:
        folder = work / "vae"
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir()
        for f in base.iterdir():
            (folder / f.name).symlink_to(f)
        (folder / "config.json").unlink()
        (folder / "config.json").write_text(json.dumps(config))
        load_tokenizer(str(folder))


def fuzz_models(iterations: int, seed: int = 0, case_seconds: int = 30) -> dict:
    rng = random.Random(seed)
    stats = {"iterations": iterations, "seed": seed, "outcomes": {}, "kinds": {}, "refused_by_kind": {}, "crashes": [],
             "hangs": 0, "slowest_s": 0.0}
    old = signal.signal(signal.SIGALRM, _alarm)
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        models = bases(d / "bases")
        work = d / "work"
        work.mkdir()
        names = sorted(models)
        for it in range(iterations):
            kind = rng.choice(["tinytok", "lit"] * 2 + [n for n in names if n not in ("tinytok", "lit")])
            base, config = models[kind]
            mutated = mutate_config(config, rng, ("_class_name",) if kind not in ("tinytok", "lit") else ())
            stats["kinds"][kind] = stats["kinds"].get(kind, 0) + 1
            error = alarmed(stats, case_seconds, lambda: run_case(kind, base, mutated, work))
            if error is None:
                outcome = "loaded and ran"
            elif isinstance(error, AdaptokError) and error.exit_code == 69:     # a model file's fault is 69
                outcome = "refused"
                stats["refused_by_kind"][kind] = stats["refused_by_kind"].get(kind, 0) + 1
            else:
                outcome = outcome_of(error, stats, it, kind, "")
                if isinstance(error, AdaptokError):         # another exit code: also a bug here
                    outcome = "crash"
                    stats["refused_by_kind"][kind] = stats["refused_by_kind"].get(kind, 0) + 1
                    stats["crashes"].append({"iteration": it, "kind": kind, "error": f"exit {error.exit_code}: {error}"[:300]})
                elif outcome == "hang":
                    stats["crashes"].append({"iteration": it, "kind": kind, "error": "hang"})
                stats["crashes"][-1]["config"] = str(mutated)[:300]
            stats["outcomes"][outcome] = stats["outcomes"].get(outcome, 0) + 1
    signal.signal(signal.SIGALRM, old)
    return finish(stats, t_start)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--iterations", type=int, default=10000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--memory-limit-mb", type=int, default=6000,
                    help="address-space limit of this process: a blow-up becomes a MemoryError")
    a = ap.parse_args()
    torch.set_num_threads(1)
    resource.setrlimit(resource.RLIMIT_AS, (a.memory_limit_mb << 20, resource.RLIM_INFINITY))
    s = fuzz_models(a.iterations, a.seed)
    print(json.dumps(s))
    raise SystemExit(1 if s["crashes"] or s["hangs"] else 0)
