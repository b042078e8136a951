"""Streaming datasets: read straight from the bucket, nothing written to the local disk.

Pets and ImageFolder list the prefix when the split is opened and GET the image (and trimap) of
every item in ``__getitem__``, so the per-object cost lands in the data-wait phase of every step.
CIFAR batches are whole pickled files that must be unpickled to know the split's size, so opening a
split GETs its batches into memory (DataLoader workers inherit the arrays, as with local CIFAR).
Datasets hold endpoint, bucket and keys only (picklable); each process reads through its own client.
Items equal what the local readers return for the same files.
"""
from __future__ import annotations

import hashlib
import importlib
import io
import pickle
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, Callable

from study.core.config import ConfigError
from study.core import catalog
from study.core.catalog import CIFAR10, CIFAR100, CUB200, IMAGEFOLDER, OXFORD_PETS
from study.data.s3.client import client_for, list_objects, read_object
from study.data.s3.errors import S3ReadError, s3_errors
from study.data.s3.urls import Location
from study.data.integrity import ACCEPTED
from study.data.synthetic import MARKER
from study.data.cifar import RestrictedUnpickler


def unpickle_batch(data: bytes, url: str) -> dict:
    try:
        obj = RestrictedUnpickler(io.BytesIO(data), encoding="latin1").load()
    except Exception as e:  # noqa: BLE001 — any decoding failure is a bad file
        raise ConfigError(f"{url} is not a CIFAR python batch ({type(e).__name__})") from None
    if not isinstance(obj, dict):
        raise ConfigError(f"{url} is not a CIFAR python batch (no dict inside)")
    return obj


class S3CIFAR10:
    """CIFAR-10 split held in memory after one GET per batch object; items as torchvision's CIFAR10
    returns them (PIL image through ``transform``, int target)."""

    def __init__(self, data: Any, targets: list[int], classes: list[str], transform: Callable | None) -> None:
        self.data, self.targets, self.classes, self.transform = data, targets, classes, transform
        self.class_to_idx = {c: i for i, c in enumerate(classes)}

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        from PIL import Image

        img = Image.fromarray(self.data[index])
        return (self.transform(img) if self.transform else img), self.targets[index]


def open_cifar(loc: Location, endpoint: str, train: bool, size: int, dataset: str = CIFAR10.name) -> S3CIFAR10:
    """A CIFAR-10 or CIFAR-100 split (``dataset``: the catalog name), MD5-checked as the local reader does."""
    import numpy as np

    from study.data.cifar import READERS, build_transform, release_files

    Reader = READERS[dataset]
    entry = catalog.get(dataset)
    mod = importlib.import_module(entry.reader)  # its normalisation constants
    client = client_for(endpoint)  # created here, before the fetching threads share it
    folder = loc.key(entry.folder) + "/"
    with s3_errors(f"listing {loc.url(entry.folder)}/", endpoint, loc.bucket):
        listing = list_objects(client, loc.bucket, folder)
    missing = [n for n, _ in release_files(dataset) if folder + n not in listing]
    if missing:
        raise ConfigError(f"incomplete {entry.title} at {loc.url(entry.folder)}/ (missing {', '.join(missing)}); "
                          f"upload a complete one with ./prepare.sh --upload {loc.url()}")
    unchecked = folder + MARKER in listing or folder + ACCEPTED in listing
    md5s = dict(release_files(dataset))
    names = [n for n, _ in (Reader.train_list if train else Reader.test_list)] + [Reader.meta["filename"]]

    def fetch(name: str) -> bytes:
        try:
            body = read_object(endpoint, loc.bucket, folder + name)
        except S3ReadError as e:
            raise ConfigError(str(e)) from None
        if not unchecked and hashlib.md5(body).hexdigest() != md5s[name]:
            raise ConfigError(f"corrupt {entry.title} object {loc.url(entry.folder, name)} (MD5 differs from the "
                              f"official release); upload it again")
        return body

    with ThreadPoolExecutor(len(names)) as pool:
        bodies = dict(zip(names, pool.map(fetch, names)))
    meta = unpickle_batch(bodies.pop(Reader.meta["filename"]), loc.url(entry.folder, Reader.meta["filename"]))
    arrays, targets = [], []
    for name in names[:-1]:
        batch = unpickle_batch(bodies[name], loc.url(entry.folder, name))
        arrays.append(batch["data"])
        targets.extend(batch["labels"] if "labels" in batch else batch["fine_labels"])
    data = np.vstack(arrays).reshape(-1, 3, 32, 32).transpose((0, 2, 3, 1))  # HWC, as torchvision keeps it
    classes = list(meta[Reader.meta["key"]])
    return S3CIFAR10(data, [int(t) for t in targets], classes, build_transform(size, train, mod.MEAN, mod.STD))


