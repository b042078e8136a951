"""The bad-input catalogue: every way a user can hand the study something unusable, each refused with
exit 2 and ONE line on stderr that names the problem and what to do, no traceback, and nothing
written (the files under the working folder are the same before and after).

Cases run in-process through ``study.cli.main`` (the parent is where bad input must be caught, before
any stage starts); one case also runs as a real ``python -m study`` process, so that a warning
printed by an import, or a traceback, would show.
"""
from __future__ import annotations

import os
import pickle
import random
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest
import torch

from study.cli import main
from tests.util import run_study

SECRET = "catalogueSecret-4d1f-never-print-me"
KEY_ID = "CATALOGUEKEYID000001"

# --- damaging a copy of the synthetic data -----------------------------------------------------------


def copy_dataset(src_root: Path, dst_root: Path, folder: str) -> Path:
    """dst_root/<folder> as a copy of the synthetic one (to be damaged); the other datasets linked."""
    dst_root.mkdir(parents=True, exist_ok=True)
    for entry in src_root.iterdir():
        if entry.name != folder:
            (dst_root / entry.name).symlink_to(entry)
    shutil.copytree(src_root / folder, dst_root / folder)
    return dst_root / folder


def cifar(root: Path, tmp: Path) -> Path:
    return copy_dataset(root, tmp / "data", "cifar-10-batches-py")


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def garble(path: Path) -> None:
    rnd = random.Random(0)
    path.write_bytes(bytes(rnd.randrange(256) for _ in range(4096)))


class Shell:
    """Stands for code a pickle would run (it only has to be importable as a global)."""

    def __reduce__(self):
        return (os.system, ("echo this must never run",))


def first_image(folder: Path) -> Path:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in (".jpeg", ".jpg"))[0]


def first_pet(pets: Path) -> str:
    return (pets / "annotations" / "trainval.txt").read_text().split()[0]


def write_cifar_labels(folder: Path, labels: list[int]) -> None:
    path = folder / "data_batch_1"
    with open(path, "rb") as f:
        batch = pickle.load(f, encoding="latin1")  # as torchvision reads it: str keys
    batch["labels"] = labels + batch["labels"][len(labels):]
    with open(path, "wb") as f:
        pickle.dump(batch, f, protocol=2)


def tiny_state(num_classes: int = 10) -> dict[str, torch.Tensor]:
    from study.models.builtins import TinyNet

    return TinyNet(num_classes).state_dict()


# --- the catalogue -------------------------------------------------------------------------------------


@dataclass
class Case:
    id: str
    args: list[str]
    words: list[str]  # each must appear in the one line (case-insensitive)
    setup: Callable[[Path, Path], None] | None = None  # (synthetic root, working folder)
    env: dict[str, str] = field(default_factory=dict)
    data: str = "{syn}"  # --data-root, "{syn}" = the shared synthetic root, "{tmp}/data" = a damaged copy


def _cifar_truncated(syn: Path, tmp: Path) -> None:
    truncate(cifar(syn, tmp) / "data_batch_1")


def _cifar_garbled(syn: Path, tmp: Path) -> None:
    garble(cifar(syn, tmp) / "data_batch_2")


def _cifar_runs_code(syn: Path, tmp: Path) -> None:
    (cifar(syn, tmp) / "data_batch_3").write_bytes(pickle.dumps({b"data": Shell()}, protocol=2))


def _cifar_wrong_format(syn: Path, tmp: Path) -> None:
    (cifar(syn, tmp) / "data_batch_1").write_bytes(pickle.dumps({"images": [1, 2, 3]}, protocol=2))


def _cifar_release_md5(syn: Path, tmp: Path) -> None:
    (cifar(syn, tmp) / "SYNTHETIC").unlink()  # claims to be the release: its MD5s must match


def _cifar_missing_batch(syn: Path, tmp: Path) -> None:
    (cifar(syn, tmp) / "data_batch_4").unlink()


def _cifar_labels(syn: Path, tmp: Path) -> None:
    write_cifar_labels(cifar(syn, tmp), [12])


