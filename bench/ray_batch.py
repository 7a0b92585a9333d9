"""Section `ray`: the local batch against Ray, wall time and bytes (not ray.py: that would hide the package
from bench/gpu_check.py, which runs with bench/ on its path)."""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from .common import ran, table


def ray_against_local(paths, tmp, rounds, log):
    """The local batch (-j 2) against Ray with 2 CPUs, alternating, each round into fresh folders, the
    outputs compared byte for byte. Two views: the CLI's wall time, which for --ray includes starting
    and stopping a local Ray cluster; and compress_many() on a Ray that is already up (the engine's
    throughput: its actors start, load the models and run the files inside the timing, as the local
    pool's workers do)."""
    try:
        import ray
    except ImportError:
        return None
    from adaptok_cli.running.batch import compress_many
    clips = Path(tmp) / "ray-in"
    clips.mkdir()
    for p in paths:
        (clips / p.name).symlink_to(p.resolve())
    outs = {name: Path(tmp) / f"ray-out-{name}" for name in ("local", "ray", "local_api", "ray_api")}

    def cli(out, *extra):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "adaptok_cli", "compress", clips, "-o", out, "-j", "2", "-q", *extra],
                       check=True, capture_output=True)
        return time.perf_counter() - t0

    def api(out, on_ray):
        t0 = time.perf_counter()
        outcomes = compress_many(clips, out, workers=2, ray=on_ray)
        assert not [o.error for o in outcomes if o.error]
        return time.perf_counter() - t0

    rows = []
    for r in range(rounds):
        secs = {"local": cli(outs["local"]), "ray": cli(outs["ray"], "--ray"), "local_api": api(outs["local_api"], False)}
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
        try:
            secs["ray_api"] = api(outs["ray_api"], True)
        finally:
            ray.shutdown()
        made = sorted(p.name for p in outs["local"].iterdir())
        same = all(sorted(p.name for p in o.iterdir()) == made and all(
            (o / n).read_bytes() == (outs["local"] / n).read_bytes() for n in made) for o in outs.values())
        rows.append({"round": r + 1, "clips": len(paths), "cli_local_j2_s": secs["local"], "cli_ray_j2_s": secs["ray"],
                     "cli_ray_over_local": secs["ray"] / secs["local"], "engine_local_s": secs["local_api"],
                     "engine_ray_s": secs["ray_api"], "engine_ray_over_local": secs["ray_api"] / secs["local_api"],
                     "byte_identical": same})
        log(rows[-1])
        for o in outs.values():
            for p in o.iterdir():
                p.unlink()
    return rows


def markdown(r) -> list[str]:
    cols = ["round", "clips", "cli_local_j2_s", "cli_ray_j2_s", "cli_ray_over_local", "engine_local_s",
            "engine_ray_s", "engine_ray_over_local", "byte_identical"]
    return ["## Ray against the local batch", "", ran(r, "ray"), "",
            f"The {r['ray'][0]['clips']} clips of this run (the dev clips; generated ones with --quick) at their own size, 2 workers each way, alternating, each "
            "round into empty folders; every output is compared byte for byte. `cli_*`: the wall time of "
            "`adaptok compress CLIPS -o OUT -j 2 -q`, and of the same with `--ray`, which also starts and "
            "stops a local Ray cluster (about 5 s here). `engine_*`: `adaptok_cli.compress_many(CLIPS, OUT, "
            "workers=2, ray=...)` on a Ray that is already up: actors or pool workers start, load the models "
            "and run the files inside the timing. The target is Ray within 10% of the local batch "
            "(ratio <= 1.10).", "",
            table(r["ray"], cols, {c: "{:.1f}" for c in cols if c.endswith("_s")}
                  | {"cli_ray_over_local": "{:.2f}", "engine_ray_over_local": "{:.2f}"}), ""]