class S3OxfordPets:
    """Oxford-IIIT Pet segmentation split: image and trimap GET per item (2 objects per sample)."""

    def __init__(self, endpoint: str, bucket: str, folder_key: str, ids: list[str], transforms: Callable) -> None:
        self.endpoint, self.bucket, self.folder_key, self.ids, self.transforms = endpoint, bucket, folder_key, ids, transforms

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        from PIL import Image

        name = self.ids[index]
        image = Image.open(io.BytesIO(read_object(self.endpoint, self.bucket, f"{self.folder_key}/images/{name}.jpg")))
        trimap = Image.open(io.BytesIO(read_object(self.endpoint, self.bucket,
                                                   f"{self.folder_key}/annotations/trimaps/{name}.png")))
        return self.transforms(image.convert("RGB"), trimap)


def pets_split_ids(text: str, url: str) -> list[str]:
    """The sample ids of an Oxford-IIIT Pet split file (``trainval.txt``/``test.txt``)."""
    ids = []
    for n, line in enumerate(text.splitlines(), 1):  # torchvision's own rule: 4 fields per line
        if not line.strip():
            continue
        fields = line.split()
        if len(fields) != 4:
            raise ConfigError(f"cannot read the Oxford-IIIT Pet split file {url}: line {n} has {len(fields)} "
                              f"fields, not 4")
        ids.append(fields[0])
    return ids


def open_pets(loc: Location, endpoint: str, train: bool, size: int) -> S3OxfordPets:
    from study.data.pets import JointTransform

    client = client_for(endpoint)
    folder = loc.key(OXFORD_PETS.folder)
    split = "trainval" if train else "test"
    split_url = loc.url(OXFORD_PETS.folder, "annotations", f"{split}.txt")
    with s3_errors(f"listing {loc.url(OXFORD_PETS.folder)}/", endpoint, loc.bucket):
        images = list_objects(client, loc.bucket, f"{folder}/images/")
        trimaps = list_objects(client, loc.bucket, f"{folder}/annotations/trimaps/")
    try:
        text = read_object(endpoint, loc.bucket, f"{folder}/annotations/{split}.txt").decode("utf-8", "replace")
    except S3ReadError as e:
        raise ConfigError(f"incomplete Oxford-IIIT Pet at {loc.url(OXFORD_PETS.folder)}/: {e}") from None
    ids = pets_split_ids(text, split_url)
    lost = [i for i in ids if f"{folder}/images/{i}.jpg" not in images or f"{folder}/annotations/trimaps/{i}.png"
            not in trimaps]
    if lost:
        raise ConfigError(f"{len(lost)} samples listed in {split_url} have no image or trimap object under "
                          f"{loc.url(OXFORD_PETS.folder)}/ (first: {lost[0]}); upload the dataset again")
    return S3OxfordPets(endpoint, loc.bucket, folder, ids, JointTransform(size, train))


