"""What docs/ARCHITECTURE.md says of the code's shape, checked.

One place per rule: each fails when a rule's characteristic expression is written anywhere else in
the source (the package, bench/, experiments/, scripts/; tests are not searched: they check the
rules' pieces directly, on purpose). No import cycles between the package's modules.
"""
import ast
import dataclasses
import os
import re
import subprocess
import sys
import tokenize
from pathlib import Path

import pytest

from waiting import HANG_GUARD

ROOT = Path(__file__).resolve().parents[1]
SOURCE = sorted(p for d in ("adaptok_cli", "bench", "experiments", "scripts") for p in (ROOT / d).rglob("*.py"))

# rule -> (the modules that may write it, its characteristic expressions, lines exempt and why)
RULES = {
    "the quantise/select/gather/fill chain (codec.py, over masking.py's pieces)": (
        {"adaptok_cli/core/codec.py", "adaptok_cli/core/masking.py"},
        [r"\b(de)?quantise\(", r"\bgather_kept\(", r"\bhold_(gather|index)\(", r"\b(Selector|HoldFill|InterpFill)\(",
         r"\.select\(z\b", r"\bencode\(to_tensor\(", r"\btok\.encode\("],
        None),
    "frames <-> latent frames, latent positions <-> pixels (layout.py)": (
        {"adaptok_cli/core/layout.py"},
        [r"\btime_factor\s*[*/]", r"[*/]\s*[\w.]*\btime_factor\b", r"[*/]\s*tf\b", r"\btf\s*[*/]",
         r"\bspace_factor\s*[*/]", r"[*/]\s*[\w.]*\bspace_factor\b", r"\.repeat\([\w.]*space_factor"],
        "PIXELS"),    # the codec's memory budgets count pixels of frames per latent frame, not the mapping
    "which chunks start a tokeniser stream (layout.starts_stream)": (
        {"adaptok_cli/core/layout.py"},
        [r"\bor not [\w.]*stateful\b"],
        None),
    "which latent frames are keyframes (layout.is_keyframe)": (
        {"adaptok_cli/core/layout.py"},
        [r"%\s*(every|[\w.]*keyframe_interval)\b", r"keyframe_interval\s*>\s*0"],
        None),
    "the L1 bound on a correction (lit.bounded)": (
        {"adaptok_cli/core/lit.py"},
        [r"\bproject_l1\("],
        None),
}


def code_lines(path: Path, strings: bool = True) -> dict[int, str]:
    """The file's lines with strings and comments blanked out (a docstring may name a rule); strings=False:
    comments only."""
    lines = path.read_text().splitlines()
    skip = {tokenize.COMMENT}
    if strings:
        skip |= {tokenize.STRING, *(getattr(tokenize, n) for n in ("FSTRING_MIDDLE",) if hasattr(tokenize, n))}
    with open(path, "rb") as f:
        for tok in tokenize.tokenize(f.readline):
            if tok.type not in skip:
                continue
            (r0, c0), (r1, c1) = tok.start, tok.end
            for r in range(r0, r1 + 1):
                a, b = (c0 if r == r0 else 0), (c1 if r == r1 else len(lines[r - 1]))
                lines[r - 1] = lines[r - 1][:a] + " " * (b - a) + lines[r - 1][b:]
    return {n: line for n, line in enumerate(lines, 1) if line.strip()}


def offences(owners, patterns, exempt, files=SOURCE, root=ROOT):
    found = []
    for path in files:
        rel = path.relative_to(root).as_posix()
        if rel in owners:
            continue
        for n, line in code_lines(path).items():
            if exempt and exempt in line:
                continue
            if any(re.search(p, line) for p in patterns):
                found.append(f"{rel}:{n}: {line.strip()}")
    return found


@pytest.mark.parametrize("rule", list(RULES))
def test_each_rule_is_written_in_one_place(rule):
    owners, patterns, exempt = RULES[rule]
    assert not offences(owners, patterns, exempt), f"{rule} is written outside its module"


