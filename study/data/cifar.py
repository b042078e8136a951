"""CIFAR-10 python batches (``<root>/cifar-10-batches-py/``), read by torchvision's own reader.

``torchvision.datasets.CIFAR10`` checks the MD5 of every batch against the official release and
refuses anything else, which would also refuse the synthetic stand-in that ``prepare.sh
--synthetic`` writes. The rule here:

* folder WITHOUT the ``SYNTHETIC`` marker: it claims to be the release, so every file's MD5 is
  verified (once per process; the results are cached by path, size and mtime) and a mismatch is a
  ``ConfigError`` naming the corrupt file;
* folder WITH the marker (written only by ``study.data.synthetic``): the MD5 check is skipped, the
  files only have to exist. Nothing else differs: the same torchvision code unpickles the batches.

The whole split is unpickled into memory, as the format demands.
"""
from __future__ import annotations

import os
import pickle
import pickletools
from pathlib import Path
from typing import Any, Iterator

from torchvision import transforms as T
from torchvision.datasets import CIFAR10

from study.config import ConfigError, RunConfig
from study import catalog
from study.data import checksum
from study.data.synthetic import is_synthetic

MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)
NATIVE_SIZE = 32

_md5_cache: dict[tuple[str, int, int], str] = {}


def release_files() -> list[tuple[str, str]]:
    """(file name, official MD5) of every file the release reader needs, taken from torchvision."""
    return [(n, m) for n, m in CIFAR10.train_list + CIFAR10.test_list] + [(CIFAR10.meta["filename"], CIFAR10.meta["md5"])]


def file_md5(path: str | os.PathLike) -> str:
    """MD5 of a file, cached per process by (path, size, mtime)."""
    st = os.stat(path)
    key = (os.path.realpath(path), st.st_size, st.st_mtime_ns)
    if key not in _md5_cache:
        _md5_cache[key] = checksum.file_md5(path)
    return _md5_cache[key]


def _hint(root: str) -> str:
    r = "" if os.path.normpath(root) == "data" else f" --root {root}"
    return f"run ./prepare.sh{r} --synthetic or ./prepare.sh{r} --cifar cifar-10-python.tar.gz"


def _rewrite_hint(root: str) -> str:
    """For a damaged synthetic folder (a release folder that passed its MD5 check cannot be damaged)."""
    r = "" if os.path.normpath(root) == "data" else f" --root {root}"
    return f"make it again with ./prepare.sh{r} --synthetic --force"


def check_folder(root: str | os.PathLike) -> bool:
    """Raise ConfigError unless ``<root>/cifar-10-batches-py`` is complete (and, if it claims to be
    the release, matches the official MD5s). Returns True when the folder is synthetic."""
    root = str(root)
    folder = Path(root) / catalog.CIFAR10.folder
    if not folder.is_dir():
        raise ConfigError(f"no CIFAR-10 at {folder}; {_hint(root)}")
    missing = [n for n, _ in release_files() if not (folder / n).is_file()]
    if missing:
        raise ConfigError(f"incomplete CIFAR-10 at {folder} (missing {', '.join(missing)}); {_hint(root)}")
    if is_synthetic(folder):
        # No checksum vouches for these files, and anyone can write the marker: vet every pickle.
        for name, _ in release_files():
            vet_pickle(folder / name, root)
        return True
    for name, md5 in release_files():
        if file_md5(folder / name) != md5:
            raise ConfigError(
                f"corrupt CIFAR-10 file {folder / name} (MD5 differs from the official release); "
                f"re-extract it with ./prepare.sh --cifar cifar-10-python.tar.gz")
    return False


# What a CIFAR-10 python batch may construct while unpickling: numpy arrays, nothing else.
PICKLE_GLOBALS = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                  ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
                  ("numpy._core.multiarray", "scalar"), ("_codecs", "encode")}