class S3ImageFolder:
    """ImageFolder split: classes from the key "folders" under the split, one GET per item."""

    def __init__(self, endpoint: str, bucket: str, samples: list[tuple[str, int]], classes: list[str],
                 transform: Callable | None) -> None:
        self.endpoint, self.bucket, self.samples, self.classes, self.transform = endpoint, bucket, samples, classes, transform
        self.class_to_idx = {c: i for i, c in enumerate(classes)}
        self.targets = [t for _, t in samples]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        from PIL import Image

        key, target = self.samples[index]
        img = Image.open(io.BytesIO(read_object(self.endpoint, self.bucket, key))).convert("RGB")
        return (self.transform(img) if self.transform else img), target


def open_imagefolder(loc: Location, endpoint: str, train: bool, size: int) -> S3ImageFolder:
    from torchvision.datasets.folder import IMG_EXTENSIONS

    from study.data.imagefolder import build_transform
    from study.data.prepare_imagenet import SYNSETS, read_synsets

    split = "train" if train else "val"
    url = f"{loc.url(IMAGEFOLDER.folder, split)}/"
    base = loc.key(IMAGEFOLDER.folder, split) + "/"
    with s3_errors(f"listing {url}", endpoint, loc.bucket):
        listing = list_objects(client_for(endpoint), loc.bucket, base)
    by_class: dict[str, list[str]] = {}
    for key in listing:
        rel = key[len(base):]
        if "/" in rel:  # files directly under the split are not in any class, as in ImageFolder
            by_class.setdefault(rel.split("/", 1)[0], []).append(key)
    classes = sorted(by_class)
    if not classes:
        raise ConfigError(f"no ImageFolder {split} set under {url}; upload it with ./prepare.sh --upload {loc.url()}")
    names = loc.key(IMAGEFOLDER.folder, SYNSETS)  # the class names prepare.sh --imagenet copied beside the links
    with s3_errors(f"listing {loc.url(IMAGEFOLDER.folder, SYNSETS)}", endpoint, loc.bucket):
        mapping = names in list_objects(client_for(endpoint), loc.bucket, names)
    shown = classes
    if mapping:
        try:
            wnids = read_synsets(read_object(endpoint, loc.bucket, names).decode("utf-8", "replace"))
        except S3ReadError as e:
            raise ConfigError(str(e)) from None
        shown = [wnids.get(c, c) for c in classes]
    samples = []
    for idx, cls in enumerate(classes):
        keys = sorted(k for k in by_class[cls] if k.lower().endswith(IMG_EXTENSIONS))
        if not keys:
            raise ConfigError(f"unusable ImageFolder at {url}: class {cls!r} has no image objects")
        samples += [(k, idx) for k in keys]
    return S3ImageFolder(endpoint, loc.bucket, samples, shown, build_transform(size, train))


def open_cub(loc: Location, endpoint: str, train: bool, size: int) -> Any:
    """CUB-200-2011: the index files read once, one GET per image."""
    from study.data.cub import CUBImages, read_index
    from study.data.imagefolder import build_transform

    folder = loc.key(CUB200.folder)

    def read_text(name: str) -> str:
        try:
            return read_object(endpoint, loc.bucket, f"{folder}/{name}").decode("utf-8", "replace")
        except S3ReadError as e:
            raise ConfigError(f"incomplete {CUB200.title} at {loc.url(CUB200.folder)}/: {e}") from None

    class S3CUB(CUBImages):
        def load(self, index: int) -> Any:
            from PIL import Image

            return Image.open(io.BytesIO(read_object(endpoint, loc.bucket, self.samples[index][0]))).convert("RGB")

    ix = read_index(read_text, loc.url(CUB200.folder), again=f"upload it again with ./prepare.sh --upload {loc.url()}")
    return S3CUB(folder, ix, train, build_transform(size, train), crop=False)


STREAM_OPENERS: dict[str, Callable[[Location, str, bool, int], Any]] = {
    CIFAR10.name: open_cifar, OXFORD_PETS.name: open_pets, IMAGEFOLDER.name: open_imagefolder,
    CIFAR100.name: partial(open_cifar, dataset=CIFAR100.name), CUB200.name: open_cub,
}
