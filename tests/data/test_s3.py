"""S3 datasets against a real S3-protocol server on 127.0.0.1 (moto's standalone server, over HTTP):
upload with prepare.sh, read streaming and through the cache (the same items as the local readers),
studies reading from S3 with DataLoader workers, errors as one line and exit 2, no secret anywhere."""
from __future__ import annotations

import gzip
import multiprocessing as mp
import os
import pickle
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

from study.core.config import ConfigError, RunConfig
from study.core import catalog
from study.data import open_datasets, s3
from tests.s3_server import ACCESS_KEY, BUCKET, CLEARED, SECRET, LoopbackS3, aws_env, closed_port
from tests.util import records, run_cli, stage_rows

REPO = Path(__file__).resolve().parents[2]
PREFIX = "synth"
URL = f"s3://{BUCKET}/{PREFIX}"
TASKS = {d.name: d.task for d in catalog.DATASETS}


class Server:
    def __init__(self, endpoint: str, env: dict[str, str]) -> None:
        self.endpoint, self.env = endpoint, env

    def client(self):
        return s3.make_client(self.endpoint)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    """The loopback server with one empty bucket; test credentials in os.environ for this module."""
    env = aws_env(tmp_path_factory.mktemp("aws"))
    with pytest.MonkeyPatch.context() as mpatch:
        for name in CLEARED:
            mpatch.delenv(name, raising=False)
        for k, v in env.items():
            mpatch.setenv(k, v)
        srv = LoopbackS3().start()
        try:
            s3.make_client(srv.endpoint).create_bucket(Bucket=BUCKET)
            yield Server(srv.endpoint, env)
        finally:
            srv.stop()


@pytest.fixture(scope="module")
def uploaded(server: Server, synthetic_root: Path) -> subprocess.CompletedProcess:
    """``prepare.sh --upload`` of the synthetic sets, run as a user runs it."""
    p = subprocess.run(["bash", str(REPO / "prepare.sh"), "--root", str(synthetic_root), "--upload", URL,
                        "--s3-endpoint", server.endpoint], capture_output=True, text=True, timeout=120,
                       stdin=subprocess.DEVNULL)
    assert p.returncode == 0, p.stderr
    assert_no_secret(p)
    return p


def assert_no_secret(proc: subprocess.CompletedProcess | None = None, *folders: Path) -> None:
    """Neither the secret key nor the access key id in the output or in any file (gzip opened)."""
    texts = [proc.stdout, proc.stderr] if proc is not None else []
    for text in texts:
        assert SECRET not in text and ACCESS_KEY not in text
    for folder in folders:
        for path in folder.rglob("*"):
            if path.is_file():
                data = path.read_bytes()
                if path.suffix == ".gz":
                    data = gzip.decompress(data)
                assert SECRET.encode() not in data and ACCESS_KEY.encode() not in data, path


def s3_cfg(server: Server, dataset: str, **kw) -> RunConfig:
    return RunConfig(task=TASKS[dataset], dataset=dataset, data_root=URL, s3_endpoint=server.endpoint, **kw)


# --- upload ---------------------------------------------------------------------------------------
def test_upload_mirrors_the_native_layout(server: Server, uploaded, synthetic_root: Path,
                                         capsys: pytest.CaptureFixture) -> None:
    from study.data.prepare import main as prepare

    local = {p.relative_to(synthetic_root).as_posix(): p.stat().st_size
             for p in synthetic_root.rglob("*") if p.is_file() and not p.name.startswith(".")}
    listing = s3.list_objects(server.client(), BUCKET, PREFIX + "/")
    remote = {k[len(PREFIX) + 1:]: o.size for k, o in listing.items()}
    assert remote == local
    assert "cifar-10-batches-py/data_batch_1" in remote and "imagenet/train/" in "".join(remote)
    assert f"{len(local)} of {len(local)} files uploaded" in uploaded.stdout
    assert "uploaded" in uploaded.stdout and "files" in uploaded.stderr  # summary; the rich bar's last frame
    capsys.readouterr()
    assert prepare(["--root", str(synthetic_root), "--upload", URL, "--s3-endpoint", server.endpoint]) == 0
    assert f"0 of {len(local)} files uploaded" in capsys.readouterr().out  # unchanged content is not sent again