def _imagenet_undecodable(syn: Path, tmp: Path) -> None:
    truncate(first_image(copy_dataset(syn, tmp / "data", "imagenet") / "train"))


def _imagenet_not_an_image(syn: Path, tmp: Path) -> None:
    first_image(copy_dataset(syn, tmp / "data", "imagenet") / "val").write_text("<html>404 Not Found</html>")


def _imagenet_empty_class(syn: Path, tmp: Path) -> None:
    train = copy_dataset(syn, tmp / "data", "imagenet") / "train"
    for f in next(p for p in sorted(train.iterdir()) if p.is_dir()).iterdir():
        f.unlink()


def _imagenet_classes_differ(syn: Path, tmp: Path) -> None:
    val = copy_dataset(syn, tmp / "data", "imagenet") / "val"
    shutil.rmtree(sorted(p for p in val.iterdir() if p.is_dir())[-1])


def _pets_trimap(syn: Path, tmp: Path) -> None:
    import numpy as np
    from PIL import Image

    pets = copy_dataset(syn, tmp / "data", "oxford-iiit-pet")
    path = pets / "annotations" / "trimaps" / f"{first_pet(pets)}.png"
    trimap = np.asarray(Image.open(path))
    Image.fromarray(((trimap == 1) * 255).astype(np.uint8), mode="L").save(path)  # a 0/255 binary mask instead


def _pets_image(syn: Path, tmp: Path) -> None:
    pets = copy_dataset(syn, tmp / "data", "oxford-iiit-pet")
    garble(pets / "images" / f"{first_pet(pets)}.jpg")


def _pets_split_file(syn: Path, tmp: Path) -> None:
    pets = copy_dataset(syn, tmp / "data", "oxford-iiit-pet")
    (pets / "annotations" / "trainval.txt").write_text("Abyssinian_1 one two three\n")


def _pets_empty_val(syn: Path, tmp: Path) -> None:
    pets = copy_dataset(syn, tmp / "data", "oxford-iiit-pet")
    (pets / "annotations" / "test.txt").write_text("")


def _thirty_images(syn: Path, tmp: Path) -> None:
    from study.data.synthetic import write_imagefolder

    write_imagefolder(tmp / "data", n_classes=3, n_train_per_class=10, n_val_per_class=2)


def _small_pets(syn: Path, tmp: Path) -> None:
    from study.data.synthetic import write_pets

    write_pets(tmp / "data", n_trainval=8, n_test=4, size=48)


def _cub_index_line(syn: Path, tmp: Path) -> None:
    (copy_dataset(syn, tmp / "data", "CUB_200_2011") / "train_test_split.txt").write_text("1 1\nnot a line\n")


def _cub_no_boxes(syn: Path, tmp: Path) -> None:
    (copy_dataset(syn, tmp / "data", "CUB_200_2011") / "bounding_boxes.txt").unlink()


def _cifar100_release_md5(syn: Path, tmp: Path) -> None:
    (copy_dataset(syn, tmp / "data", "cifar-100-python") / "SYNTHETIC").unlink()


def _users_imagenet(syn: Path, tmp: Path) -> None:
    cls = tmp / "ILSVRC" / "Data" / "CLS-LOC"
    shutil.copytree(syn / "imagenet" / "train", cls / "train")
    (cls / "val").mkdir()


def _weights(make: Callable[[Path], None]) -> Callable[[Path, Path], None]:
    return lambda syn, tmp: make(tmp / "w.pt")


def _save_and_truncate(path: Path) -> None:
    torch.save(tiny_state(), path)
    truncate(path)


def _resnet18_weights(path: Path) -> None:
    import torchvision

    torch.save(torchvision.models.resnet18().state_dict(), path)


def _one_matching_tensor(path: Path) -> None:
    own = tiny_state()
    torch.save({"backbone.0.weight": own["backbone.0.weight"], "other.weight": torch.zeros(3)}, path)


def _checkpoint(state: dict) -> Callable[[Path, Path], None]:
    def setup(syn: Path, tmp: Path) -> None:
        folder = tmp / "reports" / "r" / "checkpoints"
        folder.mkdir(parents=True)
        torch.save(state, folder / "00-base.pt")
    return setup


