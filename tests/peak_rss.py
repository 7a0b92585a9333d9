"""Run one adaptok command and print its peak resident memory (kB) as the last line of stderr.

    python tests/peak_rss.py compress long.mp4 -o long.atok -q

Used by the memory benchmark (bench/bench.py) and the flat-memory test. VmHWM, not ru_maxrss:
Linux carries ru_maxrss over exec from the (possibly big) parent process.
"""
import sys

from adaptok_cli.main import main


def peak_kb() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM"))


if __name__ == "__main__":
    sys.argv = ["adaptok", *sys.argv[1:]]
    try:
        main()
    except SystemExit:
        print(peak_kb(), file=sys.stderr)
        raise
