"""Which models a stream needs, found lazily, and the one policy on whether they fit a container.

A `ModelRef` knows a weights file's fingerprint and safetensors metadata without loading a tensor, so
compress can record the LIT it expects and `inspect`/up-to-date checks never pay for a model.
Nothing in a container is a path: a container names its tokeniser and LIT by identity, and only
built-in names (a fixed table) or files the user names are ever opened.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from adaptok_cli.defaults import BUILTIN_TOKENIZERS
from adaptok_cli.errors import ContainerError, ModelUnavailableError
from adaptok_cli.core.layout import latent_side
from adaptok_cli.models.tokenizer import WEIGHTS_DIR, Tokenizer, file_fingerprint, load_tokenizer, pick_device, safetensors_metadata, spec_fingerprint

if TYPE_CHECKING:
    from adaptok_cli.format.container import Header, LitInfo

# Below this threshold the shipped LIT earned nothing over hold-fill (docs/MODELS.md), so decompression
# holds instead and saves LIT's time.
LIT_FROM_THRESHOLD = 0.15

_CACHE: dict = {}


@dataclass(frozen=True)
class ModelRef:
    """A safetensors weights file, known by content; its tensors are read only by load()."""
    path: Path

    @cached_property
    def fingerprint(self) -> str:
        return file_fingerprint(self.path)

    @cached_property
    def metadata(self) -> dict:
        with open(self.path, "rb") as f:
            return safetensors_metadata(f)

    def load_lit(self, device="cpu"):
        from adaptok_cli.core.lit import load_lit
        key = ("lit", self.fingerprint, str(device))
        if key not in _CACHE:
            _CACHE[key] = load_lit(self.path, device)[0]
        return _CACHE[key]


def cached_tokenizer(spec: str, device="auto", dtype: str = "auto") -> Tokenizer:
    """load_tokenizer, once per process and file content (a batch loads its tokeniser once, not per file).
    device: a name, or the torch.device the job resolved (pick_device passes it through)."""
    dev = pick_device(device)
    key = ("tokenizer", spec, str(dev), dtype, spec_fingerprint(spec))
    if key not in _CACHE:
        _CACHE[key] = load_tokenizer(spec, dev, dtype)
    return _CACHE[key]


def shipped_lit(tok: Tokenizer, fingerprint: str | None = None) -> ModelRef | None:
    """A LIT shipped for a built-in tokeniser and trained for exactly these tokeniser weights: the
    current one (`lit-NAME.safetensors`, what compress records), or with `fingerprint` the shipped
    file that has it (earlier LITs stay as `lit-NAME-FINGERPRINT.safetensors`, so containers made
    with them still decode as they were made). Reads metadata only; None when there is none."""
    if tok.source != "builtin" or tok.name not in BUILTIN_TOKENIZERS:
        return None
    key = ("lit-refs", tok.name, tok.fingerprint)
    if key not in _CACHE:
        paths = [WEIGHTS_DIR / f"lit-{tok.name}.safetensors", *sorted(WEIGHTS_DIR.glob(f"lit-{tok.name}-*.safetensors"))]
        refs = [ModelRef(p) for p in paths if p.is_file()]
        _CACHE[key] = [r for r in refs if r.metadata.get("tokenizer_fingerprint") == tok.fingerprint]
    refs = _CACHE[key]
    if fingerprint is None:
        return refs[0] if refs and refs[0].path.name == f"lit-{tok.name}.safetensors" else None
    return next((r for r in refs if r.fingerprint == fingerprint), None)


def lit_identity(tok: Tokenizer, lit=None) -> dict | None:
    """What compress records as the LIT a container expects: the one the user names (--lit), else the
    shipped one (None: hold-fill only)."""
    if lit:
        return {"fingerprint": user_lit(tok, lit).fingerprint, "name": Path(lit).stem[:64]}
    ref = shipped_lit(tok)
    return {"fingerprint": ref.fingerprint, "name": f"lit-{tok.name}"} if ref else None


def tokenizer_for(header: Header, path, spec: str | None = None, device="cpu", dtype="auto") -> Tokenizer:
    """The tokeniser a container needs: a built-in one by name, or the one the user names with `spec`.

    The fingerprint of what the user named is checked before any of it is loaded."""
    spec = check_named_tokenizer(header, path, spec)
    tok = cached_tokenizer(spec, device, dtype)
    check_fit(header, tok, path)
    return tok


def check_named_tokenizer(header: Header, path, spec: str | None) -> str:
    """The spec to load for a container -> spec (a built-in's name when none is given); refuses one whose
    weights fingerprint is not the container's, from the files alone (nothing is loaded or run)."""
    need = header.tokenizer
    wanted = f"tokeniser {need.name!r} (fingerprint {need.fingerprint})"
    if spec is None:
        if need.name not in BUILTIN_TOKENIZERS:
            raise ModelUnavailableError(f"{path}: made with {wanted}, which is not built in: "
                                        f"pass --tokenizer with its file or folder")
        spec = need.name
    try:
        fp = spec_fingerprint(spec)
    except ModelUnavailableError as e:
        raise ModelUnavailableError(f"{path}: needs {wanted}: {e}") from None
    if fp != need.fingerprint:
        raise ModelUnavailableError(f"{path}: made with {wanted}, but {spec} has fingerprint {fp}: "
                                    f"pass --tokenizer with the file or folder it was made with")
    return spec


def check_fit(header: Header, tok: Tokenizer, path):
    """The header's layout fields must be the ones this tokeniser produces; say which one is not (a file
    that does not record the stateful flag is not held to it)."""
    t = header.tokenizer
    fields = {"channels": (header.channels, tok.channels), "tokenizer.channels": (t.channels, tok.channels),
              "tokenizer.time_factor": (t.time_factor, tok.time_factor),
              "tokenizer.space_factor": (t.space_factor, tok.space_factor),
              "tokenizer.stateful": (tok.stateful if t.stateful is None else t.stateful, tok.stateful),
              "latent_width": (header.latent_width, latent_side(header.width, tok.pad_multiple, tok.space_factor)),
              "latent_height": (header.latent_height, latent_side(header.height, tok.pad_multiple, tok.space_factor))}
    for key, (got, want) in fields.items():
        if got != want:
            raise ContainerError(f"{path}: corrupt container (header {key} is {got}, "
                                 f"but tokeniser {tok.name} gives {want})")


def user_lit(tok: Tokenizer, path) -> ModelRef:
    """A LIT file the user names (--lit), checked to be trained for exactly this tokeniser."""
    ref = ModelRef(Path(path))
    try:
        trained_for = ref.metadata.get("tokenizer_fingerprint")
    except (OSError, ValueError) as e:
        raise ModelUnavailableError(f"{path}: not a LIT weights file ({e})") from None
    if trained_for != tok.fingerprint:
        raise ModelUnavailableError(f"{path}: a LIT for tokeniser {trained_for}, not {tok.name} ({tok.fingerprint})")
    return ref


def lit_scale(ref: ModelRef, tok: Tokenizer):
    """The per-channel spread a LIT was trained in: its own (train-lit records it), else the tokeniser's."""
    import torch

    from adaptok_cli.format import safejson
    raw = ref.metadata.get("scale")
    if raw is None:
        return tok.scale
    try:
        scale = torch.tensor(safejson.loads(raw, 1 << 16), dtype=torch.float32)
    except (ValueError, TypeError):
        scale = None
    if scale is None or scale.shape != (tok.channels,) or not bool(torch.isfinite(scale).all() and (scale > 0).all()):
        raise ModelUnavailableError(f"{ref.path}: its scale is not {tok.channels} positive numbers")
    return scale


def inpainter_for(tok: Tokenizer, threshold: float | None, need: LitInfo | None = None, path="",
                  use_lit=True, device="cpu", unit=None, lit=None):
    """The compatibility policy for LIT, in one place -> (Inpainter or None, a note for the user or None).

    need: the LIT identity a container records (None: it expects none, or this is not a container);
    unit: the rule's per-channel unit (None: the tokeniser's scale); lit: a LIT file the user named,
    which runs at every threshold (the shipped one only where it measured better than hold-fill)."""
    from adaptok_cli.core.lit import Inpainter
    if not use_lit or (lit is None and threshold is not None and threshold < LIT_FROM_THRESHOLD):
        return None, None
    ref = user_lit(tok, lit) if lit else shipped_lit(tok, need.fingerprint if need else None)
    if lit and need and need.fingerprint != ref.fingerprint:
        raise ModelUnavailableError(f"{path}: made for LIT {need.name} (fingerprint {need.fingerprint}), "
                                    f"but {lit} has fingerprint {ref.fingerprint}")
    if ref is None:
        if need is None:
            return None, "no trained LIT for this tokeniser: dropped positions are hold-filled (adaptok train-lit makes one)"
        raise ModelUnavailableError(f"{path}: needs LIT {need.name} (fingerprint {need.fingerprint}), "
                                    f"which is not installed: pass it with --lit FILE (or use --no-lit)")
    return Inpainter(ref.load_lit(device), lit_scale(ref, tok), ref.fingerprint, device, threshold, unit), None


def models_for(header: Header, path, spec: str | None = None, use_lit=True, device="cpu", dtype="auto", lit=None,
               loaded: Tokenizer | None = None):
    """What decoding a container takes -> (tokeniser, Inpainter or None, note or None). loaded: a tokeniser
    the caller has loaded already (Python API), held to the container's fingerprint and layout."""
    if loaded is not None:
        if loaded.fingerprint != header.tokenizer.fingerprint:
            raise ModelUnavailableError(f"{path}: made with tokeniser {header.tokenizer.fingerprint}, "
                                        f"not the loaded {loaded.name} ({loaded.fingerprint})")
        check_fit(header, loaded, path)
    tok = loaded or tokenizer_for(header, path, spec, device, dtype)
    return (tok, *inpainter_for(tok, header.threshold, header.lit, path, use_lit, device,
                                unit_of(header), lit))


def unit_of(header: Header):
    """The rule's unit a container was made with, as a tensor; None (the tokeniser's scale) before format 4."""
    import torch
    return None if header.unit is None else torch.tensor(header.unit, dtype=torch.float32)

