"""Print man/adaptok.1, generated from the CLI's own --help text (`make man`; a test checks it is current)."""
import os

os.environ["COLUMNS"] = "80"
os.environ["TERM"] = "dumb"

from typer.testing import CliRunner  # noqa: E402

from adaptok_cli import __version__, errors  # noqa: E402
from adaptok_cli.cli import app  # noqa: E402

COMMANDS = ["compress", "decompress", "inspect", "verify", "eval", "completion"]
EXIT_CODES = [
    (errors.EXIT_OK, "success"),
    (errors.EXIT_SOME_FAILED, "a batch ran, but at least one file failed (each failure was reported)"),
    (errors.EXIT_USAGE, "usage error: bad flags or arguments"),
    (errors.EXIT_BAD_CONTAINER, "not an .atok file, or a corrupt, truncated or hostile one"),
    (errors.EXIT_BAD_INPUT, "input missing, unreadable, or not a video"),
    (errors.EXIT_INTERNAL, "internal error (a bug in adaptok; ADAPTOK_DEBUG=1 shows the traceback)"),
    (errors.EXIT_UNAVAILABLE, "unknown tokeniser, or the tokeniser or LIT a container needs is not available"),
    (errors.EXIT_CANT_CREATE, "output exists (use -f) or cannot be created"),
    (errors.EXIT_IO, "write failed (disk full, ...); the partial output was removed"),
    (errors.EXIT_INTERRUPTED, "interrupted (Ctrl-C or SIGTERM); partial outputs were removed"),
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
    lines += [".SH EXIT STATUS"]
    for code, what in EXIT_CODES:
        lines += [".TP", f"\\fB{code}\\fR", esc(what)]
    lines += [".SH SECURITY", "Weights are read from safetensors files only\\&. A Cosmos tokeniser folder holds "
              "TorchScript, which is code: it is loaded only from a folder given with \\-\\-tokenizer\\&.",
              ".SH SEE ALSO", "docs/FORMAT\\&.md (the \\&.atok format), docs/API\\&.md, docs/BENCHMARKS\\&.md"]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(man_page(), end="")
