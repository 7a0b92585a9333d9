"""Section `rd`: the threshold sweep (LIT, hold-fill and interp-fill), keep-ratio and uniform random
dropping at the same mean token rates, and the full-rate tokeniser; the default threshold is chosen
here, and the rate-distortion figures drawn."""
from __future__ import annotations

from adaptok_cli.models.matching import LIT_FROM_THRESHOLD

from .clips import full_rate, lit_share, random_chunks, reconstruct, threshold_chunks
from .common import mean, ran, table

THRESHOLDS = [0.05, 0.1, 0.15, 0.2, 0.25, 0.4, 0.6]
MAX_LOSS_DB = 0.5


def rate_distortion(tok, clips, lit, thresholds, log):
    rows, per_clip = [], {}
    full = {c.name: reconstruct(tok, c, full_rate(tok, c)) for c in clips}
    rows.append({"method": "full rate", "param": "-", **{k: mean(list(full.values()), k)
                                                            for k in ("token_rate", "bpp", "psnr", "ssim")}})
    log(rows[-1])
    for t in thresholds:
        res_lit, res_hold, res_interp = [], [], []
        for c in clips:
            chunks = threshold_chunks(tok, c, threshold=t)
            h = reconstruct(tok, c, chunks, threshold=t)
            res_hold.append(h)
            res_interp.append(reconstruct(tok, c, chunks, threshold=t, fill="interp"))
            res_lit.append(reconstruct(tok, c, chunks, lit, threshold=t) if lit else h)
            per_clip[(t, c.name)] = {"lit": res_lit[-1], "hold": h, "interp": res_interp[-1], "full": full[c.name]}
        for name, res in (("threshold + LIT", res_lit), ("threshold + hold-fill", res_hold),
                          ("threshold + interp-fill", res_interp)):
            if name.endswith("LIT") and not lit:
                continue
            rows.append({"method": name, "param": t, **{k: mean(res, k) for k in
                                                        ("token_rate", "bpp", "psnr", "ssim", "latent_mse_dropped",
                                                         "seam_psnr_minus_mean")}})
            if name.endswith("LIT"):   # LIT's time against the decoder's, summed over the clips
                rows[-1]["lit_decoder_time"] = lit_share(res)
            log(rows[-1])
        rate = mean(res_lit, "token_rate")
        # the same mean rate, spent evenly (keep-ratio) or blindly (random); both filled by LIT
        ratio = (rate * _positions(clips) - _first_frames(clips)) / max(1, _positions(clips) - _first_frames(clips))
        ratio = min(1.0, max(0.0, ratio))
        for name, fn in (("keep-ratio + LIT", lambda c: threshold_chunks(tok, c, keep_ratio=ratio)),
                         ("random + LIT", lambda c: random_chunks(tok, c, ratio))):
            res = [reconstruct(tok, c, fn(c), lit) for c in clips]
            rows.append({"method": name, "param": round(ratio, 4), **{k: mean(res, k) for k in
                                                                      ("token_rate", "bpp", "psnr", "ssim")}})
            log(rows[-1])
    return rows, per_clip


def _positions(clips):
    return sum(z.shape[0] * z.shape[2] * z.shape[3] for c in clips for z in c.z)


def _first_frames(clips):
    return sum(c.z[0].shape[2] * c.z[0].shape[3] for c in clips)


def at_rate(rows, rate):
    """PSNR linearly interpolated at a token rate from rows with token_rate and psnr; None outside them."""
    pts = sorted((x["token_rate"], x["psnr"]) for x in rows)
    for (r0, p0), (r1, p1) in zip(pts, pts[1:]):
        if r0 <= rate <= r1:
            return p0 + (p1 - p0) * (rate - r0) / max(r1 - r0, 1e-9)
    return None


def choose_threshold(rows, full_psnr):
    """The largest threshold whose mean PSNR (LIT, else hold-fill) is within MAX_LOSS_DB of full rate."""
    main = [r for r in rows if r["method"] == "threshold + LIT"] or [r for r in rows if r["method"] == "threshold + hold-fill"]
    ok = [r["param"] for r in main if r["psnr"] >= full_psnr - MAX_LOSS_DB]
    return max(ok) if ok else min(r["param"] for r in main)


