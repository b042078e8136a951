"""S3 shards against a real S3-protocol server on 127.0.0.1 (moto's, over HTTP), read through a
proxy that delays every request and counts them by method: written by prepare.sh --upload --shards,
read back equal to the local readers, each rank and worker its own samples, bad shards refused in one
line before any stage, nothing ever written by a study."""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import tarfile
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

from benchmarks.latency_proxy import DelayProxy
from study.core.config import RunConfig
from study.data import open_datasets, s3, synthetic
from study.data.s3.shard_index import INDEX
from study.data.samples import SampleError
from tests.s3_server import BUCKET, CLEARED, SECRET, LoopbackS3, aws_env
from tests.util import run_cli, stage_rows

PREFIX = "sharded"
URL = f"s3://{BUCKET}/{PREFIX}"
TASKS = {"oxford-pets": "segment", "cifar10": "classify", "imagefolder": "classify"}
FOLDERS = {"oxford-pets": "oxford-iiit-pet", "cifar10": "cifar-10-batches-py", "imagefolder": "imagenet"}
SHARD_MB = "0.02"  # a few samples per shard: several shards per split, so spans cross shard ends


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory):
    """Tiny synthetic sets, the loopback server with them as shards, and a delaying proxy in front."""
    env = aws_env(tmp_path_factory.mktemp("aws"))
    root = tmp_path_factory.mktemp("tiny-data")
    synthetic.write_pets(root, n_trainval=24, n_test=8, size=48)
    synthetic.write_cifar(root, n_train=100, n_test=20)
    synthetic.write_imagefolder(root, n_classes=3, n_train_per_class=4, n_val_per_class=2, size=32)
    with pytest.MonkeyPatch.context() as mpatch:
        for name in CLEARED:
            mpatch.delenv(name, raising=False)
        for k, v in env.items():
            mpatch.setenv(k, v)
        srv = LoopbackS3().start()
        proxy = DelayProxy(int(srv.endpoint.rsplit(":", 1)[1]), 0.005).start()
        try:
            s3.make_client(srv.endpoint).create_bucket(Bucket=BUCKET)
            code, out, err = prepare("--root", str(root), "--upload", URL, "--shards", "--shard-size", SHARD_MB,
                                     "--s3-endpoint", srv.endpoint)
            assert code == 0, err
            yield type("Store", (), dict(root=root, endpoint=srv.endpoint, proxy=proxy, upload=out))
        finally:
            proxy.stop()
            srv.stop()


def prepare(*args: str) -> tuple[int, str, str]:
    """prepare.sh's main in this process (its command line is test_s3's): exit status, stdout, stderr."""
    from study.data.prepare import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    return code, out.getvalue(), err.getvalue()


def cfg(store, dataset: str, url: str = URL, **kw) -> RunConfig:
    return RunConfig(task=TASKS[dataset], dataset=dataset, data_root=url, s3_endpoint=store.proxy.endpoint, **kw)


def local(store, dataset: str, **kw):
    return open_datasets(RunConfig(task=TASKS[dataset], dataset=dataset, data_root=str(store.root), **kw))


def client(store):
    return s3.make_client(store.endpoint)


def same(a, b) -> bool:
    return torch.equal(torch.as_tensor(a[0]), torch.as_tensor(b[0])) and \
        torch.equal(torch.as_tensor(a[1]), torch.as_tensor(b[1]))


