"""Running an ASGI app (the simulator, the events receiver) on a background uvicorn thread."""

from __future__ import annotations

import socket
import threading
import time

import uvicorn


class BackgroundServer:
    """uvicorn on a daemon thread, bound to a loopback port chosen up front; a context manager."""

    def __init__(self, app, *, host: str = "127.0.0.1", port: int = 0, log_level: str = "warning",
                 name: str = "server"):
        self.app, self.host, self.port, self._log_level, self._name = app, host, port, log_level, name
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._sock: socket.socket | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self):
        if self._thread is not None:
            return self
        # Bind here, not in uvicorn, so the port is known (and ours) before the thread runs.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        self.port = sock.getsockname()[1]
        # log_config=None: uvicorn would otherwise re-run logging.config.dictConfig, which holds logging's
        # module lock while it takes every handler's lock; a thread of this process logging at that moment
        # (a Dagster run) holds a handler's lock and waits for the module lock: a deadlock (seen in CI).
        config = uvicorn.Config(self.app, log_level=self._log_level, access_log=False, lifespan="auto",
                                timeout_graceful_shutdown=2, log_config=None)
        self._server = server = uvicorn.Server(config)
        self._sock = sock
        self._thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]},
                                        name=f"{self._name}:{self.port}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the {self._name} did not start on {self.url}")
            time.sleep(0.002)
        return self

    def stop(self) -> None:
        if self._thread is None:
            return
        assert self._server is not None
        self._server.should_exit = True
        self._thread.join(timeout=5)
        if self._thread.is_alive():
            self._server.force_exit = True
            self._thread.join(timeout=5)
        if self._sock is not None:
            self._sock.close()
        self._thread = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on right now (for a child process that binds it itself)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_until_ok(url: str, timeout: float = 60.0) -> None:
    """Poll ``url`` until it answers 200; raise after ``timeout`` seconds."""
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer within {timeout:.0f} s")