def test_the_search_finds_what_it_looks_for(tmp_path):
    """The patterns catch the copies this test was written against (so a pass means something)."""
    copies = {
        "the quantise/select/gather/fill chain (codec.py, over masking.py's pieces)":
            "    masks = [sel.select(z, dequantise(*c)) for z, c in zip(clip.z, clip.codes)]",
        "frames <-> latent frames, latent positions <-> pixels (layout.py)":
            "            n = 1 + (len(frames) - 1) // tok.time_factor * tok.time_factor",
        "which chunks start a tokeniser stream (layout.starts_stream)":
            "            starts = frames == 0 or not tok.stateful",
        "which latent frames are keyframes (layout.is_keyframe)":
            "        return [j for j in range(t) if first + j == 0 or (every > 0 and (first + j) % every == 0)]",
        "the L1 bound on a correction (lit.bounded)":
            "    delta = project_l1((delta * k).movedim(2, -1), radius.view(-1, 1, 1, 1, 1)).movedim(-1, 2) / k",
    }
    mapping = "frames <-> latent frames, latent positions <-> pixels (layout.py)"
    assert set(copies) == set(RULES)
    for rule, line in copies.items():
        (tmp_path / "copy.py").write_text(f'"""{line.strip()}"""\n# {line.strip()}\n')
        assert not offences(set(), RULES[rule][1], None, [tmp_path / "copy.py"], tmp_path), "strings count"
        (tmp_path / "copy.py").write_text(f"def f():\n{line}\n")
        assert offences(set(), RULES[rule][1], None, [tmp_path / "copy.py"], tmp_path), rule
    for line in ("    m = mask.numpy()[first_latent].repeat(space_factor, 1).repeat(space_factor, 2)",
                 '    "latent_width": -(-width // m) * m // tok.space_factor,'):
        (tmp_path / "copy.py").write_text(f"x = {{\n{line}\n}}\n")
        assert offences(set(), RULES[mapping][1], None, [tmp_path / "copy.py"], tmp_path), line


# --- the container header: read through container.Header's attributes ---------------------------------

def header_key_patterns() -> list[str]:
    """A header key read by string (h["width"], header.get("lit"), r.header["quant"]), on the names the
    header goes by; any subscript or get of an attribute called header."""
    from adaptok_cli.format.container import Header
    keys = "|".join(f.name for f in dataclasses.fields(Header) if not f.name.startswith("_"))
    return [rf"""\b(header|hdr|h)\s*(\[|\.get\()\s*["']({keys})["']""", r"\.header\s*(\[|\.get\()"]


def test_the_header_is_read_by_attribute_outside_container_py():
    """container.py turns the header map into a Header (validated, typed); every other reader uses its
    attributes, and to_dict() where it needs the map itself (inspect --json, settings)."""
    patterns = header_key_patterns()
    found = []
    for path in SOURCE:
        rel = path.relative_to(ROOT).as_posix()
        if rel != "adaptok_cli/format/container.py":
            found += [f"{rel}:{n}: {line.strip()}" for n, line in code_lines(path, strings=False).items()
                      if any(re.search(p, line) for p in patterns)]
    assert not found, "the header read by string key outside container.py"


def test_the_header_search_finds_string_keys():
    patterns = header_key_patterns()
    for line in ('w = h["width"]', 'fp = header["tokenizer"]["fingerprint"]', 'lit = h.get("lit")',
                 "q = r.header['quant']", 'a = self.header.get("audio")'):
        assert any(re.search(p, line) for p in patterns), line
    for line in ("w = h.width", 'lit = h.to_dict().get("lit")', 'meta = header.get("__metadata__", {})',
                 'q = info["quant"]'):
        assert not any(re.search(p, line) for p in patterns), line


# --- imports: no cycles -----------------------------------------------------------------------------

