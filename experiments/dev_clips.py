"""The dev clips (not distributed) read and encoded once with TinyTok, as the benchmark does: the
options and the loading that experiments comparing decodes on them share."""
from __future__ import annotations

import argparse

import torch

from adaptok_cli.models.tokenizer import load_tokenizer
from adaptok_cli.training.data import DEV
from adaptok_cli.running.video import is_video_path
from bench.clips import load_clip


def add_options(ap: argparse.ArgumentParser, thresholds: str):
    ap.add_argument("--thresholds", default=thresholds)
    ap.add_argument("--short-side", type=int, default=256)
    ap.add_argument("--clips", type=int, default=0, help="only the first N dev clips (0: all)")
    ap.add_argument("--threads", type=int, default=2)


def load(args) -> tuple:
    """-> (TinyTok, the dev clips encoded at --short-side, the thresholds), with --threads set."""
    torch.set_num_threads(args.threads)
    tok = load_tokenizer("tinytok")
    paths = sorted(p for p in DEV.iterdir() if is_video_path(p))[:args.clips or None]
    return tok, [load_clip(p, tok, args.short_side) for p in paths], [float(x) for x in args.thresholds.split(",")]
