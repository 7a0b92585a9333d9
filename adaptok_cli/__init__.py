"""adaptok: adaptive video tokenisation (temporal redundancy masking + latent inpainting).

The command line (`adaptok`) is a thin layer over these functions. They are imported on first use,
so `import adaptok_cli` (and `adaptok --help`) does not pay for torch until something needs it.
"""
import importlib
import importlib.abc
import importlib.util
import sys

__version__ = "0.1.0"

_API = {"CompressOptions": "running.pipeline", "DecompressOptions": "running.pipeline", "Result": "running.pipeline",
        "compress": "running.pipeline", "decompress": "running.pipeline",
        "compress_many": "running.batch", "decompress_many": "running.batch", "inspect": "measure.report",
        "AtokDataset": "format.atokfile", "ShardDataset": "format.atokfile", "AtokFile": "format.atokfile", "open": "format.atokfile",
        "pad_collate": "format.collate", "BucketBatchSampler": "format.collate", "Bucketed": "format.collate",
        "Limits": "format.container"}

# Modules documented by these names before the package had sub-folders: still importable by them, as the
# very same module objects (so a monkeypatch or an isinstance check sees one module, not a copy).
MOVED = {"container": "format.container", "collate": "format.collate", "shards": "format.shards",
         "calibration": "models.calibration", "pipeline": "running.pipeline", "batch": "running.batch",
         "outputs": "running.outputs"}

__all__ = sorted(_API) + ["__version__"]


def __getattr__(name):
    if name in _API:
        return getattr(importlib.import_module(f".{_API[name]}", __name__), name)
    if name in MOVED:   # submodules, as attributes
        return importlib.import_module(f".{MOVED[name]}", __name__)
    if name == "errors":
        return importlib.import_module(".errors", __name__)
    raise AttributeError(f"module 'adaptok_cli' has no attribute {name!r}")


class _MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds `adaptok_cli.<old name>` (MOVED) and answers with the module at its new place."""

    real_specs: dict = {}

    def find_spec(self, fullname, path=None, target=None):
        package, _, short = fullname.rpartition(".")
        if package == __name__ and short in MOVED:
            return importlib.util.spec_from_loader(fullname, self)
        return None

    def create_module(self, spec):
        module = importlib.import_module(f"{__name__}.{MOVED[spec.name.rpartition('.')[2]]}")
        self.real_specs[module.__name__] = module.__spec__
        return module

    def exec_module(self, module):
        module.__spec__ = self.real_specs[module.__name__]  # the import system gave it the old name's spec in between


sys.meta_path.insert(0, _MovedModules())   # before any finder that might hold an old copy
