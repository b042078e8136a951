"""The data-loading study: local disk against S3 per sample, S3 shards and the S3 cache, by workers.

    .venv/bin/python benchmarks/s3_loading.py                       # loopback S3 behind a 20 ms proxy
    .venv/bin/python benchmarks/s3_loading.py --delay-ms 0 --datasets cifar10 --workers 0,2
    .venv/bin/python benchmarks/s3_loading.py --studies 3           # + Pets studies, local vs shards
    .venv/bin/python benchmarks/s3_loading.py --data-root data --s3 s3://BUCKET/PREFIX   # your data, your store

No model: each case iterates the training DataLoader for --batches batches (after one untimed batch
that covers worker start-up; epochs chained, workers persistent) and reports samples/s, the median of
--repeats runs. For every worker count the sources are measured side by side, in an order rotated
each repeat, in one process:

* local    the files on disk, the local readers;
* sample   the same files as objects, one GET per file (Pets: image and trimap; CIFAR: per batch file);
* shards   WebDataset tar shards (prepare.sh --upload --shards), read in order, ranged GETs;
* cache    --s3-cache: the objects downloaded once into a cache folder, then the local readers.

By default the store is moto's standalone server in its own process on 127.0.0.1 with throwaway
credentials, the synthetic sets uploaded to it both ways, and in front of it a proxy in its own
process (benchmarks/latency_proxy.py) that delays every request by --delay-ms, as a distant store's
first-byte latency does; nothing leaves the machine. With --s3 the store is yours: the data under
--data-root must have been uploaded there with ./prepare.sh --upload URL and --upload URL --shards,
the endpoint and credentials come from --s3-endpoint and the standard AWS chain, and nothing is
written to the bucket. --studies N adds N rounds of a whole Pets study (tiny model, --stack
workers=2) read from local disk and from the shards, alternating which goes first; its ratio is
the workers=2 stage's samples/s, shards over local, median of the rounds.

Open ("load") times are the LoadRecords a study writes as seed types 10/11: for the cache, the first
open (cold: downloads) and the second (warm: listing and size/mtime checks only).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
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
from torch.utils.data import DataLoader  # noqa: E402

from benchmarks.latency_proxy import HOST  # noqa: E402
from study.core import catalog  # noqa: E402
from study.core.config import RunConfig  # noqa: E402
from study.data import open_datasets, s3, synthetic  # noqa: E402
from study.data.bundle import open_bundle  # noqa: E402
from study.data.s3.datasets import STREAM_OPENERS  # noqa: E402
from study.data.s3.shards import shard_loader  # noqa: E402

TASKS = {d.name: d.task for d in catalog.DATASETS}
BUCKET, PREFIX = "bench-data", "synthetic"
SOURCES = ("local", "sample", "shards", "cache")
# About one epoch of the synthetic training sets: CIFAR items are tiny, Pets items are two files each.
DEFAULT_BATCHES = {"cifar10": 60, "oxford-pets": 12, "imagefolder": 2, "cifar100": 60, "cub200": 2}
# Throwaway credentials for the loopback server; anything from the caller's AWS setup is dropped.
AWS_ENV = {"AWS_ACCESS_KEY_ID": "BENCHACCESSKEY", "AWS_SECRET_ACCESS_KEY": "bench-only-secret",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true",
           "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull}
AWS_CLEARED = ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3")


class Served:
    """A process on 127.0.0.1 that prints or is given its port: moto's server, then the delay proxy.
    Their own processes, not threads of this one: a server thread would take the GIL from the
    workers=0 loader it is measured against."""

    def __init__(self, argv: list[str], port: int = 0) -> None:
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     stdin=subprocess.DEVNULL, text=True)
        self.port = port or int(self.proc.stdout.readline())  # type: ignore[union-attr]
        self.endpoint = f"http://{HOST}:{self.port}"
        import socket

        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with socket.create_connection((HOST, self.port), timeout=0.5):
                    return
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"{argv[2]} exited at start-up")
                time.sleep(0.1)
        raise RuntimeError(f"{argv[2]} did not start within 30 s")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def measure(train: Any, batch_size: int, workers: int, batches: int, seed: int) -> float:
    """Samples/s over ``batches`` batches of the training loader as a stage builds it, after one
    untimed batch; epochs are chained where the set is shorter."""
    stream = hasattr(train, "for_loader")
    kw: dict[str, Any] = dict(batch_size=batch_size, drop_last=True, num_workers=workers,
                              generator=torch.Generator().manual_seed(seed))
    if workers:
        kw.update(prefetch_factor=2, persistent_workers=True)
    loader = DataLoader(train.for_loader(0, 1, batch_size, True) if stream else train, shuffle=not stream, **kw)

    def forever():
        while True:
            yield from loader

    it = forever()
    next(it)
    n, t0 = 0, time.perf_counter()
    for _ in range(batches):
        n += int(next(it)[0].shape[0])
    seconds = time.perf_counter() - t0
    del it, loader
    return n / seconds


def open_sources(ds: str, root: Path, url: str, endpoint: str, cache: Path, size: int, batch: int,
                 loads: list[dict]) -> dict[str, Any]:
    """The training set of each source; the open times go to ``loads``."""
    base = dict(task=TASKS[ds], dataset=ds, image_size=size, batch_size=batch)
    remote = RunConfig(data_root=url, s3_endpoint=endpoint, **base)
    loc, size = s3.parse_url(url), size or catalog.get(ds).default_size
    opened = {
        "local": lambda: open_datasets(RunConfig(data_root=str(root), **base)),
        "sample": lambda: open_bundle(remote, lambda train: STREAM_OPENERS[ds](loc, endpoint, train, size)),
        "shards": lambda: open_bundle(remote, shard_loader(remote, loc, endpoint)),
        "cache": lambda: open_datasets(remote.replace(s3_cache=str(cache))),
    }
    out = {}
    for source, open_ in opened.items():
        bundle = open_()
        out[source] = bundle.train
        loads.append({"dataset": ds, "source": source + (" (cold)" if source == "cache" else ""),
                      **{r.split: r.seconds for r in bundle.loads}})
        if source == "cache":
            loads.append({"dataset": ds, "source": "cache (warm)", **{r.split: r.seconds for r in open_().loads}})
    return out


def study_rounds(rounds: int, root: Path, url: str, endpoint: str, work: Path, args: argparse.Namespace) -> list[dict]:
    """Whole Pets studies (--stack workers=2) from local disk and from the shards, alternating."""
    common = ["--model", "tiny", "--task", "segment", "--dataset", "oxford-pets", "--stack", "workers=2",
              "--epochs", str(args.study_epochs), "--warmup", "3", "--batch-size", str(args.batch_size),
              "--image-size", str(args.study_image_size), "--val-steps", "1", "--profile", "", "--no-pictures"]
    sources = {"local": ["--data-root", str(root)], "shards": ["--data-root", url, "--s3-endpoint", endpoint]}
    # The benchmark alternates rounds itself; a stage timed again while the machine is busy would only
    # stretch the rounds.
    env = {**os.environ, "PYTHONPATH": str(REPO), "STUDY_BUSY_RETRIES": "0", "COLUMNS": "200"}
    out = []
    for r in range(rounds):
        row: dict[str, Any] = {"round": r}
        for source in (list(sources) if r % 2 == 0 else list(sources)[::-1]):
            run, t0 = f"{source}-{r}", time.perf_counter()
            p = subprocess.run([sys.executable, "-m", "study", *common, *sources[source], "--run-name", run], cwd=work,
                               env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=1800)
            if p.returncode != 0:
                raise RuntimeError(f"the {source} study failed: {p.stderr.strip().splitlines()[-1:]}")
            rows = [json.loads(x) for x in (work / "reports" / run / "results.jsonl").read_text().splitlines()]
            stage = next(x for x in rows if x["kind"] == "stage" and x["stage"] == 1)
            row[source] = stage["throughput"]
            row[source + "_data_wait"] = stage.get("data_wait_share")
            row[source + "_seconds"] = time.perf_counter() - t0
        out.append(row)
        print(f"study round {r}: local {row['local']:.1f}/s, shards {row['shards']:.1f}/s "
              f"({row['shards'] / row['local']:.2f}x; studies of {row['local_seconds']:.0f} s and "
              f"{row['shards_seconds']:.0f} s)", flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0], epilog="\n".join(__doc__.split("\n")[2:]),
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", default="oxford-pets,cifar10", help=f"comma list of {', '.join(TASKS)}")
    ap.add_argument("--workers", default="0,2,4", help="comma list of DataLoader worker counts")
    ap.add_argument("--sources", default=",".join(SOURCES), help=f"comma list of {', '.join(SOURCES)}")
    ap.add_argument("--delay-ms", type=float, default=20.0, help="delay the proxy adds to every request of the "
                    "loopback store (0: no proxy)")
    ap.add_argument("--batches", type=int, default=0, help=f"timed batches per case (0: per dataset, "
                    f"{DEFAULT_BATCHES})")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3, help="runs per case; the median is shown")
    ap.add_argument("--image-size", type=int, default=0, help="0: each dataset's default")
    ap.add_argument("--pets-images", type=int, default=400, help="synthetic Pets trainval images")
    ap.add_argument("--pets-size", type=int, default=320, help="synthetic Pets image side (real ones: ~500x375)")
    ap.add_argument("--shard-size", type=float, default=100, help="MB per shard written to the loopback store")
    ap.add_argument("--data-root", help="your data (already uploaded to --s3 both ways) instead of synthetic sets")
    ap.add_argument("--s3", metavar="URL", help="your store's s3://bucket/prefix instead of the loopback server")
    ap.add_argument("--s3-endpoint", default="", help="with --s3: an S3-compatible endpoint (default: "
                    "$AWS_ENDPOINT_URL)")
    ap.add_argument("--studies", type=int, default=0, help="rounds of whole Pets studies, local vs shards")
    ap.add_argument("--study-epochs", type=int, default=2, help="epochs of each study (whole ones: the stream's "
                    "epoch start, first pieces fetched, is part of what is measured)")
    ap.add_argument("--study-image-size", type=int, default=128)
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads of this process, which does the "
                    "loading when workers=0 (0: torch's default; workers always run 1)")
    ap.add_argument("--json", metavar="FILE", help="also write every figure to FILE")
    args = ap.parse_args(argv)
    datasets = [d.strip() for d in args.datasets.split(",") if d.strip()]
    sources = [s.strip() for s in args.sources.split(",") if s.strip()]
    counts = [int(w) for w in args.workers.split(",")]
    if bool(args.s3) != bool(args.data_root):
        ap.error("--s3 and --data-root go together (your data as uploaded to your store)")
    if args.threads:
        torch.set_num_threads(args.threads)
    if not args.s3:
        for name in AWS_CLEARED:
            os.environ.pop(name, None)
        os.environ.update(AWS_ENV)

    from rich.console import Console

    console = Console(width=max(Console().width, 120))
    work = Path(tempfile.mkdtemp(prefix="s3-loading-"))
    results: dict[str, Any] = {"cpu_count": os.cpu_count(), "batch_size": args.batch_size, "delay_ms": args.delay_ms,
                               "torch_threads": torch.get_num_threads(), "load_average": os.getloadavg(),
                               "repeats": args.repeats, "loads": [], "throughput": [], "studies": []}
    servers: list[Served] = []
    try:
        if args.s3:
            root, url, endpoint = Path(args.data_root), args.s3, s3.resolve_endpoint(args.s3_endpoint)
            results["delay_ms"] = None
        else:
            root, url = work / "data", f"s3://{BUCKET}/{PREFIX}"
            synthetic.write_cifar(root)
            synthetic.write_pets(root, n_trainval=args.pets_images, n_test=40, size=args.pets_size)
            port = free_port()
            servers.append(Served([sys.executable, "-m", "moto.server", "-H", HOST, "-p", str(port)], port))
            endpoint = servers[0].endpoint
            s3.make_client(endpoint).create_bucket(Bucket=BUCKET)
            from study.data.s3.shard_write import upload_shards

            s3.upload(str(root), url, endpoint)
            upload_shards(str(root), url, endpoint, args.shard_size, console.print)
            if args.delay_ms:  # the uploads went direct; every read goes through the delay
                servers.append(Served([sys.executable, str(REPO / "benchmarks" / "latency_proxy.py"), "--target-port",
                                       str(port), "--delay-ms", str(args.delay_ms)]))
                endpoint = servers[-1].endpoint
        for ds in datasets:
            trains = open_sources(ds, root, url, endpoint, work / f"cache-{ds}", args.image_size, args.batch_size,
                                  results["loads"])
            batches = args.batches or DEFAULT_BATCHES[ds]
            for w in counts:
                runs: dict[str, list[float]] = {s: [] for s in sources}
                for r in range(args.repeats):
                    for s in sources[r % len(sources):] + sources[:r % len(sources)]:  # rotate the order
                        runs[s].append(measure(trains[s], args.batch_size, w, batches, seed=r))
                row = {"dataset": ds, "workers": w, "batches": batches,
                       **{s: statistics.median(v) for s, v in runs.items()}, "runs": runs}
                results["throughput"].append(row)
                console.print(f"{ds} workers={w}: " + ", ".join(f"{s} {row[s]:.0f}/s" for s in sources))
        if args.studies:
            results["studies"] = study_rounds(args.studies, root, url, endpoint, work, args)
    finally:
        for server in reversed(servers):
            server.stop()
        shutil.rmtree(work, ignore_errors=True)
    print_tables(console, results, sources, args)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


def print_tables(console: Any, results: dict, sources: list[str], args: argparse.Namespace) -> None:
    from rich.table import Table

    where = "your store" if results["delay_ms"] is None else \
        f"a loopback S3 server behind a {results['delay_ms']:g} ms delay per request"
    loads = Table(title="open times (LoadRecords, seed types 10/11), seconds")
    for c in ("dataset", "source", "train (10)", "val (11)"):
        loads.add_column(c, justify="right" if "(" in c else "left")
    for r in results["loads"]:
        loads.add_row(r["dataset"], r["source"], f"{r['train']:.3f}", f"{r['val']:.3f}")
    table = Table(title=f"train DataLoader, data only, from {where}: samples/s (median of {args.repeats} runs; batches "
                        f"of {args.batch_size}; {results['torch_threads']} torch threads at workers=0; "
                        f"{results['cpu_count']} CPU cores; load average at start {results['load_average'][0]:.1f})")
    table.add_column("dataset")
    for c in ("batches", "workers", *(f"{s}{'' if s == 'local' else ' (x local)'}" for s in sources)):
        table.add_column(c, justify="right")
    for r in results["throughput"]:
        cells = [f"{r[s]:.0f}" if s == "local" or "local" not in r else f"{r[s]:.0f} ({r[s] / r['local']:.2f}x)"
                 for s in sources]
        table.add_row(r["dataset"], str(r["batches"]), str(r["workers"]), *cells)
    console.print()
    console.print(loads)
    console.print(table)
    if results["studies"]:
        ratios = [r["shards"] / r["local"] for r in results["studies"]]
        console.print(f"Pets study (tiny model, --stack workers=2, {args.study_epochs} epochs, batch {args.batch_size}, "
                      f"{args.study_image_size} px), the workers=2 stage: local "
                      f"{statistics.median(r['local'] for r in results['studies']):.1f} samples/s, shards "
                      f"{statistics.median(r['shards'] for r in results['studies']):.1f} samples/s; shards / local "
                      f"{statistics.median(ratios):.2f}x (median of {len(ratios)} rounds, range "
                      f"{min(ratios):.2f}-{max(ratios):.2f})")


if __name__ == "__main__":
    sys.exit(main())