def package_imports() -> dict[str, set[str]]:
    """module -> the package modules it imports anywhere in its text (at the top or inside a function)."""
    pkg = ROOT / "adaptok_cli"
    names = {".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"): p for p in pkg.rglob("*.py")}
    graph = {}
    for name, path in names.items():
        here = name if path.name == "__init__.py" else name.rpartition(".")[0]
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = here.split(".")[:len(here.split(".")) - node.level + 1] if node.level else []
                target = ".".join(base + ([node.module] if node.module else []))
                deps |= {t for t in [target, *(f"{target}.{a.name}" for a in node.names)] if t in names}
            elif isinstance(node, ast.Import):
                deps |= {a.name for a in node.names if a.name in names}
        graph[name] = deps - {name, "adaptok_cli"}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import cycles: every path from a module back to itself, as its shortest form, once each."""
    found = set()
    for start in graph:
        stack = [(start, [start])]
        while stack:
            node, path = stack.pop()
            for nxt in graph[node]:
                if nxt == start:
                    i = path.index(min(path))
                    found.add(tuple(path[i:] + path[:i]))
                elif nxt not in path and nxt > start:      # each cycle is found from its smallest module
                    stack.append((nxt, path + [nxt]))
    return sorted(list(c) for c in found)


def test_package_modules_import_each_other_without_cycles():
    graph = package_imports()
    assert {"adaptok_cli.models.tokenizer", "adaptok_cli.models.diffusers_tok", "adaptok_cli.running.batch", "adaptok_cli.format.shards"} <= set(graph)
    assert not cycles(graph)


def test_the_cycle_check_finds_cycles():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_every_module_imports_alone():
    """Each package module imported first, with none of the others loaded before it (__main__ runs the
    command, so it is left out)."""
    names = sorted(n for n in package_imports() if not n.endswith("__main__"))
    code = ("import importlib, sys\n"
            f"for name in {names!r}:\n"
            "    for m in [m for m in sys.modules if m == 'adaptok_cli' or m.startswith('adaptok_cli.')]:\n"
            "        del sys.modules[m]\n"
            "    importlib.import_module(name)\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=HANG_GUARD)
    assert p.returncode == 0, p.stderr[-2000:]


# --- import cost: what the light commands import ------------------------------------------------------

HEAVY = ("torch", "av", "numpy")
REPORT = ("import sys\nfrom adaptok_cli.main import main\ncode = 0\n"
          "try:\n    main()\nexcept SystemExit as e:\n    code = e.code\n"
          "sys.stderr.write('\\nheavy: ' + ' '.join(m for m in " + repr(HEAVY) + " if m in sys.modules) + '\\n')\n"
          "sys.exit(code)")
REFERENCE = ROOT / "tests" / "data" / "reference" / "ball-budget.atok"


def heavy_imports(*args, terminal=False, env=None) -> tuple[str, set[str]]:
    """(what the command printed, which of HEAVY it imported) for `adaptok ARGS`, its stdout a pipe or,
    terminal=True, a pseudo-terminal (as a user at a shell sees it)."""
    cmd = [sys.executable, "-c", REPORT, *map(str, args)]
    if not terminal:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=HANG_GUARD, cwd=ROOT,
                           env=None if env is None else {**os.environ, **env})
        stdout, stderr = p.stdout, p.stderr
    else:
        import pty
        master, slave = pty.openpty()
        with subprocess.Popen(cmd, stdout=slave, stderr=subprocess.PIPE, cwd=ROOT) as p:
            os.close(slave)
            chunks = []
            while True:                          # until the command closes the terminal (it has ended)
                try:
                    data = os.read(master, 1 << 16)
                except OSError:                  # EIO: no process holds the terminal any more
                    break
                if not data:
                    break
                chunks.append(data)
            stderr = p.stderr.read().decode()
            p.wait(timeout=HANG_GUARD)
        os.close(master)
        stdout = b"".join(chunks).decode(errors="replace")
    assert p.returncode == 0, (args, stderr[-2000:])
    line = stderr.strip().splitlines()[-1]
    assert line.startswith("heavy:"), stderr[-2000:]
    return stdout, set(line[len("heavy:"):].split())


def test_help_imports_none_of_torch_av_numpy():
    for args in (["--help"], ["inspect", "--help"], ["verify", "--help"], ["decompress", "--help"], ["--version"]):
        out, heavy = heavy_imports(*args)
        assert not heavy, (args, heavy)
        assert "Usage" in out or "adaptok" in out
    out, heavy = heavy_imports(env={"_ADAPTOK_COMPLETE": "complete_bash", "COMP_WORDS": "adaptok inspect --sort ",
                                    "COMP_CWORD": "3"})                    # shell completion
    assert "bytes" in out.split() and not heavy, (out, heavy)


def test_inspect_and_verify_import_none_of_torch_av_numpy():
    """The container reader checks the index and every chunk in plain Python, and the heatmap that
    inspect draws on a terminal counts masks so too: a container without audio needs none of the three."""
    assert "audio: none" in heavy_imports("inspect", REFERENCE)[0]
    out, heavy = heavy_imports("inspect", REFERENCE, terminal=True)
    assert "how often each position was kept" in out          # the terminal's heatmap was drawn
    assert not heavy, heavy
    out, heavy = heavy_imports("inspect", REFERENCE)
    assert "token" in out and "how often" not in out
    assert not heavy, heavy
    out, heavy = heavy_imports("inspect", "--json", REFERENCE)
    assert '"token_rate"' in out and not heavy, heavy
    out, heavy = heavy_imports("verify", REFERENCE)
    assert "ok" in out and not heavy, heavy
    out, heavy = heavy_imports("verify", "--json", REFERENCE)
    assert '"ok"' in out and not heavy, heavy


def test_a_version_6_container_is_checked_without_torch_or_numpy(tmp_path):
    """A file with the posterior's log-variance (format 6): its block's range is checked in plain Python
    too, so inspect (piped, on a terminal, --json) and verify stay free of the three."""
    import torch
    from adaptok_cli.format.container import LOGVAR_VERSION, AtokReader, write_bytes
    with AtokReader(REFERENCE) as r:
        chunks = [(c.mask, c.codes, c.qscale, r.entry(i).frames, torch.linspace(-8, 2, c.codes.numel()).view_as(c.codes))
                  for i, c in enumerate(r.read_chunk(i) for i in range(r.num_chunks))]
        data = write_bytes({**r.header.to_dict(), "logvar": "uint8"}, chunks, r.frames)
    path = tmp_path / "logvar.atok"
    path.write_bytes(data)
    with AtokReader(path) as r:
        assert r.version == LOGVAR_VERSION
    out, heavy = heavy_imports("inspect", path)
    assert "log-variance: stored" in out and not heavy, heavy
    out, heavy = heavy_imports("inspect", path, terminal=True)
    assert "how often each position was kept" in out and not heavy, heavy
    out, heavy = heavy_imports("inspect", "--json", path)
    assert '"logvar": "uint8"' in out and not heavy, heavy
    out, heavy = heavy_imports("verify", path)
    assert "ok" in out and not heavy, heavy


def test_a_container_with_audio_brings_only_pyav():
    """An audio track's description and first packets are checked with PyAV, as the muxer will take
    them (audio.py): that is all it adds."""
    out, heavy = heavy_imports("verify", REFERENCE.with_name("sound.atok"))
    assert "ok" in out and "torch" not in heavy and "av" in heavy, heavy


def test_the_import_report_sees_heavy_modules():
    """decompress imports torch and av: the report would say so (a pass above means something)."""
    p = subprocess.run([sys.executable, "-c", REPORT.replace("main()", "import adaptok_cli.running.pipeline")],
                       capture_output=True, text=True, timeout=HANG_GUARD, cwd=ROOT)
    assert {"torch", "av", "numpy"} <= set(p.stderr.strip().splitlines()[-1].split()[1:])


# --- small functions --------------------------------------------------------------------------------

MAX_FUNCTION_LINES = 60


def long_functions(files=SOURCE, root=ROOT) -> list[str]:
    found = []
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    found.append(f"{path.relative_to(root).as_posix()}:{node.lineno} {node.name} ({n} lines)")
    return found


def test_no_function_is_over_60_lines(tmp_path):
    assert not long_functions()
    (tmp_path / "long.py").write_text("def f():\n" + "    x = 1\n" * MAX_FUNCTION_LINES)
    assert long_functions([tmp_path / "long.py"], tmp_path) == ["long.py:1 f (61 lines)"]
