"""A loopback TCP proxy that delays every HTTP request by a fixed time.

It passes each request on to a server on 127.0.0.1 after the delay: an object store's first-byte
latency (10-50 ms a GET on a real network) in front of a loopback S3 server, which has none.

    .venv/bin/python benchmarks/latency_proxy.py --target-port 9000 --delay-ms 20   # prints its port

A request is what the client sends after the server last answered (HTTP/1.1 clients, boto3's
among them, wait for a response before the next request on a connection), so keep-alive connections
pay the delay per request, as they do against a distant store. Each connection is served by its own
two threads, so concurrent requests wait out their delays side by side. Only loopback is ever
connected to. ``methods`` counts the requests by HTTP method (what tests read to see that nothing
was written).
"""
from __future__ import annotations

import argparse
import socket
import sys
import threading
import time
from collections import Counter

HOST = "127.0.0.1"
METHODS = {"GET", "HEAD", "PUT", "POST", "DELETE", "PATCH", "OPTIONS"}


class DelayProxy:
    def __init__(self, target_port: int, delay: float) -> None:
        self.target_port, self.delay = target_port, delay
        self.methods: Counter[str] = Counter()
        self.lock = threading.Lock()
        self.listener = socket.create_server((HOST, 0))
        self.port = self.listener.getsockname()[1]
        self.endpoint = f"http://{HOST}:{self.port}"
        self.sockets: set[socket.socket] = set()
        self.stopped = threading.Event()

    def start(self) -> "DelayProxy":
        threading.Thread(target=self._accept, daemon=True, name="proxy-accept").start()
        return self

    def stop(self) -> None:
        self.stopped.set()
        self.listener.close()
        with self.lock:
            for s in self.sockets:
                try:
                    s.close()
                except OSError:
                    pass

    def _accept(self) -> None:
        while not self.stopped.is_set():
            try:
                client, _ = self.listener.accept()
            except OSError:
                if self.stopped.is_set():
                    return
                time.sleep(0.01)  # out of descriptors for a moment: the clients retry, so does this
                continue
            try:
                upstream = socket.create_connection((HOST, self.target_port), timeout=10)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            for s in (client, upstream):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self.lock:
                self.sockets |= {client, upstream}
            # "request": the next bytes from the client start a new request; "open": pumps still running
            turn = {"request": True, "open": 2}
            threading.Thread(target=self._requests, args=(client, upstream, turn), daemon=True).start()
            threading.Thread(target=self._responses, args=(upstream, client, turn), daemon=True).start()

    def _requests(self, src: socket.socket, dst: socket.socket, turn: dict) -> None:
        try:
            while data := src.recv(1 << 16):
                if turn["request"]:
                    turn["request"] = False
                    method = data.split(b" ", 1)[0].decode("ascii", "replace")
                    if method in METHODS:
                        with self.lock:
                            self.methods[method] += 1
                    if self.delay:
                        time.sleep(self.delay)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            self._done(dst, src, turn)

    def _responses(self, src: socket.socket, dst: socket.socket, turn: dict) -> None:
        try:
            while data := src.recv(1 << 16):
                turn["request"] = True
                dst.sendall(data)
        except OSError:
            pass
        finally:
            self._done(dst, src, turn)

    def _done(self, dst: socket.socket, src: socket.socket, turn: dict) -> None:
        """One direction ended: tell the other side; the second to end closes both sockets."""
        try:
            dst.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        with self.lock:
            turn["open"] -= 1
            if turn["open"]:
                return
            self.sockets -= {dst, src}
        for s in (dst, src):
            s.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0], epilog="\n".join(__doc__.split("\n")[2:]),
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--target-port", type=int, required=True, help="port of the server on 127.0.0.1")
    ap.add_argument("--delay-ms", type=float, default=20.0, help="delay added to every request (default 20)")
    args = ap.parse_args(argv)
    proxy = DelayProxy(args.target_port, args.delay_ms / 1000).start()
    print(proxy.port, flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        proxy.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
