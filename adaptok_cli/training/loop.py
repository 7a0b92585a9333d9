"""The loop every trainer shares: learning-rate schedule, EMA weights, checkpoint and resume, log.

A trainer builds its model and a `step()` that samples a batch and returns (loss, stats); `Trainer.run`
does the rest. Killing a run and starting the same command again resumes from out/last.pt.
"""
from __future__ import annotations

import copy
import sys
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from adaptok_cli.running.outputs import atomic_path

WEIGHT_DECAY = 1e-4
GRAD_CLIP = 1.0
EMA_WARMUP = 10          # the EMA decay ramps as (1 + step) / (EMA_WARMUP + step) up to its ceiling


@dataclass
class LoopConfig:
    out: Path
    steps: int                       # length of the schedule
    lr: float
    stop_at: int | None = None       # save and stop here (the schedule still follows `steps`)
    warmup: int = 0                  # linear warm-up steps
    min_lr: float = 0.02             # the cosine ends at this fraction of lr
    ema: float = 0.999               # ceiling of the EMA decay
    seed: int = 0
    ckpt_every: float = 300.0        # seconds between checkpoints
    log_every: int = 50


def get_lr(step: int, cfg: LoopConfig) -> float:
    """Linear warm-up, then cosine from lr down to min_lr * lr over cfg.steps."""
    warm = min(1.0, (step + 1) / cfg.warmup) if cfg.warmup else 1.0
    return cfg.lr * warm * (cfg.min_lr + (1 - cfg.min_lr) * 0.5 * (1 + math.cos(math.pi * step / cfg.steps)))


@torch.no_grad()
def update_ema(ema: torch.nn.Module, model: torch.nn.Module, step: int, ceiling: float):
    decay = min(ceiling, (1 + step) / (EMA_WARMUP + step))
    for pe, pm in zip(ema.parameters(), model.parameters()):
        pe.lerp_(pm, 1 - decay)


class Trainer:
    """model, its EMA copy, AdamW, the numpy RNG that samples batches, and the step count, resumable."""

    def __init__(self, cfg: LoopConfig, model: torch.nn.Module, meta: dict):
        self.cfg, self.model, self.meta = cfg, model, meta     # meta: saved with every checkpoint
        self.ema = copy.deepcopy(model)
        self.opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=WEIGHT_DECAY)
        self.rng = np.random.default_rng(cfg.seed)
        self.step, self.extra = 0, {}
        self.ckpt = Path(cfg.out) / "last.pt"
        if self.ckpt.exists():
            ck = torch.load(self.ckpt, map_location="cpu", weights_only=True)    # a checkpoint cannot run code
            model.load_state_dict(ck["model"]), self.ema.load_state_dict(ck["ema"]), self.opt.load_state_dict(ck["opt"])
            self.rng.bit_generator.state, self.step = ck["rng"], ck["step"]
            torch.set_rng_state(ck["torch_rng"])
            self.extra = ck.get("extra", {})
            print(f"resumed from step {self.step}", file=sys.stderr, flush=True)

    def save(self, path: Path | None = None, ema_only=False, **extra):
        """The checkpoint (or, ema_only, the EMA weights and meta alone: what an export needs)."""
        state = {"ema": self.ema.state_dict(), "step": self.step, **self.meta, **extra}
        if not ema_only:
            state.update(model=self.model.state_dict(), opt=self.opt.state_dict(), rng=self.rng.bit_generator.state,
                         torch_rng=torch.get_rng_state(), extra=self.extra)
        with atomic_path(path or self.ckpt) as tmp:
            torch.save(state, tmp)

    def run(self, step_fn: Callable[[], tuple], on_log: Callable[[dict], None] | None = None,
            progress: Callable[[int, int], None] | None = None, echo: bool = True):
        """Train until cfg.stop_at or cfg.steps; step_fn() -> (loss, stats). on_log may add to each log
        record; progress(step, end) follows every step; echo prints the log records on stdout."""
        cfg = self.cfg
        Path(cfg.out).mkdir(parents=True, exist_ok=True)
        end = min(cfg.steps, cfg.stop_at or cfg.steps)
        last_ckpt, t0, acc = time.time(), time.time(), []
        with open(Path(cfg.out) / "log.jsonl", "a") as log:
            while self.step < end:
                lr = get_lr(self.step, cfg)
                for g in self.opt.param_groups:
                    g["lr"] = lr
                loss, stats = step_fn()
                self.opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), GRAD_CLIP)
                self.opt.step()
                self.step += 1
                update_ema(self.ema, self.model, self.step, cfg.ema)
                acc.append({"loss": loss.item(), **stats})
                if self.step % cfg.log_every == 0 or self.step == end:
                    rec = {"step": self.step, "lr": lr, "s_per_step": round((time.time() - t0) / len(acc), 3),
                           **{k: round(float(np.mean([a[k] for a in acc])), 5) for k in acc[0]}}
                    if on_log:
                        on_log(rec)
                    print(json.dumps(rec), file=log, flush=True)
                    if echo:
                        print(json.dumps(rec), flush=True)
                    t0, acc = time.time(), []
                if progress:
                    progress(self.step, end)        # after the log record, so it can show what on_log measured
                if time.time() - last_ckpt > cfg.ckpt_every or self.step == end:
                    self.save()
                    last_ckpt = time.time()


def args_of(ns) -> dict:
    """argparse values as strings, saved with a checkpoint to say how it was made."""
    return {k: str(v) for k, v in vars(ns).items()}