def _minus(a, b):
    return None if a is None or b is None else a - b


def lit_gain(r, tau) -> float:
    """Mean PSNR of threshold + LIT minus threshold + hold-fill at threshold tau."""
    psnr = {row["method"]: row["psnr"] for row in r["rd"] if row["param"] == tau}
    return psnr["threshold + LIT"] - psnr["threshold + hold-fill"]


def per_clip_rows(r) -> list[dict]:
    """The per-clip table at the chosen threshold."""
    return [{"clip": k, "token_rate": v["lit"]["token_rate"], "bpp": v["lit"]["bpp"],
             "PSNR LIT": v["lit"]["psnr"], "PSNR hold-fill": v["hold"]["psnr"],
             "PSNR interp-fill": v.get("interp", {}).get("psnr"), "PSNR full rate": v["full"]["psnr"],
             "loss vs full (dB)": v["full"]["psnr"] - v["lit"]["psnr"],
             "SSIM": v["lit"]["ssim"], "seam dB": v["lit"].get("seam_psnr_minus_mean"),
             "seam dB, full rate": v["full"].get("seam_psnr_minus_mean"),
             "seam vs full rate": _minus(v["lit"].get("seam_psnr_minus_mean"), v["full"].get("seam_psnr_minus_mean"))}
            for k, v in r["per_clip"].items()]


def markdown(r, pngs):
    tau, full = r["threshold"], r["rd"][0]
    lit_rows = [x for x in r["rd"] if x["method"] == "threshold + LIT"]
    hold_rows = {x["param"]: x for x in r["rd"] if x["method"] == "threshold + hold-fill"}
    interp_rows = {x["param"]: x for x in r["rd"] if x["method"] == "threshold + interp-fill"}
    sweep = []
    for x in lit_rows or hold_rows.values():
        h = hold_rows[x["param"]]
        sweep.append({"threshold": x["param"], "token_rate": x["token_rate"], "bpp": x["bpp"],
                      "PSNR LIT": x["psnr"] if lit_rows else None, "PSNR hold-fill": h["psnr"],
                      "PSNR interp-fill": interp_rows.get(x["param"], {}).get("psnr"),
                      "PSNR full rate": full["psnr"], "loss vs full (dB)": full["psnr"] - x["psnr"],
                      "LIT gain (dB)": (x["psnr"] - h["psnr"]) if lit_rows else None,
                      "latent MSE dropped, hold": h.get("latent_mse_dropped"),
                      "latent MSE dropped, LIT": x.get("latent_mse_dropped") if lit_rows else None,
                      "seam dB": x.get("seam_psnr_minus_mean"),
                      "LIT time / decoder": x.get("lit_decoder_time") if lit_rows else None})
    clip_rows = per_clip_rows(r)
    f2 = "{:.2f}"
    return [
        "## Threshold sweep and the default threshold", "", ran(r, "rd"), "",
        table(sweep, list(sweep[0]), {"threshold": "{:g}", "PSNR LIT": f2, "PSNR hold-fill": f2, "PSNR full rate": f2,
                                      "PSNR interp-fill": f2,
                                      "loss vs full (dB)": f2, "LIT gain (dB)": f2, "seam dB": "{:+.2f}",
                                      "latent MSE dropped, hold": "{:.4f}", "latent MSE dropped, LIT": "{:.4f}",
                                      "LIT time / decoder": "{:.1%}"}), "",
        f"The rule's unit: **{r.get('unit', 'spread')}** (`--unit`; adaptok_cli/models/calibration.py). "
        f"Chosen threshold: **{tau:g}**, the largest of the sweep whose mean PSNR is within {MAX_LOSS_DB} dB of "
        "full rate. Latent MSE is on dropped positions only, in units of the per-channel scale. "
        "'seam dB' is the mean PSNR of the first latent frame of every chunk after the first, minus the clip mean. "
        "'LIT time / decoder' is LIT's time over the decoder's, summed over the clips' chunks: LIT runs only on the "
        "8x8 tiles of a chunk where something was dropped. "
        f"The LIT rows always run LIT; `adaptok decompress` runs it only for thresholds of {LIT_FROM_THRESHOLD:g} "
        f"and above (`matching.LIT_FROM_THRESHOLD`). At the default threshold it measured {lit_gain(r, tau):+.2f} dB "
        "over hold-fill (the 'LIT gain' column; per clip below).",
        "", f"Per clip at threshold {tau:g}:", "",
        table(clip_rows, list(clip_rows[0]), {"PSNR LIT": f2, "PSNR hold-fill": f2, "PSNR full rate": f2,
                                              "PSNR interp-fill": f2, "loss vs full (dB)": f2,
                                              "seam dB": "{:+.2f}", "seam dB, full rate": "{:+.2f}",
                                              "seam vs full rate": "{:+.2f}"}), "",
        "'seam dB, full rate' is the same measure with nothing dropped: where it is large, the frames that begin "
        "chunks are simply easier or harder content. `python -m experiments.seam_check CLIP` decodes a clip at full "
        "rate in chunks and as one chunk and scores the same frames: if the two seam figures agree, the "
        "chunking itself leaves no seam. 'seam vs full rate' is what dropping and filling add. "
        "'interp-fill' moves a dropped position from its held value towards its next kept value in the chunk, "
        "within the threshold's bound (the best non-learned fill must be beaten, not only holding).", "",
        *([f"Where and when dropping costs at threshold {tau:g} (extra squared error per pixel, mean over frames; "
           "dB lost per frame): ![loss maps](loss_maps.png)", ""] if r.get("loss_maps") else []),
        "## Rate-distortion: content-driven allocation against fixed and random budgets", "",
        table(r["rd"], ["method", "param", "token_rate", "bpp", "psnr", "ssim"], {"psnr": f2, "ssim": "{:.4f}"}), "",
        "`keep-ratio` keeps the same number of positions in every chunk (the largest changes); `random` keeps "
        "that many in every latent frame, uniformly at random. Both are matched to the mean token rate of the threshold row above them "
        "and filled by LIT.", "",
        *[f"![{p}]({p})" for p in pngs], ""]


