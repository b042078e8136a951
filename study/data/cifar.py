"""The CIFAR python releases, read by torchvision's own readers: CIFAR-10 (``<root>/cifar-10-batches-py/``,
``torchvision.datasets.CIFAR10``) here, CIFAR-100 (``<root>/cifar-100-python/``, ``CIFAR100``) through
the same code in ``cifar100``.

torchvision checks the MD5 of every file against the official release and refuses anything else,
which would also refuse the synthetic stand-in that ``prepare.sh --synthetic`` writes. The rule here:

* folder WITHOUT a marker: it claims to be the release, so every file's MD5 is verified (once per
  process; the results are cached by path, size and mtime) and a mismatch is a ``ConfigError``
  naming the corrupt file and the two ways on (extract the release again, or accept the copy);
* folder with the ``SYNTHETIC`` marker (written only by the synthetic writers) or the ``UNVERIFIED``
  marker (a copy the user accepted, ``prepare.sh --no-verify``): the MD5 check is skipped and every
  pickle is vetted instead; the report says the check was skipped (``integrity``). Nothing else
  differs: the same torchvision code unpickles the batches.

The whole split is unpickled into memory, as the format demands.
"""
from __future__ import annotations

import os
import pickle
import pickletools
from pathlib import Path
from typing import Any, Callable, Iterator

from torchvision import transforms as T
from torchvision.datasets import CIFAR10, CIFAR100

from study.core.config import ConfigError, RunConfig
from study.core import catalog
from study.data import checksum
from study.data.integrity import is_unchecked, remake_hint, root_option

MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)
NATIVE_SIZE = 32

_md5_cache: dict[tuple[str, int, int], str] = {}


# catalog name -> torchvision's reader of that release (its file list, MD5s and metadata key)
READERS: dict[str, type[CIFAR10]] = {catalog.CIFAR10.name: CIFAR10, catalog.CIFAR100.name: CIFAR100}
ARCHIVES = {catalog.CIFAR10.name: "cifar-10-python.tar.gz", catalog.CIFAR100.name: "cifar-100-python.tar.gz"}


def release_files(dataset: str = catalog.CIFAR10.name) -> list[tuple[str, str]]:
    """(file name, official MD5) of every file the release reader needs, taken from torchvision."""
    rd = READERS[dataset]
    return [(n, m) for n, m in rd.train_list + rd.test_list] + [(rd.meta["filename"], rd.meta["md5"])]


def file_md5(path: str | os.PathLike) -> str:
    """MD5 of a file, cached per process by (path, size, mtime)."""
    st = os.stat(path)
    key = (os.path.realpath(path), st.st_size, st.st_mtime_ns)
    if key not in _md5_cache:
        _md5_cache[key] = checksum.file_md5(path)
    return _md5_cache[key]


def _hint(root: str, dataset: str) -> str:
    from study.data.integrity import prepare_hint

    return prepare_hint(root, f"--cifar {ARCHIVES[dataset]}")


def _rewrite_hint(root: str, folder: Path) -> str:
    """For a damaged folder without the release's checksum (one that passed its MD5 check cannot be damaged)."""
    return remake_hint(root, next(d for d, rd in READERS.items() if rd.base_folder == folder.name))


def check_folder(root: str | os.PathLike, dataset: str = catalog.CIFAR10.name) -> bool:
    """Raise ConfigError unless ``<root>/<release folder>`` is complete (and, unless marked synthetic or
    UNVERIFIED, matches the official MD5s). Returns True when the MD5 check was skipped."""
    root, entry = str(root), catalog.get(dataset)
    folder = Path(root) / entry.folder
    if not folder.is_dir():
        raise ConfigError(f"no {entry.title} at {folder}; {_hint(root, dataset)}")
    missing = [n for n, _ in release_files(dataset) if not (folder / n).is_file()]
    if missing:
        raise ConfigError(f"incomplete {entry.title} at {folder} (missing {', '.join(missing)}); {_hint(root, dataset)}")
    if is_unchecked(folder):
        # No checksum vouches for these files, and anyone can write a marker: vet every pickle.
        for name, _ in release_files(dataset):
            vet_pickle(folder / name, root, entry.title)
        return True
    r = root_option(root)
    for name, md5 in release_files(dataset):
        if file_md5(folder / name) != md5:
            raise ConfigError(
                f"corrupt {entry.title} file {folder / name} (MD5 differs from the official release); extract "
                f"the official archive again with ./prepare.sh{r} --cifar {ARCHIVES[dataset]}, or, to use this "
                f"copy as it is, mark it with ./prepare.sh{r} --no-verify (the MD5 check is then skipped and "
                f"the report says so)")
    return False