def _truncated_checkpoint(syn: Path, tmp: Path) -> None:
    _checkpoint({"model": tiny_state(), "step": 3})(syn, tmp)
    truncate(tmp / "reports" / "r" / "checkpoints" / "00-base.pt")


def _config(text: str, name: str = "c.yaml") -> Callable[[Path, Path], None]:
    return lambda syn, tmp: (tmp / name).write_text(text)


def _a_file(syn: Path, tmp: Path) -> None:
    (tmp / "afile").write_text("a file, not a folder")


TINY = ["--model", "tiny"]
PETS = ["--task", "segment", "--model", "tiny", "--image-size", "32"]
IMAGENET = ["--dataset", "imagefolder", "--model", "tiny", "--image-size", "32", "--batch-size", "8"]
DAMAGED = "{tmp}/data"
PLUGINS = Path(__file__).resolve().parent / "plugins"
HALVES = f"{PLUGINS / 'two_halves.py'}"


def user_data(name: str, *more: str) -> list[str]:
    return ["--model", "tiny", "--dataset", f"{HALVES}:{name}", *more]


def user_model(name: str) -> list[str]:
    return ["--model", f"{PLUGINS / 'bad_models.py'}:{name}"]


def user_task(name: str) -> list[str]:
    return ["--task", f"{HALVES}:{name}", "--model", "tiny", "--dataset", f"{HALVES}:halves"]

