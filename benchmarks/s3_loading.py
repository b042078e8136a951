"""Data-only throughput: the training DataLoader read from local disk vs S3 (streaming and cached).

    .venv/bin/python benchmarks/s3_loading.py                       # pets + cifar, workers 0,1,2,4
    .venv/bin/python benchmarks/s3_loading.py --datasets oxford-pets --workers 0,2 --batches 30

No model: each case iterates the train loader for --batches batches (after one untimed batch that
covers worker start-up) and reports samples/s, the median of --repeats runs. The three sources are
measured side by side for every worker count, in rotating order, in one process:

* local    the synthetic files on disk, the local readers;
* stream   the same files as objects on a loopback S3 server, fetched per item (CIFAR: per split);
* cache    --s3-cache: downloaded once into a cache folder, then the local readers.

The S3 server is moto's standalone server in its own process on 127.0.0.1 (started and stopped here,
with throwaway credentials; nothing leaves the machine). It shares this machine's CPU cores with the
loader, and loopback has none of a real network's latency, so the stream figures are the cost of the
S3 protocol and client (request signing, HTTP, one GET per object), not of a remote store's round
trips; against a real store, per-object latency makes streaming slower and more workers more useful.

Open ("load") times are the LoadRecords a study writes as seed types 10/11: for the cache, the first
open (cold: downloads) and the second (warm: listing and size/mtime checks only).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402
from torch.utils.data import DataLoader, RandomSampler  # noqa: E402

from study.config import RunConfig  # noqa: E402
from study import catalog
from study.data import open_datasets, s3, synthetic  # noqa: E402

TASKS = {d.name: d.task for d in catalog.DATASETS}
BUCKET, PREFIX = "bench-data", "synthetic"
# Enough batches for about a second per case: CIFAR items are tiny, Pets items are two objects each.
DEFAULT_BATCHES = {"cifar10": 150, "oxford-pets": 15, "imagefolder": 30}
# Throwaway credentials for the loopback server; anything from the caller's AWS setup is dropped.
AWS_ENV = {"AWS_ACCESS_KEY_ID": "BENCHACCESSKEY", "AWS_SECRET_ACCESS_KEY": "bench-only-secret",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true",
           "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull}
AWS_CLEARED = ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3")


class MotoProcess:
    """`python -m moto.server` on a loopback port, in its own process (not a thread of this one: a
    server thread would take the GIL from the workers=0 loader it is being measured against)."""

    def __init__(self) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> "MotoProcess":
        self.proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError("moto server exited at start-up")
                time.sleep(0.1)
        raise RuntimeError("moto server did not start within 30 s")

    def __exit__(self, *exc: Any) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def measure(train: Any, batch_size: int, workers: int, batches: int, seed: int) -> float:
    """Samples/s of `batches` batches of the train loader (sampling with replacement, so small sets
    still give enough batches), after one untimed batch."""
    g = torch.Generator().manual_seed(seed)
    sampler = RandomSampler(train, replacement=True, num_samples=batch_size * (batches + 1), generator=g)
    kw: dict[str, Any] = dict(batch_size=batch_size, sampler=sampler, drop_last=True, num_workers=workers)
    if workers:
        kw["prefetch_factor"] = 2
    it = iter(DataLoader(train, **kw))
    next(it)
    n, t0 = 0, time.perf_counter()
    for x, _ in it:
        n += int(x.shape[0])
    seconds = time.perf_counter() - t0
    del it
    return n / seconds


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0], epilog="\n".join(__doc__.split("\n")[2:]),
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", default="oxford-pets,cifar10", help=f"comma list of {', '.join(TASKS)}")
    ap.add_argument("--workers", default="0,1,2,4", help="comma list of DataLoader worker counts")
    ap.add_argument("--batches", type=int, default=0, help="timed batches per case (0: per dataset, "
                    f"{DEFAULT_BATCHES})")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3, help="runs per case; the median is shown")
    ap.add_argument("--image-size", type=int, default=0, help="0: each dataset's default")
    ap.add_argument("--pets-images", type=int, default=400, help="synthetic Pets trainval images")
    ap.add_argument("--pets-size", type=int, default=320, help="synthetic Pets image side (real ones: ~500x375)")
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads of this process, which does the "
                    "loading when workers=0 (0: torch's default; workers always run 1)")
    ap.add_argument("--json", metavar="FILE", help="also write every figure to FILE")
    args = ap.parse_args(argv)
    datasets = [d.strip() for d in args.datasets.split(",") if d.strip()]
    counts = [int(w) for w in args.workers.split(",")]

    if args.threads:
        torch.set_num_threads(args.threads)
    for name in AWS_CLEARED:
        os.environ.pop(name, None)
    os.environ.update(AWS_ENV)

    from rich.console import Console
    from rich.table import Table

    console = Console(width=max(Console().width, 120))
    work = Path(tempfile.mkdtemp(prefix="s3-loading-"))
    results: dict[str, Any] = {"cpu_count": os.cpu_count(), "batch_size": args.batch_size,
                               "torch_threads": torch.get_num_threads(), "load_average": os.getloadavg(),
                               "repeats": args.repeats, "loads": [], "throughput": []}
    try:
        root = work / "data"
        synthetic.write_cifar(root)
        synthetic.write_pets(root, n_trainval=args.pets_images, n_test=40, size=args.pets_size)
        synthetic.write_imagefolder(root)
        with MotoProcess() as server:
            s3.make_client(server.endpoint).create_bucket(Bucket=BUCKET)
            t0 = time.perf_counter()
            s3.upload(str(root), f"s3://{BUCKET}/{PREFIX}", server.endpoint)
            console.print(f"uploaded to the loopback server in {time.perf_counter() - t0:.1f} s\n")
            for ds in datasets:
                base = dict(task=TASKS[ds], dataset=ds, image_size=args.image_size, batch_size=args.batch_size)
                cfgs = {
                    "local": RunConfig(data_root=str(root), **base),
                    "stream": RunConfig(data_root=f"s3://{BUCKET}/{PREFIX}", s3_endpoint=server.endpoint, **base),
                    "cache": RunConfig(data_root=f"s3://{BUCKET}/{PREFIX}", s3_endpoint=server.endpoint,
                                       s3_cache=str(work / f"cache-{ds}"), **base),
                }
                bundles = {}
                for mode, cfg in cfgs.items():
                    bundles[mode] = open_datasets(cfg)
                    results["loads"].append({"dataset": ds, "mode": mode + (" (cold)" if mode == "cache" else ""),
                                             **{r.split: r.seconds for r in bundles[mode].loads}})
                    if mode == "cache":
                        warm = open_datasets(cfg)
                        results["loads"].append({"dataset": ds, "mode": "cache (warm)",
                                                 **{r.split: r.seconds for r in warm.loads}})
                modes = list(cfgs)
                batches = args.batches or DEFAULT_BATCHES[ds]
                for w in counts:
                    runs: dict[str, list[float]] = {m: [] for m in modes}
                    for r in range(args.repeats):
                        for m in modes[r % len(modes):] + modes[:r % len(modes)]:  # rotate the order
                            runs[m].append(measure(bundles[m].train, args.batch_size, w, batches, seed=r))
                    row = {"dataset": ds, "workers": w, "batches": batches, **{m: statistics.median(v) for m, v in runs.items()},
                           "runs": runs}
                    results["throughput"].append(row)
                    console.print(f"{ds} workers={w}: " + ", ".join(f"{m} {row[m]:.0f}/s" for m in modes))
    finally:
        shutil.rmtree(work, ignore_errors=True)

    loads = Table(title="open times (LoadRecords, seed types 10/11), seconds")
    for c in ("dataset", "source", "train (10)", "val (11)"):
        loads.add_column(c, justify="right" if "(" in c else "left")
    for r in results["loads"]:
        loads.add_row(r["dataset"], r["mode"], f"{r['train']:.3f}", f"{r['val']:.3f}")
    table = Table(title=f"train DataLoader, data only: samples/s (median of {args.repeats} runs; batches of "
                        f"{args.batch_size}; {torch.get_num_threads()} torch threads at workers=0; {os.cpu_count()} CPU cores "
                        f"shared with the S3 server; load average at start {results['load_average'][0]:.1f})")
    for c in ("dataset", "batches", "workers", "local", "S3 stream", "stream / local", "S3 cache", "cache / local"):
        table.add_column(c, justify="left" if c == "dataset" else "right")
    for r in results["throughput"]:
        table.add_row(r["dataset"], str(r["batches"]), str(r["workers"]), f"{r['local']:.0f}", f"{r['stream']:.0f}",
                      f"{r['stream'] / r['local']:.2f}x", f"{r['cache']:.0f}", f"{r['cache'] / r['local']:.2f}x")
    console.print()
    console.print(loads)
    console.print(table)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
