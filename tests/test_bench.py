"""`make bench-quick`: the benchmark runs end to end on generated clips and writes its report."""
import json
import os
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
    cache = {row["format"]: row for row in r["cache"]["rows"]}
    bf16, default = cache["safetensors bf16"], cache[".atok int8 t=0.15"]
    assert bf16["bytes_per_position"] > 32 and bf16["snr_db_all_own"] > 40          # 16 channels x 2 bytes, bf16 rounding
    assert default["token_rate"] < cache[".atok int8 t=0"]["token_rate"] == 1.0 and default["x_smaller_than_bf16"] > 2
    assert default["snr_db_dropped_own"] < default["snr_db_all_own"] < cache[".atok fp16 t=0"]["snr_db_all_own"]
    speed = {row["dataset"]: row for row in r["cache"]["loading"]}
    assert all(x["warm_items_s"] > 0 and x["cold_latent_frames_s"] > 0 for x in speed.values())
    assert {"torch.load bf16 .pt", "AtokDataset dense, hold", "ShardDataset dense, hold"} <= set(speed)
    assert r["cache"]["vae"]["item"]["shape"][0] == 16 and r["cache"]["vae"]["item"]["dtype"] == "torch.bfloat16"
    costs = r["cache"]["costs"]
    assert costs["stages"][0]["step"].startswith("torch.load") and all(x["cpu_ms_per_item"] > 0 for x in costs["stages"])
    recoded = {x["payloads"]: x for x in costs["recodings"]}
    as_written = recoded["zstd level 10, as written"]    # the same bytes as the files the bytes table measured
    assert as_written["bytes"] == default["bytes"] and as_written["x_smaller_than_bf16"] == default["x_smaller_than_bf16"]
    assert recoded["no zstd (payloads stored raw)"]["bytes"] > as_written["bytes"]
    md = (tmp_path / "BENCHMARKS.md").read_text()
    assert [x["size"] for x in r["pipeline"]] == ["128x96"] and all(
        x[f"{c}_fps_{m}"] > 0 for x in r["pipeline"] for c in ("compress", "decompress") for m in ("serial", "pipelined"))
    for heading in ("Threshold sweep", "Rate-distortion", "Allocation cost", "Ordinary codecs", "Throughput",
                    "Peak memory", "Ray against the local batch", "LIT's cost, measured alone",
                    "Published diffusers VAEs at real frame sizes", "Start-up with a published VAE",
                    "The pipeline's own ceiling", "On a GPU: bench/gpu_check.py",
                    "adaptok as a latent cache: bytes, latent error, loading speed", "Targets"):
        assert f"## {heading}" in md


@pytest.mark.slow
def test_gpu_check_runs_its_checks_on_a_cpu(tmp_path):
    """bench/gpu_check.py's code path, so that the one run on a GPU machine does not fail on a typo:
    its throughput and agreement checks at small sizes, every figure there, no error recorded."""
    out = tmp_path / "g.json"
    p = subprocess.run([sys.executable, "bench/gpu_check.py", "--quick", "--device", "cpu", "--frames", "5",
                        "--skip", "workers,families", "--out", out], capture_output=True, text=True,
                       timeout=HANG_GUARD, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert p.returncode == 0, p.stderr[-2000:]
    g = json.loads(out.read_text())
    assert g["errors"] == [] and [x["size"] for x in g["throughput"]] == ["128x96", "256x144"]
    for x in g["throughput"]:
        assert all(x[k] > 0 for k in ("compress_fps", "decompress_fps", "device_compress_fps", "device_decompress_fps",
                                      "compress_fps_serial", "compress_vs_device", "compress_network_share"))
        assert {"read", "encode", "mask", "zstd", "write"} == set(x["compress_shares"])
    a = g["agreement"]
    assert a["same_bytes"] and a["device_container_on_cpu_identical"] and a["token_rate_cpu"] > 0
    assert "goal at 1080p" not in p.stdout and "== throughput" in p.stdout


def test_cache_section_skips_cleanly_without_the_dev_clips(tmp_path):
    env = {**os.environ, "ADAPTOK_BENCH_DATA": str(tmp_path / "absent")}
    p = subprocess.run([sys.executable, "-m", "bench.bench", "--sections", "cache", "--out", tmp_path],
                       capture_output=True, text=True, timeout=HANG_GUARD, cwd=ROOT, env=env)
    assert p.returncode == 0 and "absent not found: section cache skipped" in p.stdout, p.stderr[-2000:]
    assert not (tmp_path / "bench-results.json").exists()
