"""The dataset table against what the code really does: every reader module of the data package has a
row, every row's reader opens its folder with the row's size, task and classes, the options accept
exactly the rows, the hints name the row's own prepare.sh option; the data package's modules import
on their own, and the torch-free ones stay torch-free."""
from __future__ import annotations

import importlib
import json
import pkgutil
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import study.core
import study.data
from study.core import catalog
from study.core.config import ConfigError, RunConfig
from study.data import open_datasets

REPO = Path(__file__).resolve().parents[2]


def package_modules(package) -> list[str]:
    """Every module of ``package``, subpackages included, found on disk (no list kept by hand)."""
    return [package.__name__] + [m.name for m in pkgutil.walk_packages(package.__path__, package.__name__ + ".")]


def test_every_reader_module_has_a_row_and_every_row_a_reader() -> None:
    """A reader is a module of the data package with ``open_split(cfg, train)``: one added without a row
    could not be chosen, a row naming a module without one could not be read."""
    readers = {m for m in package_modules(study.data) if callable(getattr(importlib.import_module(m), "open_split", None))}
    assert readers, "no module of study.data reads a local folder"
    assert readers == {d.reader for d in catalog.DATASETS}
    assert len({d.name for d in catalog.DATASETS}) == len({d.folder for d in catalog.DATASETS}) == len(catalog.DATASETS)


@pytest.mark.parametrize("dataset", catalog.DATASETS, ids=lambda d: d.name)
def test_each_row_is_what_its_reader_opens(dataset: catalog.Dataset, synthetic_root: Path) -> None:
    """The synthetic writers (write_all, through the shared root) put the dataset in the row's folder; opened through the row's reader its
    images have the row's default side, its targets serve the row's task (a class index, or a mask whose
    values are the row's classes), and the classes are the row's where it fixes them."""
    assert (synthetic_root / dataset.folder).is_dir()
    cfg = RunConfig(task=dataset.task, dataset=dataset.name, data_root=str(synthetic_root), subset=4, val_subset=4)
    b = open_datasets(cfg)
    for split in (b.train, b.val):
        x, y = split[0]
        assert tuple(x.shape) == (3, dataset.default_size, dataset.default_size)
        if dataset.task == "classify":
            assert isinstance(y, int) and 0 <= y < b.num_classes
        else:  # a mask the size of the image: background/pet, 255 on ignored borders
            assert isinstance(y, torch.Tensor) and tuple(y.shape) == tuple(x.shape[-2:])
            assert set(y.unique().tolist()) <= set(range(len(dataset.classes))) | {255}
    assert b.num_classes == len(b.classes) >= 2
    if dataset.classes:
        assert b.classes == list(dataset.classes)


def test_the_options_take_every_row_and_refuse_the_rest() -> None:
    """--dataset accepts each row with its task and refuses the other task and an unknown name, listing
    the rows; a task's default dataset is a row serving that task."""
    tasks = {d.task for d in catalog.DATASETS}
    for d in catalog.DATASETS:
        assert RunConfig(task=d.task, dataset=d.name).dataset == d.name
        for other in tasks - {d.task}:
            with pytest.raises(ConfigError, match=d.name):
                RunConfig(task=other, dataset=d.name)
    with pytest.raises(ConfigError) as e:
        RunConfig(dataset="no-such-set")
    assert all(d.name in str(e.value) for d in catalog.DATASETS)
    for task in tasks:
        assert catalog.get(RunConfig(task=task).dataset).task == task


@pytest.mark.parametrize("dataset", catalog.DATASETS, ids=lambda d: d.name)
def test_a_missing_folder_names_the_rows_folder_and_a_prepare_command_that_parses(dataset: catalog.Dataset,
                                                                                   tmp_path: Path) -> None:
    from study.data.prepare import parser

    with pytest.raises(ConfigError) as e:
        open_datasets(RunConfig(task=dataset.task, dataset=dataset.name, data_root=str(tmp_path)))
    msg = str(e.value)
    assert "\n" not in msg and str(tmp_path / dataset.folder) in msg and dataset.prepare in msg
    # what the hint tells the user to run is a command line prepare.sh itself accepts
    option, *values = shlex.split(dataset.prepare)
    args = parser().parse_args(["--root", str(tmp_path), option, *values])
    got = getattr(args, option.lstrip("-").replace("-", "_"))
    assert (got if isinstance(got, list) else [got]) == values


# The data modules the parent process imports before any stage: they must not pull in torch (seconds of
# start-up) or boto3 (optional). study.core is torch-free as a whole (DESIGN.md: its layer); the data
# package's light modules are named here, and each name must still be a module.
LIGHT_DATA = ["study.data", "study.data.bundle", "study.data.checksum", "study.data.prepare", "study.data.integrity",
              "study.data.prepare_imagenet", "study.data.synthetic_cifar100", "study.data.synthetic_cub"]

# Imports each module named on the command line as if it were the first study module imported (every
# study and optimizations module dropped from sys.modules before it): an import loop shows as a module
# that fails when it comes first. Prints one JSON object: module -> [error or "", torch loaded, boto3 loaded].
FIRST_IMPORT = """
import importlib, json, sys, traceback
out = {}
for name in sys.argv[1:]:
    for m in [m for m in sys.modules if m.split(".")[0] in ("study", "optimizations")]:
        del sys.modules[m]
    try:
        importlib.import_module(name)
        err = ""
    except BaseException:
        err = traceback.format_exc().strip().splitlines()[-1]
    out[name] = [err, "torch" in sys.modules, "boto3" in sys.modules]
print(json.dumps(out))
"""


def first_imports(modules: list[str]) -> dict[str, list]:
    r = subprocess.run([sys.executable, "-c", FIRST_IMPORT, *modules], capture_output=True, text=True, cwd=REPO,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.mark.slow  # two fresh interpreters, one of them importing torch and every data module
def test_every_data_module_imports_first_and_the_light_ones_stay_torch_free() -> None:
    data = package_modules(study.data)
    light = package_modules(study.core) + LIGHT_DATA
    assert set(LIGHT_DATA) <= set(data), sorted(set(LIGHT_DATA) - set(data))
    # the light ones in an interpreter of their own: while none of them loads torch or boto3, no other
    # module has, so a module flagged is the first light one that does (the rest after it show it too)
    got = first_imports(light)
    assert {m: row for m, row in got.items() if row != ["", False, False]} == {}
    got = first_imports([m for m in data if m not in light])
    assert set(got) == set(data) - set(light)
    assert {m: row[0] for m, row in got.items() if row[0]} == {}