# --- written: plain WebDataset tars and an index ---------------------------------------------------
def test_shards_are_webdataset_tars_with_an_index(store) -> None:
    said = next(line for line in store.upload.splitlines() if line.startswith("Oxford-IIIT Pet"))
    assert "24 train" in said and "8 val" in said
    keys = s3.list_objects(client(store), BUCKET, f"{PREFIX}/shards/oxford-iiit-pet/")
    tars = sorted(k for k in keys if k.endswith(".tar"))
    assert len([k for k in tars if "/train-" in k]) > 1 and f"{PREFIX}/shards/oxford-iiit-pet/{INDEX}" in keys
    body = client(store).get_object(Bucket=BUCKET, Key=tars[0])["Body"].read()
    names = tarfile.open(fileobj=io.BytesIO(body)).getnames()  # any tar reader takes them
    stems = sorted({n.split(".")[0] for n in names})
    assert names and sorted(names) == sorted(f"{s}.{e}" for s in stems for e in ("jpg", "png"))
    body = client(store).get_object(Bucket=BUCKET, Key=f"{PREFIX}/shards/cifar-10-batches-py/val-000000.tar")
    names = tarfile.open(fileobj=io.BytesIO(body["Body"].read())).getnames()
    assert names[:2] == ["00000000.png", "00000000.cls"]  # validation in index order
    code, again, _ = prepare("--root", str(store.root), "--upload", URL, "--shards", "--shard-size", SHARD_MB,
                             "--s3-endpoint", store.endpoint)
    assert code == 0 and again.count(" 0 sent") == 3  # the same bytes: nothing sent again


# --- read back: the local readers' samples ---------------------------------------------------------
@pytest.mark.parametrize("dataset", list(TASKS))
def test_shards_read_back_equal_to_local(store, dataset: str) -> None:
    remote, mine = open_datasets(cfg(store, dataset, image_size=32)), local(store, dataset, image_size=32)
    assert type(remote.train).__name__ == "ShardStream"
    assert (len(remote.train), len(remote.val)) == (len(mine.train), len(mine.val))
    assert remote.classes == mine.classes and remote.num_classes == mine.num_classes
    assert [(r.split, r.count) for r in remote.loads] == [(r.split, r.count) for r in mine.loads]
    assert remote.loads[0].seconds > 0  # seed record 10: the index and the listing, fetched
    streamed = list(remote.val)  # the stream, in order: the same items as the local reader's
    assert len(streamed) == len(mine.val) and all(same(a, mine.val[i]) for i, a in enumerate(streamed))
    assert all(same(remote.val[i], mine.val[i]) for i in (0, len(mine.val) - 1))  # one ranged GET each
    torch.manual_seed(0)
    x = remote.train[3]
    torch.manual_seed(0)
    assert same(x, mine.train[3])
    if TASKS[dataset] == "classify":  # every training sample once per epoch, whatever the order
        labels = sorted(int(y) for _, y in remote.train)
        assert labels == sorted(int(mine.train[i][1]) for i in range(len(mine.train)))


def test_subset_keeps_the_local_readers_samples(store) -> None:
    remote = open_datasets(cfg(store, "cifar10", subset=30, val_subset=7))
    mine = local(store, "cifar10", subset=30, val_subset=7)
    assert (len(remote.train), len(remote.val)) == (30, 7)
    assert all(same(remote.val[i], mine.val[i]) for i in range(7))
    assert len(list(remote.val)) == 7
    assert sorted(int(y) for _, y in remote.train) == sorted(int(mine.train[i][1]) for i in range(30))


class Digest:
    """Decoder stand-in: a sample's identity (its image's MD5) instead of its tensors."""

    def __call__(self, parts: dict) -> str:
        return hashlib.md5(parts["png"]).hexdigest()


def test_each_rank_and_worker_reads_its_own_samples(store) -> None:
    train = open_datasets(cfg(store, "cifar10")).train
    train.decode, world, batch = Digest(), 2, 4
    seen: list[list[str]] = []
    for rank in range(world):
        view = train.for_loader(rank, world, batch, drop_last=True)
        spans = [view.reader_span(w, 2) for w in range(2)]
        assert spans[0][1] == spans[1][0] and (spans[0][1] - spans[0][0]) % batch == 0  # whole batches each
        # seeded alike on every rank, as a stage's loader is: the epoch's shard order comes from it
        loader = DataLoader(view, batch_size=batch, drop_last=True, num_workers=2,
                            generator=torch.Generator().manual_seed(0))
        got = [d for b in loader for d in b]
        assert len(got) == len(view) == 100 // world // batch * batch  # every rank the same full batches
        seen.append(got)
    flat = [d for got in seen for d in got]
    assert len(set(flat)) == len(flat)  # no sample read twice: disjoint spans across ranks and workers
    one = train.for_loader(0, 1, 1, drop_last=False)
    first, second = list(one), list(one)  # two epochs: all samples each, shards in another order
    assert sorted(first) == sorted(second) and len(set(first)) == 100 and first != second


