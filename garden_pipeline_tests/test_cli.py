"""The README's main command and the operator's commands, run as a user would."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory

from garden_pipeline import migrations

from garden_pipeline.simulator import SimulatorServer
from garden_pipeline_tests.harness import live_rows

BIN = Path(sys.executable).parent
_SERVER_VARS = ("GATEWAY_DB_URL", "REDIS_URL", "MODEL_GARDEN_URL", "MODEL_GARDEN_TOKEN", "DAGSTER_HOME",
                "GATEWAY_DB_SCHEMA", "REDIS_STREAM")


def _env(tmp_path: Path, **extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in _SERVER_VARS}
    env.update({"GARDEN_HOME": str(tmp_path / ".garden"), "GARDEN_SIMULATOR_SCALE": "150", **extra})
    return env


def _run(args: list[str], env: dict, cwd: Path, timeout: int = 240) -> subprocess.CompletedProcess:
    return subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_demo_runs_a_full_sync_on_the_embedded_stack(tmp_path):
    env = _env(tmp_path)
    demo = _run([str(BIN / "garden-pipeline"), "demo"], env, tmp_path)
    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert "embedded simulator" in demo.stdout and "embedded PostgreSQL" in demo.stdout
    lines = {line.split()[0]: line.split()[1:] for line in demo.stdout.splitlines() if line[:1].isalpha()}
    assert int(lines["projects"][0]) > 0 and int(lines["llm_model_limits"][0]) > 0
    assert "published to Redis" in demo.stdout
    assert "the receiver acknowledged 10" in demo.stdout and "applied: 10" in demo.stdout
    assert (tmp_path / ".garden" / "pgdata").is_dir()
    assert (tmp_path / ".garden" / "dagster_home" / "dagster.yaml").is_file()

    again = _run([str(BIN / "garden-pipeline"), "sync", "--mode", "incremental"], env, tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    rows = [line.split() for line in again.stdout.splitlines() if line.startswith("projects")]
    assert rows and rows[0][1:4] == ["0", "0", "0"], again.stdout  # nothing changed upstream

    status = _run([str(BIN / "garden-pipeline"), "status"], env, tmp_path)
    assert status.returncode == 0, status.stderr
    assert "llm_model_limits" in status.stdout and "dead_letters    ok" in status.stdout

    upgrade = _run([str(BIN / "garden-pipeline"), "db", "upgrade"], env, tmp_path)
    head = ScriptDirectory(str(Path(migrations.__file__).parent)).get_current_head()
    assert upgrade.returncode == 0 and f"is at revision {head}" in upgrade.stdout


def test_bad_configuration_is_refused_with_a_reason(tmp_path):
    env = _env(tmp_path, GATEWAY_DB_SCHEMA="Drop Table;")
    result = _run([str(BIN / "garden-pipeline"), "db", "upgrade"], env, tmp_path, timeout=60)
    assert result.returncode == 2
    assert "GATEWAY_DB_SCHEMA" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.slow
def test_dagster_job_execute_against_environment_configured_servers(tmp_path, pg_url, schema, redis_url_or_file, db):
    redis_url, _ = redis_url_or_file
    with SimulatorServer(scale=100, seed=4) as sim:
        env = _env(tmp_path, GATEWAY_DB_URL=pg_url, GATEWAY_DB_SCHEMA=schema, MODEL_GARDEN_URL=sim.url,
                   DAGSTER_HOME=str(tmp_path / "dh"), **({"REDIS_URL": redis_url} if redis_url else {}))
        (tmp_path / "dh").mkdir()
        result = _run([str(BIN / "dagster"), "job", "execute", "-m", "garden_pipeline", "-j", "full_sync_job"],
                      env, tmp_path)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        assert len(live_rows(db, schema, "subscription")) == sim.state.count("subscription")
        assert pg_url.split("@")[0] not in result.stdout + result.stderr or "@" not in pg_url
