"""Section `lit_cost`: LIT's time over the decoder's at a few thresholds, with nothing else running."""
from __future__ import annotations

import numpy as np

from .clips import lit_share, reconstruct, threshold_chunks
from .common import ran, table


def lit_cost(tok, clips, lit, thresholds, log):
    """LIT's time over the decoder's on the dev clips, as decompress runs them, alone on the machine:
    the sweep above measures the same while it runs for an hour, where other work skews the ratio."""
    rows = []
    for tau in thresholds:
        res = [reconstruct(tok, c, threshold_chunks(tok, c, tau), lit, tau) for c in clips]
        rows.append({"threshold": tau, "lit_decoder_time": lit_share(res),
                     "psnr_lit": float(np.mean([r["psnr"] for r in res]))})
        log(rows[-1])
    return rows


def markdown(r) -> list[str]:
    return ["## LIT's cost, measured alone", "", ran(r, "lit_cost"), "",
            "LIT's time over the decoder's, summed over the dev clips' chunks, decoded as decompress does at "
            "a few thresholds, with nothing else running (the sweep's column is taken over an hour, where other "
            "work skews it).", "",
            table(r["lit_cost"], ["threshold", "lit_decoder_time", "psnr_lit"],
                  {"threshold": "{:g}", "lit_decoder_time": "{:.1%}", "psnr_lit": "{:.2f}"}), ""]