CASES = [
    # --- dataset files ---------------------------------------------------------------------------------
    Case("cifar-truncated-batch", TINY, ["data_batch_1", "truncated or garbled", "prepare.sh"], _cifar_truncated, data=DAMAGED),
    Case("cifar-garbled-batch", TINY, ["data_batch_2", "truncated or garbled", "prepare.sh"], _cifar_garbled, data=DAMAGED),
    Case("cifar-batch-runs-code", TINY, ["data_batch_3", "run code", "prepare.sh"], _cifar_runs_code, data=DAMAGED),
    Case("cifar-batch-wrong-format", TINY, ["not python batches", "prepare.sh"], _cifar_wrong_format, data=DAMAGED),
    Case("cifar-release-md5", TINY, ["corrupt cifar-10 file", "/data --cifar cifar-10-python.tar.gz", "/data --no-verify"],
         _cifar_release_md5, data=DAMAGED),
    Case("cifar-missing-batch", TINY, ["incomplete cifar-10", "data_batch_4", "prepare.sh"], _cifar_missing_batch, data=DAMAGED),
    Case("cifar-no-dataset", TINY, ["no cifar-10 at", "prepare.sh"], data="{tmp}/nowhere"),
    Case("cifar-label-out-of-range", TINY, ["0 to 12", "10 classes", "prepare.sh"], _cifar_labels, data=DAMAGED),
    Case("image-does-not-decode", IMAGENET, ["cannot be read", ".jpeg", "prepare.sh"], _imagenet_undecodable, data=DAMAGED),
    Case("image-is-not-an-image", IMAGENET, ["cannot be read", "val", "unidentifiedimageerror"], _imagenet_not_an_image,
         data=DAMAGED),
    Case("imagefolder-empty-class", IMAGENET, ["unusable imagefolder", "prepare.sh"], _imagenet_empty_class, data=DAMAGED),
    Case("imagefolder-classes-differ", IMAGENET, ["class lists differ"], _imagenet_classes_differ, data=DAMAGED),
    Case("pets-trimap-values", PETS, ["trimap", "[0, 255]", "1-3", ".png", "prepare.sh"], _pets_trimap, data=DAMAGED),
    Case("pets-image-does-not-decode", PETS, ["cannot be read", ".jpg", "prepare.sh"], _pets_image, data=DAMAGED),
    Case("pets-bad-split-file", PETS, ["split files"], _pets_split_file, data=DAMAGED),
    Case("pets-empty-val-split", PETS, ["val split", "is empty", "prepare.sh"], _pets_empty_val, data=DAMAGED),
    Case("cifar100-release-md5", ["--model", "tiny", "--dataset", "cifar100"],
         ["corrupt cifar-100 file", "/data --cifar cifar-100-python.tar.gz", "/data --no-verify"], _cifar100_release_md5,
         data=DAMAGED),
    Case("cifar100-no-dataset", ["--model", "tiny", "--dataset", "cifar100"], ["no cifar-100 at", "--synthetic",
         "--cifar cifar-100-python.tar.gz"], data="{tmp}/nowhere"),
    Case("cub-malformed-index", ["--model", "tiny", "--dataset", "cub200", "--image-size", "32"],
         ["train_test_split.txt: line 2", "/data --synthetic --force"], _cub_index_line, data=DAMAGED),
    Case("cub-crop-without-boxes", ["--model", "tiny", "--dataset", "cub200", "--crop-to-box"],
         ["--crop-to-box", "bounding_boxes.txt"], _cub_no_boxes, data=DAMAGED),
    Case("coarse-labels-of-cifar10", ["--model", "tiny", "--coarse-labels"], ["--coarse-labels", "cifar10"]),
    Case("data-root-at-users-imagenet", ["--model", "tiny", "--dataset", "imagefolder"],
         ["./prepare.sh --imagenet", "--data-root data"], _users_imagenet,
         data="{tmp}/ILSVRC"),
    Case("thirty-images-default-batch", ["--model", "tiny", "--dataset", "imagefolder", "--image-size", "32"],
         ["30 training samples", "32", "--batch-size to 10"], _thirty_images, data=DAMAGED),
    Case("segment-dry-run-small-set", ["--task", "segment", "--model", "tiny", "--dry-run"],
         ["--warmup to 1", "--batch-size to 2"], _small_pets, data=DAMAGED),
    # --- a user's model (plug-ins) ----------------------------------------------------------------------
    Case("plugin-model-file-missing", ["--model", "{tmp}/nowhere.py:build"], ["nowhere.py:build", "not found"]),
    Case("plugin-model-does-not-import", ["--model", f"{PLUGINS / 'model_broken_import.py'}:build"],
         ["model_broken_import.py:build", "modulenotfounderror", "a_model_package_nobody_installed"]),
    Case("plugin-model-module-does-not-import", ["--model", "no_such_package_here.models:build"],
         ["no_such_package_here.models:build", "does not import", "pythonpath"]),
    Case("plugin-model-function-missing", user_model("nothing_here"), ["bad_models.py:nothing_here", "has no nothing_here"]),
    Case("plugin-model-not-a-function", user_model("NOT_A_FUNCTION"), ["bad_models.py:NOT_A_FUNCTION", "not a function"]),
    Case("plugin-model-builder-raises", user_model("raises"),
         ["bad_models.py:raises", "valueerror", "width must be a multiple of 8"]),
    Case("plugin-model-returns-no-module", user_model("returns_a_number"),
         ["bad_models.py:returns_a_number", "int", "torch.nn.module"]),
    Case("plugin-model-output-wrong-classes", user_model("too_many_outputs"),
         ["bad_models.py:too_many_outputs", "(32, 13)", "(32, 10)"]),
    Case("plugin-model-output-not-logits", user_model("a_map_for_classify"),
         ["bad_models.py:a_map_for_classify", "(32, 10, 32, 32)", "--task classify"]),
    Case("torchvision-model-unknown", ["--model", "torchvision:resnet_nine"], ["torchvision:resnet_nine", "no classification"]),
    Case("torchvision-model-of-another-task", ["--model", "torchvision:fcn_resnet50"],
         ["torchvision:fcn_resnet50", "segmentation", "--task classify"]),
    Case("torchvision-detection-model", ["--model", "torchvision:fasterrcnn_resnet50_fpn"],
         ["fasterrcnn_resnet50_fpn", "classification", "segmentation"]),
    Case("timm-model-unknown", ["--model", "timm:resnet_nine"], ["timm:resnet_nine", "timm has no model"]),
    Case("timm-model-for-segment", ["--task", "segment", "--model", "timm:resnet10t", "--image-size", "32"],
         ["timm:resnet10t", "classifier", "--task segment"]),
    # --- a user's dataset and task (plug-ins) ---------------------------------------------------------
    Case("plugin-dataset-file-missing", ["--model", "tiny", "--dataset", "{tmp}/nowhere.py:data"],
         ["nowhere.py:data", "not found"]),
    Case("plugin-dataset-does-not-import", ["--model", "tiny", "--dataset", f"{PLUGINS / 'broken_import.py'}:data"],
         ["broken_import.py:data", "importing", "a_package_nobody_installed"]),
    Case("plugin-dataset-function-missing", user_data("nothing_here"), ["two_halves.py:nothing_here", "has no nothing_here"]),
    Case("plugin-dataset-not-a-function", user_data("NOT_A_FUNCTION"), ["two_halves.py:NOT_A_FUNCTION", "not a function"]),
    Case("plugin-dataset-raises", user_data("raises"), ["two_halves.py:raises", "raised runtimeerror", "no such table"]),
    Case("plugin-dataset-returns-one-split", user_data("returns_one"),
         ["two_halves.py:returns_one", "returned halves", "(train, val)"]),
    Case("plugin-dataset-not-map-style", user_data("not_map_style"),
         ["two_halves.py:not_map_style", "train split", "not a map-style dataset"]),
    Case("plugin-dataset-items-not-pairs", user_data("bad_items"),
         ["two_halves.py:bad_items", "train sample 0", "int", "(input, target)"]),
    Case("plugin-dataset-label-out-of-range", user_data("label_out_of_range"),
         ["two_halves.py:label_out_of_range", "0..0"]),
    Case("plugin-task-class-missing", user_task("NoSuchTask"), ["two_halves.py:NoSuchTask", "has no NoSuchTask"]),
    Case("plugin-task-not-a-task", user_task("NotATask"), ["two_halves.py:NotATask", "study.train.tasks.Task"]),
    Case("plugin-task-without-model", ["--task", f"{HALVES}:MyClassification"], ["plug-in task", "--model and --dataset"]),
    # --- weights ---------------------------------------------------------------------------------------
    Case("weights-not-found", [*TINY, "--weights", "{tmp}/none.pt"], ["weights file not found"]),
    Case("weights-garbled", [*TINY, "--weights", "{tmp}/w.pt"], ["cannot load weights", "damaged", "again"], _weights(garble)),
    Case("weights-truncated", [*TINY, "--weights", "{tmp}/w.pt"], ["cannot load weights", "damaged", "again"],
         _weights(_save_and_truncate)),
    Case("weights-other-architecture", ["--model", "resnet50", "--weights", "{tmp}/w.pt"],
         ["77 of the 265", "resnet50", "90%"],
         _weights(_resnet18_weights)),
    Case("weights-match-too-little", [*TINY, "--weights", "{tmp}/w.pt"], ["1 of the", "90%"],
         _weights(_one_matching_tensor)),
    Case("weights-hold-objects", [*TINY, "--weights", "{tmp}/w.pt"], ["python objects", "state_dict()"],
         _weights(lambda p: torch.save({"w": torch.zeros(1), "shell": Shell()}, p))),
    Case("weights-no-state-dict", [*TINY, "--weights", "{tmp}/w.pt"], ["no state dict"],
         _weights(lambda p: torch.save([torch.zeros(1)], p))),
    # --- --resume checkpoints ------------------------------------------------------------------------------
    Case("resume-checkpoint-other-model", [*TINY, "--run-name", "r", "--resume"],
         ["--resume", "00-base.pt", "saved by model resnet18", "delete it"],
         _checkpoint({"model": tiny_state(), "meta": {"model": "resnet18", "task": "classify", "num_classes": 10}})),
    Case("resume-checkpoint-other-shapes", [*TINY, "--run-name", "r", "--resume"],
         ["--resume", "holds another model", "delete it"], _checkpoint({"model": tiny_state(num_classes=3), "step": 1})),
    Case("resume-checkpoint-truncated", [*TINY, "--run-name", "r", "--resume"], ["--resume", "cannot be read", "delete it"],
         _truncated_checkpoint),
    # --- config values -------------------------------------------------------------------------------------
    Case("config-wrong-type", [*TINY, "--config", "{tmp}/c.yaml"], ["batch_size must be a whole number", "'32'"],
         _config('batch_size: "32"\n')),
    Case("config-wrong-type-bool", [*TINY, "--config", "{tmp}/c.yaml"], ["dry_run must be true or false"],
         _config("dry_run: yes please\n")),
    Case("config-unknown-key", [*TINY, "--config", "{tmp}/c.yaml"], ["unknown config key", "batchsize"],
         _config("batchsize: 32\n")),
    Case("config-unparsable", [*TINY, "--config", "{tmp}/c.yaml"], ["cannot parse config file"], _config("steps: [1,\n")),
    Case("config-sets-what-a-toggle-plans", [*TINY, "--config", "{tmp}/c.yaml"],
         ["num_workers", "--stack workers=N"], _config("num_workers: 4\n")),
    Case("config-sets-the-launcher-in-a-section", [*TINY, "--config", "{tmp}/c.yaml"],
         ["launcher", "ddp"], _config("training:\n  batch_size: 8\nlaunch:\n  launcher: torchrun\n")),
    Case("config-section-holds-another-sections-key", [*TINY, "--config", "{tmp}/c.yaml"],
         ["lr", "data", "training"], _config("data:\n  lr: 0.1\n")),
    Case("config-wrong-suffix", [*TINY, "--config", "{tmp}/c.json"], [".yaml, .yml or .toml"], _config("{}", "c.json")),
    Case("cli-not-a-number", [*TINY, "--steps", "many"], ["invalid int value"]),
    Case("batch-size-zero", [*TINY, "--batch-size", "0"], ["--batch-size", "1"]),
    Case("lr-negative", [*TINY, "--lr", "-1"], ["--lr"]),
    Case("nnodes-without-endpoint", [*TINY, "--nnodes", "2"], ["--nnodes 2", "--rdzv-endpoint"]),
    Case("endpoint-without-port", [*TINY, "--nnodes", "2", "--rdzv-endpoint", "node0"], ["is not HOST:PORT"]),
    Case("auto-across-nodes", [*TINY, "--stack", "auto", "--nnodes", "2", "--rdzv-endpoint", "127.0.0.1:29999"],
         ["--stack auto", "one node"]),
    Case("until-not-a-target", [*TINY, "--until", "top1"], ["is not METRIC=VALUE", "--until top1=0.5"]),
    Case("until-not-a-number", [*TINY, "--until", "top1=half"], ["is not METRIC=VALUE"]),
    Case("until-metric-the-task-lacks", [*TINY, "--until", "miou=0.5"], ["top1, top5", "miou"]),
    Case("until-minutes-zero", [*TINY, "--until", "top1=0.5", "--until-minutes", "0"], ["--until-minutes must be"]),
    Case("warmup-eats-every-step", [*TINY, "--steps", "3", "--warmup", "5"], ["no measured step", "--warmup"]),
    Case("batch-larger-than-subset", [*TINY, "--subset", "16", "--batch-size", "32"], ["no full batch", "--subset"]),
    Case("unknown-model", ["--model", "vgg16"], ["'vgg16'", "resnet50"]),
    Case("model-task-mismatch", ["--task", "segment", "--model", "resnet18"], ["does not do task"]),
    Case("dataset-task-mismatch", ["--task", "segment", "--model", "tiny", "--dataset", "cifar10"], ["has no labels"]),
    Case("model-cannot-take-the-batch", ["--model", "resnet18", "--batch-size", "1"],
         ["cifar-10", "32x32", "--batch-size 1", "more than 1 value per channel"]),
    # --- toggles -------------------------------------------------------------------------------------------
    Case("unknown-toggle", [*TINY, "--stack", "workers,turbo"], ["'turbo'"]),
    Case("conflicting-toggles", [*TINY, "--stack", "script,compile"], ["conflict"]),
    Case("ddp-of-one-process", [*TINY, "--stack", "ddp=1"], ["single process", "ddp=2"]),
    # --- outputs -------------------------------------------------------------------------------------------
    Case("reports-under-a-file", [*TINY, "--reports-root", "{tmp}/afile/reports"], ["cannot write outputs", "--reports-root"],
         _a_file),
    Case("profiles-unwritable", [*TINY, "--profiles-root", "/proc/1/study-profiles"], ["cannot write outputs"]),
    Case("run-name-with-slash", [*TINY, "--run-name", "a/b"], ["--run-name"]),
    # --- S3 and secrets ------------------------------------------------------------------------------------
    Case("s3-endpoint-with-credentials", [*TINY, "--s3-endpoint", f"http://{KEY_ID}:{SECRET}@127.0.0.1:9000"],
         ["must not carry credentials"], data="s3://bucket/prefix"),
    Case("s3-env-endpoint-with-credentials", TINY, ["credentials"], data="s3://bucket/prefix",
         env={"AWS_ENDPOINT_URL": f"http://{KEY_ID}:{SECRET}@127.0.0.1:9000"}),
    Case("s3-url-with-credentials", TINY, ["must not carry credentials"], data=f"s3://{KEY_ID}:{SECRET}@bucket/prefix"),
    Case("s3-endpoint-unreachable", [*TINY, "--s3-endpoint", "http://127.0.0.1:{closed}"], ["cannot reach the s3 endpoint"],
         data="s3://bucket/prefix"),
]