def test_reads_only_get_through_the_proxy(store) -> None:
    before = dict(store.proxy.methods)
    b = open_datasets(cfg(store, "oxford-pets", image_size=32))
    list(DataLoader(b.train.for_loader(0, 1, 4, True), batch_size=4, drop_last=True))
    after = store.proxy.methods
    assert after["GET"] > before.get("GET", 0) and set(after) == {"GET"}  # listings, index and ranged GETs


# --- bad input: one line, before any stage; or the sample and shard named --------------------------
def copy_prefix(store, dataset: str, to: str) -> str:
    """The dataset's shards copied to another prefix (to damage); returns its s3:// URL."""
    c = client(store)
    src = f"{PREFIX}/shards/{FOLDERS[dataset]}/"
    for key in s3.list_objects(c, BUCKET, src):
        c.copy_object(Bucket=BUCKET, Key=f"{to}/shards/{FOLDERS[dataset]}/{key[len(src):]}",
                      CopySource={"Bucket": BUCKET, "Key": key})
    return f"s3://{BUCKET}/{to}"


def exits_2(store, tmp_path: Path, url: str, dataset: str = "oxford-pets") -> str:
    """The CLI refuses in one line with exit 2, before any stage; returns the line."""
    from study.cli import main

    out, err = io.StringIO(), io.StringIO()
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(["--dry-run", "--model", "tiny", "--profile", "", "--task", TASKS[dataset], "--dataset",
                         dataset, "--data-root", url, "--s3-endpoint", store.proxy.endpoint])
    finally:
        os.chdir(cwd)
    lines = err.getvalue().strip().splitlines()
    assert code == 2 and len(lines) == 1 and "Traceback" not in lines[0], err.getvalue()
    assert not list(tmp_path.rglob("stage.json")) and SECRET not in err.getvalue() + out.getvalue()
    return lines[0]


def test_missing_shard_exits_2(store, tmp_path: Path) -> None:
    url = copy_prefix(store, "oxford-pets", "lost")
    client(store).delete_object(Bucket=BUCKET, Key="lost/shards/oxford-iiit-pet/train-000001.tar")
    assert "train-000001.tar is missing" in exits_2(store, tmp_path, url)


