"""An embedded PostgreSQL 16 (the ``pgserver`` wheel) for machines with no server.

pgserver shares one postmaster between every process that opens the same data
folder, so Dagster's step processes, the CLI and the tests all see one
database. It listens on a Unix socket only, so it never collides with a
PostgreSQL already on port 5432.
"""

from __future__ import annotations

import threading
import warnings
from pathlib import Path

_lock = threading.Lock()
_servers: dict[Path, object] = {}


def embedded_postgres_url(data_dir: Path) -> str:
    """Start (or join) the embedded server for ``data_dir`` and return its libpq URL."""
    import pgserver  # imported lazily: production deployments never start it

    data_dir = Path(data_dir).resolve()
    with _lock:
        server = _servers.get(data_dir)
        if server is None:
            data_dir.parent.mkdir(parents=True, exist_ok=True)
            # 'stop': the postmaster stops when the last process that opened it exits, so a demo
            # leaves nothing running; `garden-pipeline dev` holds it open for the UI's lifetime.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # platformdirs warns about XDG_RUNTIME_DIR on servers
                server = pgserver.get_server(data_dir, cleanup_mode="stop")
            _servers[data_dir] = server
        return server.get_uri()  # type: ignore[attr-defined]