def files_under(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.lstat().st_size, p.lstat().st_mtime_ns)
            for p in folder.rglob("*") if not p.is_dir() or p.is_symlink()} | \
           {str(p.relative_to(folder)) + "/": (0, 0) for p in folder.rglob("*") if p.is_dir() and not p.is_symlink()}


def expand(text: str, tmp: Path, syn: Path, closed: int) -> str:
    return text.replace("{tmp}", str(tmp)).replace("{syn}", str(syn)).replace("{closed}", str(closed))


def check_refusal(code: int, err: str, words: list[str]) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2, err
    assert "Traceback" not in err and len(lines) == 1, err
    line = lines[0]
    assert line.startswith("study: error: "), line
    for w in words:
        assert w.lower() in line.lower(), (w, line)
    assert SECRET not in err and KEY_ID not in err, line
    return line


def test_the_catalogue_is_large_and_unique() -> None:
    assert len(CASES) >= 25 and len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_one_line_and_exit_2(case: Case, synthetic_root: Path, tmp_path: Path,
                                          capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.s3_server import CLEARED, closed_port

    for name in CLEARED:
        monkeypatch.delenv(name, raising=False)
    for k, v in {"AWS_ACCESS_KEY_ID": KEY_ID, "AWS_SECRET_ACCESS_KEY": SECRET, "AWS_DEFAULT_REGION": "us-east-1",
                 "AWS_EC2_METADATA_DISABLED": "true", **case.env}.items():
        monkeypatch.setenv(k, v)
    monkeypatch.chdir(tmp_path)
    if case.setup:
        case.setup(synthetic_root, tmp_path)
    closed = closed_port()
    args = [expand(a, tmp_path, synthetic_root, closed) for a in case.args]
    args += ["--data-root", expand(case.data, tmp_path, synthetic_root, closed), "--profile", ""]
    before = files_under(tmp_path)
    capsys.readouterr()
    code = main(args)
    out, err = capsys.readouterr()
    line = check_refusal(code, err, case.words)
    print(line)  # the catalogue's lines, for review: pytest -s
    assert files_under(tmp_path) == before, "a refused run must leave nothing behind"


@pytest.mark.slow  # a fresh interpreter importing torch; the catalogue above runs every case in-process
def test_a_real_process_refuses_in_one_line(synthetic_root: Path, tmp_path: Path) -> None:
    """As a user sees it: python -m study, a truncated CIFAR batch (the seed studies' UnpicklingError)."""
    _cifar_truncated(synthetic_root, tmp_path)
    before = files_under(tmp_path)
    p = run_study("--model", "tiny", "--data-root", str(tmp_path / "data"), "--profile", "", cwd=tmp_path)
    check_refusal(p.returncode, p.stderr, ["data_batch_1", "truncated or garbled", "prepare.sh"])
    assert files_under(tmp_path) == before