def test_truncated_shard_exits_2(store, tmp_path: Path) -> None:
    url = copy_prefix(store, "oxford-pets", "cut")
    key = "cut/shards/oxford-iiit-pet/val-000000.tar"
    body = client(store).get_object(Bucket=BUCKET, Key=key)["Body"].read()
    client(store).put_object(Bucket=BUCKET, Key=key, Body=body[:len(body) // 2])
    assert "val-000000.tar is truncated" in exits_2(store, tmp_path, url)


def test_index_that_does_not_match_its_shards_exits_2(store, tmp_path: Path) -> None:
    url = copy_prefix(store, "oxford-pets", "apart")
    key = "apart/shards/oxford-iiit-pet/train-000000.tar"
    body = client(store).get_object(Bucket=BUCKET, Key=key)["Body"].read()
    client(store).put_object(Bucket=BUCKET, Key=key, Body=bytes(reversed(body)))  # same size, other bytes
    assert "train-000000.tar does not match its index" in exits_2(store, tmp_path, url)
    client(store).put_object(Bucket=BUCKET, Key=key, Body=body)
    index = f"apart/shards/oxford-iiit-pet/{INDEX}"
    doc = json.loads(client(store).get_object(Bucket=BUCKET, Key=index)["Body"].read())
    doc["splits"]["val"]["count"] += 1
    client(store).put_object(Bucket=BUCKET, Key=index, Body=json.dumps(doc).encode())
    said = exits_2(store, tmp_path, url)
    assert "9 val" in said and "8" in said.split("9 val", 1)[1]  # what the index counts, then what the shards hold


def test_shards_of_another_dataset_exit_2(store, tmp_path: Path) -> None:
    c = client(store)
    pets = c.get_object(Bucket=BUCKET, Key=f"{PREFIX}/shards/oxford-iiit-pet/{INDEX}")["Body"].read()
    c.put_object(Bucket=BUCKET, Key=f"mixed/shards/imagenet/{INDEX}", Body=pets)
    line = exits_2(store, tmp_path, f"s3://{BUCKET}/mixed", dataset="imagefolder")
    assert "'oxford-pets'" in line and "'imagefolder'" in line  # what the shards hold, what was asked for


def test_a_sample_that_does_not_decode_names_itself_and_its_shard(store) -> None:
    url = copy_prefix(store, "oxford-pets", "broken")
    key = "broken/shards/oxford-iiit-pet/val-000000.tar"
    c = client(store)
    body = bytearray(c.get_object(Bucket=BUCKET, Key=key)["Body"].read())
    body[512:1024] = bytes(512)  # the first sample's JPEG header, zeroed: same size, undecodable
    index = f"broken/shards/oxford-iiit-pet/{INDEX}"
    doc = json.loads(c.get_object(Bucket=BUCKET, Key=index)["Body"].read())
    doc["splits"]["val"]["shards"][0]["md5"] = hashlib.md5(body).hexdigest()  # index and shard agree again
    c.put_object(Bucket=BUCKET, Key=key, Body=bytes(body))
    c.put_object(Bucket=BUCKET, Key=index, Body=json.dumps(doc).encode())
    val = open_datasets(cfg(store, "oxford-pets", url)).val
    with pytest.raises(SampleError, match=r"sample 00000000 of shard s3://.*/val-000000\.tar cannot be read"):
        list(val)


def test_shard_options_without_upload_exit_2(store, tmp_path: Path) -> None:
    bad = (["--shards"], ["--upload", URL, "--shard-size", "5"], ["--upload", URL, "--shards", "--shard-size", "0"])
    for args in bad:
        code, _, err = prepare("--root", str(store.root), "--s3-endpoint", store.endpoint, *args)
        assert code == 2 and len(err.strip().splitlines()) == 1 and "shard" in err, err


# --- a whole study ---------------------------------------------------------------------------------
@pytest.mark.slow
def test_study_streams_pets_shards_with_workers_and_ddp_and_writes_nothing(store, tmp_path: Path) -> None:
    """Workers, then two DDP ranks each with its workers: every reader its own span of the shards."""
    before = dict(store.proxy.methods)
    p = run_cli("--model", "tiny", "--task", "segment", "--image-size", "32", "--steps", "3", "--warmup", "1",
                "--batch-size", "4", "--val-steps", "1", "--profile", "", "--no-pictures", "--data-root", URL,
                "--s3-endpoint", store.proxy.endpoint, "--stack", "workers=2,ddp=2", "--run-name", "shards",
                cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-2000:]
    rows = stage_rows(tmp_path, "shards")
    assert [r["status"] for r in rows] == ["ok", "ok", "ok"], [r.get("error") for r in rows]
    assert rows[-1]["world_size"] == 2 and rows[-1]["throughput"] > 0
    methods = {m: n - before.get(m, 0) for m, n in store.proxy.methods.items() if n - before.get(m, 0)}
    assert set(methods) == {"GET"}, methods  # the study read, and never wrote to the bucket
    assert not list(tmp_path.rglob("*.jpg")) and not list(tmp_path.rglob("*.tar"))
    assert SECRET not in p.stdout + p.stderr