def plots(rows, out_dir, codecs=None, default=None):
    """The rate-distortion figures: PSNR (dB) and SSIM against token rate and against bits per pixel,
    every method of the sweep, the default threshold marked, and the video codecs as baselines where
    the x axis is bits per pixel."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    files = []
    for x, name, xlabel in (("token_rate", "rd_token_rate.png", "token rate (kept / all latent positions)"),
                            ("bpp", "rd_bpp.png", "bits per pixel of the .atok file")):
        fig, axes = plt.subplots(1, 2, figsize=(11, 4.8), layout="constrained")
        for ax, y, ylabel in zip(axes, ("psnr", "ssim"), ("PSNR (dB)", "SSIM")):
            for method in dict.fromkeys(r["method"] for r in rows):
                pts = sorted((r[x], r[y]) for r in rows if r["method"] == method)
                ax.plot(*zip(*pts), "o-" if len(pts) > 1 else "*", label=method, markersize=5 if len(pts) > 1 else 12)
            for r in rows:
                if default is not None and r["method"] == "threshold + LIT" and r["param"] == default:
                    ax.plot(r[x], r[y], "s", mfc="none", mec="black", markersize=13, label=f"default threshold {default}")
            if x == "bpp":
                for c in codecs or []:
                    ax.plot(c["bpp"], c[y], "^", markersize=9, label=f"{c['codec']} (same bpp)")
            ax.set_xlabel(xlabel), ax.set_ylabel(ylabel), ax.grid(alpha=0.3)
        # one legend for both panels, below them: inside, it hid the points at the right (full rate)
        fig.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center", ncol=5, fontsize=8)
        fig.suptitle(f"Quality against {'token rate' if x == 'token_rate' else 'bits per pixel'}: dev clips, "
                     f"against the decoded input")
        fig.savefig(out_dir / name, dpi=110)
        plt.close(fig)
        files.append(name)
    return files