def test_upload_to_a_missing_bucket_is_one_line(server: Server, synthetic_root: Path,
                                                capsys: pytest.CaptureFixture) -> None:
    """In this process (prepare.sh itself ran as a process in the upload fixture): exit 2, one line
    naming the bucket, the secret nowhere."""
    from study.data.prepare import main as prepare

    capsys.readouterr()
    assert prepare(["--root", str(synthetic_root), "--upload", "s3://no-such-bucket/x", "--s3-endpoint",
                    server.endpoint]) == 2
    out, err = capsys.readouterr()
    assert err.strip().count("\n") == 0 and "no-such-bucket" in err
    assert SECRET not in out + err and ACCESS_KEY not in out + err


# --- reading: the same items as the local readers --------------------------------------------------
@pytest.mark.parametrize("dataset", list(TASKS))
@pytest.mark.parametrize("cached", [False, True], ids=["stream", "cache"])
def test_s3_items_equal_local_items(server: Server, uploaded, synthetic_root: Path, tmp_path: Path,
                                    dataset: str, cached: bool) -> None:
    kw = dict(image_size=48, s3_cache=str(tmp_path / "cache") if cached else "")
    remote = open_datasets(s3_cfg(server, dataset, **kw))
    local = open_datasets(RunConfig(task=TASKS[dataset], dataset=dataset, data_root=str(synthetic_root),
                                    image_size=48))
    assert (len(remote.train), len(remote.val)) == (len(local.train), len(local.val))
    assert remote.classes == local.classes and remote.num_classes == local.num_classes
    assert [(r.split, r.count) for r in remote.loads] == [(r.split, r.count) for r in local.loads]
    assert all(r.seconds > 0 and r.start > 1e9 for r in remote.loads)
    for i in (0, len(local.val) - 1):  # validation transforms are deterministic
        (x, y), (lx, ly) = remote.val[i], local.val[i]
        assert torch.equal(x, lx) and torch.equal(torch.as_tensor(y), torch.as_tensor(ly))
    torch.manual_seed(0)
    x, y = remote.train[5]
    torch.manual_seed(0)
    lx, ly = local.train[5]
    assert torch.equal(x, lx) and torch.equal(torch.as_tensor(y), torch.as_tensor(ly))
    if cached:
        files = [p for p in (tmp_path / "cache" / BUCKET / PREFIX).rglob("*") if p.is_file()]
        assert files and all(p.resolve().is_relative_to((tmp_path / "cache").resolve()) for p in files)
        before = {p: p.stat().st_mtime_ns for p in files}
        open_datasets(s3_cfg(server, dataset, **kw))  # second open: nothing downloaded again
        assert {p: p.stat().st_mtime_ns for p in files} == before


def test_changed_object_is_downloaded_again(server: Server, uploaded, tmp_path: Path) -> None:
    cfg = s3_cfg(server, "cifar10", s3_cache=str(tmp_path / "c"))
    open_datasets(cfg)
    readme = tmp_path / "c" / BUCKET / PREFIX / "cifar-10-batches-py" / "readme.html"
    client = server.client()
    key = f"{PREFIX}/cifar-10-batches-py/readme.html"
    original = client.get_object(Bucket=BUCKET, Key=key)["Body"].read()
    time.sleep(1.1)  # LastModified has a resolution of one second
    client.put_object(Bucket=BUCKET, Key=key, Body=b"x" * len(original))  # same size, new content
    try:
        open_datasets(cfg)
        assert readme.read_bytes() == b"x" * len(original)
    finally:
        client.put_object(Bucket=BUCKET, Key=key, Body=original)


def test_streaming_datasets_pickle_without_a_client(server: Server, uploaded) -> None:
    b = open_datasets(s3_cfg(server, "oxford-pets", image_size=32))
    blob = pickle.dumps(b.train)
    assert len(blob) < 50_000 and b"botocore" not in blob and SECRET.encode() not in blob
    x, y = pickle.loads(blob)[0]
    assert x.shape == (3, 32, 32) and y.shape == (32, 32)


def _clients_in_child(endpoint: str, q) -> None:
    q.put((s3.client_count(), os.getpid(), id(s3.client_for(endpoint))))


