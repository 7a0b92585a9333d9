"""`make bench-quick`: the benchmark runs end to end on generated clips and writes its report."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from waiting import HANG_GUARD

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_bench_quick_writes_a_complete_report(tmp_path):
    p = subprocess.run([sys.executable, "-m", "bench.bench", "--quick", "--threads", "1", "--out", tmp_path],
                       capture_output=True, text=True, timeout=HANG_GUARD, cwd=ROOT)
    assert p.returncode == 0, p.stderr[-2000:]
    r = json.loads((tmp_path / "bench-results.json").read_text())
    methods = {row["method"] for row in r["rd"]}
    assert {"full rate", "threshold + hold-fill", "keep-ratio + LIT", "random + LIT"} <= methods
    assert [a["allocator"] for a in r["allocators"]] == ["adaptok single pass", "search (ElasticTok-style)",
                                                          "probe (InfoTok-style)"]
    assert {c["codec"] for c in r["codecs"]} == {"libx264", "libx265", "libsvtav1"}
    assert [x["byte_identical"] for x in r["ray"]] == [True]        # Ray and the local batch, same bytes
    assert [x["threshold"] for x in r["lit_cost"]] == [r["threshold"], 0.25, 0.4]
    assert all(0 < x["lit_decoder_time"] < 10 for x in r["lit_cost"])
    fams = r["families"]                    # tiny configs in --quick: the code path, not the figures
    assert [x["family"] for x in fams] == ["wan2.1", "cogvideox"] and all(x["frames"] == 5 for x in fams)
    assert all(x[k] > 0 for x in fams for k in ("compress_fps", "decompress_fps", "vae_encode_fps", "vae_decode_fps"))
    assert [x["command"] for x in r["startup"]] == ["load alone", "adaptok, empty cache", "adaptok, cache filled"]
    assert all(x["fastest_s"] > 0 for x in r["startup"])
    full = r["rd"][0]
    assert full["token_rate"] == 1.0 and 15 < full["psnr"] < 60
    md = (tmp_path / "BENCHMARKS.md").read_text()
    for heading in ("Threshold sweep", "Rate-distortion", "Allocation cost", "Ordinary codecs", "Throughput",
                    "Peak memory", "Ray against the local batch", "LIT's cost, measured alone", "Published diffusers VAEs at real frame sizes",
                    "Start-up with a published VAE", "Targets"):
        assert f"## {heading}" in md