_STRING_OPS = {"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "SHORT_BINSTRING", "BINSTRING", "STRING"}
_vetted: set[tuple[str, int, int]] = set()


def pickle_globals(f: Any) -> Iterator[tuple[str, str]]:
    """(module, name) of every class or function a pickle would import, read from its opcodes without
    running any. ValueError for data that is not a complete pickle (truncated, garbled)."""
    memo: dict[Any, Any] = {}
    pushed: list[Any] = []  # what the last opcodes pushed: a string, or None for anything else
    for op, arg, _ in pickletools.genops(f):
        if op.name in _STRING_OPS:
            pushed.append(arg)
        elif op.name in ("BINGET", "LONG_BINGET", "GET"):
            pushed.append(memo.get(arg))
        elif op.name == "MEMOIZE":
            memo[len(memo)] = pushed[-1] if pushed else None
        elif op.name in ("BINPUT", "LONG_BINPUT", "PUT"):
            memo[arg] = pushed[-1] if pushed else None
        elif op.name in ("GLOBAL", "INST"):
            module, _, name = str(arg).partition(" ")
            yield module, name
            pushed.append(None)
        elif op.name == "STACK_GLOBAL":
            module, name = (pushed[-2], pushed[-1]) if len(pushed) >= 2 else (None, None)
            yield str(module), str(name)
            pushed.append(None)
        else:
            pushed.append(None)
        del pushed[:-2]


def vet_pickle(path: Path, root: str) -> None:
    """ConfigError naming ``path`` unless it is a complete pickle that builds nothing but numpy arrays
    (once per process for an unchanged file)."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key in _vetted:
        return
    try:
        with open(path, "rb") as f:
            bad = sorted({f"{m}.{n}" for m, n in pickle_globals(f) if (m, n) not in PICKLE_GLOBALS})
    except ValueError as e:
        raise ConfigError(f"CIFAR-10 file {path} is truncated or garbled (not a complete python batch: "
                          f"{' '.join(str(e).split())}); {_rewrite_hint(root)}") from None
    if bad:
        raise ConfigError(f"CIFAR-10 file {path} would run code while unpickling ({', '.join(bad[:3])}); a "
                          f"python batch holds only arrays and lists: refusing it; {_rewrite_hint(root)}")
    _vetted.add(key)


class CIFAR10Batches(CIFAR10):
    """torchvision's CIFAR10, with the integrity check made marker-aware (see module docstring).

    Picklable (plain attributes only), so DataLoader workers receive it as is.
    """

    def _folder(self) -> Path:
        return Path(self.root) / self.base_folder

    def _check_integrity(self) -> bool:
        folder = self._folder()
        if is_synthetic(folder):
            return all((folder / n).is_file() for n, _ in release_files())
        return all((folder / n).is_file() and file_md5(folder / n) == m for n, m in release_files())

    def _load_meta(self) -> None:
        name = self.meta["filename"]
        if not is_synthetic(self._folder()) and file_md5(self._folder() / name) != dict(release_files())[name]:
            raise RuntimeError("Dataset metadata file not found or corrupted.")
        # The parent's own MD5 check reads the file again; with the check settled above, point it
        # at a metadata spec without a checksum (check_integrity with md5=None tests existence).
        self.meta = {**type(self).meta, "md5": None}  # instance attribute shadows the class's
        try:
            super()._load_meta()
        finally:
            del self.meta


def build_transform(size: int, train: bool) -> T.Compose:
    """train: (Resize) + RandomCrop(size, padding=size/8) + flip; val: (Resize). Then normalise."""
    ops: list = []
    if size != NATIVE_SIZE:
        ops.append(T.Resize(size, antialias=True))
    if train:
        ops += [T.RandomCrop(size, padding=max(1, size // 8)), T.RandomHorizontalFlip()]
    ops += [T.ToTensor(), T.Normalize(MEAN, STD)]
    return T.Compose(ops)


def open_split(cfg: RunConfig, train: bool) -> CIFAR10Batches:
    check_folder(cfg.data_root)
    size = cfg.image_size or catalog.CIFAR10.default_size
    try:
        return CIFAR10Batches(cfg.data_root, train=train, transform=build_transform(size, train), download=False)
    except (pickle.UnpicklingError, EOFError, KeyError, ValueError, TypeError) as e:  # vetted, yet not a batch
        folder = Path(cfg.data_root) / catalog.CIFAR10.folder
        raise ConfigError(f"the CIFAR-10 files in {folder} are not python batches ({type(e).__name__}: "
                          f"{' '.join(str(e).split())[:200]}); {_rewrite_hint(cfg.data_root)}") from None