class _WhoReads(torch.utils.data.Dataset):
    def __init__(self, inner, endpoint: str) -> None:
        self.inner, self.endpoint = inner, endpoint

    def __len__(self) -> int:
        return 8

    def __getitem__(self, i: int):
        self.inner[i]  # a real per-item fetch in this worker
        return torch.tensor([os.getpid(), id(s3.client_for(self.endpoint))])


def test_one_client_per_worker_process(server: Server, uploaded) -> None:
    parent = s3.client_for(server.endpoint)
    q = mp.get_context("fork").Queue()
    child = mp.get_context("fork").Process(target=_clients_in_child, args=(server.endpoint, q))
    child.start()
    inherited, pid, _ = q.get(timeout=30)
    child.join(30)
    assert inherited == 0 and pid != os.getpid()  # a forked child starts without its parent's clients
    b = open_datasets(s3_cfg(server, "oxford-pets", image_size=32))
    rows = torch.cat(list(DataLoader(_WhoReads(b.train, server.endpoint), batch_size=2, num_workers=2)))
    pids = {int(r[0]) for r in rows}
    assert len(pids) == 2 and os.getpid() not in pids
    assert s3.client_for(server.endpoint) is parent  # the parent's own client is untouched


# --- cache keys -----------------------------------------------------------------------------------
@pytest.mark.parametrize("key", ["/etc/passwd", "../escape", "p/../../escape", "p/./x", "p//x", "", "p/x/..",
                                 "..", "p\\..\\..\\x", "C:/x", "p/\x00x"])
def test_cache_rejects_keys_that_leave_the_cache(tmp_path: Path, key: str) -> None:
    with pytest.raises(ConfigError, match="outside the cache"):
        s3.cache_path(tmp_path, BUCKET, key)