# What a CIFAR-10 python batch may construct while unpickling: numpy arrays, nothing else.
PICKLE_GLOBALS = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                  ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
                  ("numpy._core.multiarray", "scalar"), ("_codecs", "encode")}
_STRING_OPS = {"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "SHORT_BINSTRING", "BINSTRING", "STRING"}
_vetted: set[tuple[str, int, int]] = set()


class RestrictedUnpickler(pickle.Unpickler):
    """CIFAR batches hold dicts, lists, bytes and numpy arrays: nothing else may be constructed while
    unpickling one (a bucket's, or a local one read outside torchvision's reader)."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
               ("numpy._core.multiarray", "scalar"), ("_codecs", "encode")}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a CIFAR batch")
        return super().find_class(module, name)


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


def vet_pickle(path: Path, root: str, title: str = catalog.CIFAR10.title) -> None:
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
        raise ConfigError(f"{title} file {path} is truncated or garbled (not a complete python batch: "
                          f"{' '.join(str(e).split())}); {_rewrite_hint(root, path.parent)}") from None
    if bad:
        raise ConfigError(f"{title} file {path} would run code while unpickling ({', '.join(bad[:3])}); a "
                          f"python batch holds only arrays and lists: refusing it; {_rewrite_hint(root, path.parent)}")
    _vetted.add(key)


class MarkerAware:
    """Mixed into torchvision's CIFAR10/CIFAR100: the integrity check made marker-aware (see module
    docstring). Picklable (plain attributes only), so DataLoader workers receive it as is."""

    dataset = catalog.CIFAR10.name
    root: str
    base_folder: str
    meta: dict

    def _folder(self) -> Path:
        return Path(self.root) / self.base_folder

    def _check_integrity(self) -> bool:
        folder, files = self._folder(), release_files(self.dataset)
        if is_unchecked(folder):
            return all((folder / n).is_file() for n, _ in files)
        return all((folder / n).is_file() and file_md5(folder / n) == m for n, m in files)

    def _load_meta(self) -> None:
        name = self.meta["filename"]
        official = dict(release_files(self.dataset))[name]
        if not is_unchecked(self._folder()) and file_md5(self._folder() / name) != official:
            raise RuntimeError("Dataset metadata file not found or corrupted.")
        # The parent's own MD5 check reads the file again; with the check settled above, point it
        # at a metadata spec without a checksum (check_integrity with md5=None tests existence).
        self.meta = {**type(self).meta, "md5": None}  # instance attribute shadows the class's
        try:
            super()._load_meta()  # type: ignore[misc]
        finally:
            del self.meta


class CIFAR10Batches(MarkerAware, CIFAR10):
    """torchvision's CIFAR10, marker-aware."""


def build_transform(size: int, train: bool, mean: tuple = MEAN, std: tuple = STD) -> T.Compose:
    """train: (Resize) + RandomCrop(size, padding=size/8) + flip; val: (Resize). Then normalise."""
    ops: list = []
    if size != NATIVE_SIZE:
        ops.append(T.Resize(size, antialias=True))
    if train:
        ops += [T.RandomCrop(size, padding=max(1, size // 8)), T.RandomHorizontalFlip()]
    ops += [T.ToTensor(), T.Normalize(mean, std)]
    return T.Compose(ops)


def open_release(cfg: RunConfig, train: bool, make: Callable[..., CIFAR10], mean: tuple, std: tuple) -> CIFAR10:
    """``make(root, train=, transform=, download=False)`` on a checked folder of ``cfg.dataset``'s release."""
    entry = catalog.get(cfg.dataset)
    check_folder(cfg.data_root, entry.name)
    size = cfg.image_size or entry.default_size
    try:
        return make(cfg.data_root, train=train, transform=build_transform(size, train, mean, std), download=False)
    except (pickle.UnpicklingError, EOFError, KeyError, ValueError, TypeError) as e:  # vetted, yet not a batch
        folder = Path(cfg.data_root) / entry.folder
        raise ConfigError(f"the {entry.title} files in {folder} are not python batches ({type(e).__name__}: "
                          f"{' '.join(str(e).split())[:200]}); {_rewrite_hint(cfg.data_root, folder)}") from None


def open_split(cfg: RunConfig, train: bool) -> CIFAR10Batches:
    return open_release(cfg, train, CIFAR10Batches, MEAN, STD)  # type: ignore[return-value]
