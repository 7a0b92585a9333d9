"""Print man/adaptok.1, generated from the CLI's own --help text (`make man`; a test checks it is current)."""
import os

os.environ["COLUMNS"] = "80"
os.environ["TERM"] = "dumb"

from typer.testing import CliRunner  # noqa: E402

from adaptok_cli import __version__, errors  # noqa: E402
from adaptok_cli.cli.commands import app  # noqa: E402

COMMANDS = ["compress", "decompress", "inspect", "verify", "eval", "completion"]
EXIT_CODES = sorted([
    (errors.EXIT_OK, "success"),
    (errors.EXIT_SOME_FAILED, "a batch ran, but at least one file failed (each failure was reported)"),
    (errors.EXIT_USAGE, "usage error: bad flags or arguments"),
    (errors.EXIT_BAD_CONTAINER, "not an .atok file, or a corrupt, truncated or hostile one"),
    (errors.EXIT_BAD_INPUT, "input missing, unreadable, or not a video"),
    (errors.EXIT_INTERNAL, "internal error (a bug in adaptok; ADAPTOK_DEBUG=1 shows the traceback)"),
    (errors.EXIT_UNAVAILABLE, "unknown tokeniser, or the tokeniser or LIT a container needs is not available"),
    (errors.EXIT_CANT_CREATE, "output exists (use -f) or cannot be created"),
    (errors.EXIT_IO, "write failed (disk full, ...); the partial output was removed"),
    (errors.EXIT_INTERRUPTED, "interrupted (Ctrl-C or SIGTERM); partial outputs were removed, no new file started"),
    (errors.EXIT_PIPE, "standard output was closed by its reader (e.g. piped into head); stopped quietly"),
])
EXAMPLES = [
    ("Compress one video (writes clip.mp4.atok):", "adaptok compress clip.mp4"),
    ("Compress a folder into another, two files at a time, one CSV row per file:",
     "adaptok compress clips/ \\-o latents/ \\-j 2 \\-\\-csv"),
    ("Keep a fixed share of positions instead of a threshold:", "adaptok compress clip.mp4 \\-r 0.3"),
    ("Rebuild the video (writes clip.decoded.mp4, never clip.mp4):", "adaptok decompress clip.mp4.atok"),
    ("Lossless output, or a folder of PNG frames:",
     "adaptok decompress clip.mp4.atok \\-o out.mkv\nadaptok decompress clip.mp4.atok \\-\\-codec png \\-o frames"),
    ("Token rates of many files, as JSON lines:", "adaptok inspect latents/ \\-\\-json"),
    ("Check files without decoding frames:", "adaptok verify latents/"),
    ("Quality against full rate and hold-fill:", "adaptok eval clip.mp4 \\-t 0.25"),
]
ENVIRONMENT = [
    ("ADAPTOK_CACHE", "what adaptok keeps across runs: the calibrations calibrate measures (calibration/), large "
                      "weights' fingerprints and diffusers VAEs' probed factors; deleting it is always safe "
                      "[default: $XDG_CACHE_HOME/adaptok, else ~/.cache/adaptok]"),
    ("ADAPTOK_DEBUG", "when set, an internal error (exit 70) prints its Python traceback"),
    ("COLUMNS", "width of tables and progress bars on a terminal"),
    ("CUDA_VISIBLE_DEVICES", "which GPUs \\-\\-device auto and cuda may use"),
    ("OMP_WAIT_POLICY", "adaptok sets PASSIVE unless it is set: idle torch threads sleep rather than spin, "
                        "which is much faster on a busy machine"),
]


def esc(s):
    return s.replace("\\", "\\e").replace("-", "\\-").replace("'", "\\(aq").replace(".", "\\&.")


def help_text(*args):
    res = CliRunner().invoke(app, [*args, "--help"], prog_name="adaptok", terminal_width=80)
    return res.output.rstrip()


def man_page() -> str:
    lines = [f'.TH ADAPTOK 1 "" "adaptok {__version__}" "User Commands"', ".SH NAME",
             "adaptok \\- adaptive video tokenisation (temporal redundancy masking and latent inpainting)",
             ".SH SYNOPSIS", ".B adaptok", "\\fICOMMAND\\fR [\\fIOPTIONS\\fR] \\fIFILE\\fR\\&...",
             ".SH DESCRIPTION", ".nf", esc(help_text()), ".fi", ".SH COMMANDS"]
    for name in COMMANDS:
        lines += [f".SS {name}", ".nf", esc(help_text(name)), ".fi"]
    lines += [".SH EXAMPLES"]
    for what, cmd in EXAMPLES:
        lines += [".PP", esc(what), ".nf", ".RS", cmd, ".RE", ".fi"]
    lines += [".SH ENVIRONMENT"]
    for name, what in ENVIRONMENT:
        lines += [".TP", f"\\fB{name}\\fR", what]
    lines += [".SH EXIT STATUS"]
    for code, what in EXIT_CODES:
        lines += [".TP", f"\\fB{code}\\fR", esc(what)]
    lines += [".SH SECURITY", "Weights are read from safetensors files only\\&. A Cosmos tokeniser folder holds "
              "TorchScript, which is code: it is loaded only from a folder given with \\-\\-tokenizer\\&. "
              "Nothing in a container is used as a path; what a container may make adaptok allocate is "
              "bounded (\\-\\-max\\-pixels raises the budget)\\&.",
              ".SH SEE ALSO", "docs/FORMAT\\&.md (the \\&.atok format), docs/API\\&.md, docs/BENCHMARKS\\&.md"]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(man_page(), end="")