def test_cache_rejects_keys_resolving_through_links(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (tmp_path / "cache" / BUCKET).mkdir(parents=True)
    (tmp_path / "cache" / BUCKET / "link").symlink_to(outside, target_is_directory=True)
    with pytest.raises(ConfigError, match="outside the cache"):
        s3.cache_path(tmp_path / "cache", BUCKET, "link/file")
    with pytest.raises(ConfigError, match="outside the cache"):
        s3.cache_path(tmp_path / "cache", "../x", "file")
    good = s3.cache_path(tmp_path / "cache", BUCKET, "p/cifar-10-batches-py/data_batch_1")
    assert good == (tmp_path / "cache" / BUCKET / "p" / "cifar-10-batches-py" / "data_batch_1").resolve()


def test_sync_checks_every_key_before_writing(tmp_path: Path) -> None:
    listing = {"p/a": s3.ObjectInfo(1, 0.0), "p/../../evil": s3.ObjectInfo(1, 0.0)}
    with pytest.raises(ConfigError, match="outside the cache"):
        s3.sync_to_cache("http://127.0.0.1:1", BUCKET, listing, tmp_path)  # fails before any request
    assert not any(tmp_path.iterdir())


# --- errors ---------------------------------------------------------------------------------------
def test_urls_and_endpoints_are_validated() -> None:
    assert s3.parse_url("s3://bucket/a/b/") == s3.Location("bucket", "a/b")
    assert s3.parse_url("s3://bucket") == s3.Location("bucket", "")
    for bad in ("s3://", "s3://ab/x", "s3://bad bucket/x", "s3://bucket/../x", "http://bucket/x"):
        with pytest.raises(ConfigError):
            s3.parse_url(bad)
    with pytest.raises(ConfigError, match="must not carry credentials") as e:
        RunConfig(data_root=URL, s3_endpoint=f"http://{ACCESS_KEY}:{SECRET}@127.0.0.1:9000")
    assert SECRET not in str(e.value)
    with pytest.raises(ConfigError, match="needs an s3://"):
        RunConfig(data_root="data", s3_cache="/tmp/cache")
    assert s3.shown_endpoint("https://u:p@host.example:9000/path?q=1") == "https://host.example:9000"


def test_error_lines_are_built_from_codes_not_messages() -> None:
    from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError

    leaky = {"Error": {"Code": "SignatureDoesNotMatch", "Message": f"secret {SECRET}"},
             "ResponseMetadata": {"HTTPStatusCode": 403}}
    line = s3.describe(ClientError(leaky, "ListObjectsV2"), "listing s3://b/p/", "http://127.0.0.1:9")
    assert "access denied" in line and SECRET not in line and "\n" not in line
    assert "does not exist" in s3.describe(ClientError({"Error": {"Code": "NoSuchBucket"}}, "ListObjectsV2"),
                                           "listing", "", "bkt")
    assert "cannot reach" in s3.describe(EndpointConnectionError(endpoint_url="http://127.0.0.1:9"), "x", "")
    assert "no usable AWS credentials" in s3.describe(NoCredentialsError(), "x", "")


def _exits_2_in_one_line(tmp_path: Path, *args: str):
    """The CLI in this process (the S3 checks run in the parent, before any stage process; a real
    process refusing is test_bad_input's): exit 2, one line, no stage started, no secret anywhere."""
    import contextlib
    import io
    from types import SimpleNamespace

    from study.cli import main

    out, err = io.StringIO(), io.StringIO()
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(["--dry-run", "--model", "tiny", "--profile", "", *args])
    finally:
        os.chdir(cwd)
    p = SimpleNamespace(returncode=code, stdout=out.getvalue(), stderr=err.getvalue())
    assert p.returncode == 2, p.stderr
    assert "Traceback" not in p.stderr and len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert not list(tmp_path.rglob("stage.json")) and not list(tmp_path.rglob("results.jsonl"))  # refused up front
    assert_no_secret(p, tmp_path)
    return p


def test_missing_bucket_exits_2(server: Server, tmp_path: Path) -> None:
    p = _exits_2_in_one_line(tmp_path, "--data-root", "s3://no-such-bucket/x", "--s3-endpoint", server.endpoint)
    assert "bucket 'no-such-bucket' does not exist" in p.stderr


def test_missing_prefix_exits_2(server: Server, uploaded, tmp_path: Path) -> None:
    p = _exits_2_in_one_line(tmp_path, "--data-root", f"s3://{BUCKET}/nothing-here", "--s3-endpoint", server.endpoint)
    assert "no CIFAR-10 under" in p.stderr and "prepare.sh" in p.stderr


def test_dead_endpoint_exits_2(server: Server, tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{closed_port()}"
    p = _exits_2_in_one_line(tmp_path, "--data-root", URL, "--s3-endpoint", dead)
    assert "cannot reach the S3 endpoint" in p.stderr and dead in p.stderr


def test_endpoint_from_the_environment(server: Server, uploaded, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", server.endpoint)
    b = open_datasets(RunConfig(data_root=URL, dataset="cifar10"))
    assert len(b.val) == 500


# --- whole studies reading from S3 ----------------------------------------------------------------
# A few steps of the tiny model, no dry run: what is tested is the data path, and a dry run would add
# its sanity check and checkpoint round trips (processes and seconds that read no S3 object).
SMALL_STUDY = ("--model", "tiny", "--steps", "3", "--warmup", "1", "--batch-size", "8", "--subset", "64",
               "--val-subset", "16", "--val-steps", "1", "--profile", "", "--no-pictures")

def _check_load_records(tmp_path: Path, run: str, counts: tuple[int, int], stages: int) -> None:
    rows = stage_rows(tmp_path, run)
    assert len(rows) == stages and all(r["status"] == "ok" for r in rows), [r.get("error") for r in rows]
    assert all(0 <= r["data_wait_share"] <= 1 for r in rows)
    recs = records(tmp_path, run)
    for kind, n in zip(("10", "11"), counts):
        loads = [r for r in recs if r["type"] == kind]
        # one per stage (and repeat), plus the parent's preflight open (the cold one)
        assert len(loads) == stages + 1
        assert sum(r["stage"] == "_preflight" for r in loads) == 1
        assert all(float(r["duration"]) > 0 and float(r["loading"]) > 0 and int(r["value1"]) == n for r in loads)


@pytest.mark.slow
def test_study_streams_pets_from_s3_with_workers(server: Server, uploaded, tmp_path: Path) -> None:
    p = run_cli(*SMALL_STUDY, "--task", "segment", "--image-size", "32", "--data-root", URL,
                  "--s3-endpoint", server.endpoint, "--stack", "workers=2", "--run-name", "s3pets", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    _check_load_records(tmp_path, "s3pets", (120, 40), stages=2)
    assert not list(tmp_path.rglob("*.jpg"))  # streaming: no image ever written locally
    assert_no_secret(p, tmp_path)


@pytest.mark.slow
def test_study_reads_cifar_through_the_cache(server: Server, uploaded, tmp_path: Path) -> None:
    cache = tmp_path / "s3-cache"
    p = run_cli(*SMALL_STUDY, "--data-root", URL, "--s3-endpoint", server.endpoint, "--s3-cache", str(cache),
                "--run-name", "s3cifar", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    _check_load_records(tmp_path, "s3cifar", (2000, 500), stages=1)
    assert (cache / BUCKET / PREFIX / "cifar-10-batches-py" / "data_batch_5").is_file()
    assert_no_secret(p, tmp_path)


def test_unwritable_cache_is_one_line(server: Server, uploaded, tmp_path: Path) -> None:
    blocker = tmp_path / "file-not-folder"
    blocker.write_text("")
    with pytest.raises(ConfigError, match="cannot fill the S3 cache"):
        open_datasets(s3_cfg(server, "cifar10", s3_cache=str(blocker / "cache")))


def test_silent_endpoint_fails_in_one_line_within_a_minute(server: Server, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """A loopback port that accepts connections but never answers: the probe's read timeout and retry
    cap end it with one line instead of a hang. The probe's client is the one the code builds (botocore
    holds its timeouts and retry cap: at worst attempts × (connect + read), inside a minute); its read
    timeout is then cut to 1 s, and the silent port counts one connection per attempt, no more."""
    import socket
    import threading

    from study.data.s3 import client

    built = []
    make = client.make_client
    monkeypatch.setattr(client, "make_client", lambda *a, **kw: built.append(make(*a, **kw)) or built[-1])
    real = make("http://127.0.0.1:1", probe=True).meta.config
    attempts = real.retries["total_max_attempts"]
    assert attempts * (real.connect_timeout + real.read_timeout) < 60
    monkeypatch.setattr(client, "PROBE_READ_TIMEOUT", 1)
    accepted: list[socket.socket] = []
    done = threading.Event()
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        silent.settimeout(0.1)

        def accept_and_say_nothing() -> None:
            while not done.is_set():
                try:
                    accepted.append(silent.accept()[0])
                except (TimeoutError, OSError):
                    pass

        listener = threading.Thread(target=accept_and_say_nothing, daemon=True)
        listener.start()
        endpoint = f"http://127.0.0.1:{silent.getsockname()[1]}"
        try:
            with pytest.raises(ConfigError) as e:
                open_datasets(RunConfig(data_root=URL, s3_endpoint=endpoint))
        finally:
            done.set()
            listener.join()
            for conn in accepted:
                conn.close()
    assert len(accepted) == attempts, accepted  # the retry cap: no attempt beyond it
    assert any(c.meta.config.read_timeout == 1 and c.meta.config.retries["total_max_attempts"] == attempts
               for c in built)  # the probe's own client asked the silent port
    assert "\n" not in str(e.value) and SECRET not in str(e.value)
    assert endpoint in str(e.value) and "ReadTimeout" in str(e.value)  # where, and that it went silent


def test_imagenet_class_names_travel_to_the_bucket(server: Server, tmp_path: Path) -> None:
    """The LOC_synset_mapping.txt that prepare.sh --imagenet copies beside the links names the classes
    when they are streamed from a bucket too."""
    from study.data.prepare import main as prepare
    from study.data.synthetic import write_imagefolder

    root = tmp_path / "data"
    write_imagefolder(root, n_classes=2, n_train_per_class=2, n_val_per_class=1)
    (root / "imagenet" / "LOC_synset_mapping.txt").write_text("n00000001 tench, Tinca tinca\nn00000002 goldfish\n")
    assert prepare(["--root", str(root), "--upload", f"s3://{BUCKET}/named", "--s3-endpoint", server.endpoint]) == 0
    cfg = RunConfig(dataset="imagefolder", data_root=f"s3://{BUCKET}/named", s3_endpoint=server.endpoint)
    local = open_datasets(RunConfig(dataset="imagefolder", data_root=str(root)))
    assert open_datasets(cfg).classes == local.classes == ["n00000001 tench", "n00000002 goldfish"]
