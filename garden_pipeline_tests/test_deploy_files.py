"""The deployment files refer to things that exist: no Docker engine runs here, so check them by reading."""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path

import pytest
import yaml

from garden_pipeline.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
BIN = Path(sys.executable).parent


def _is_console_script(name: str) -> bool:
    return (BIN / name).exists() or shutil.which(name) is not None


def _check_command(cmd: list[str]) -> None:
    assert _is_console_script(cmd[0]), f"{cmd[0]} is not an installed console script"
    if cmd[0] == "garden-pipeline":
        build_parser().parse_args(cmd[1:])  # exits (fails the test) on an unknown command or flag


def test_dockerfile_copies_files_that_exist_and_runs_a_real_command():
    text = (DEPLOY / "Dockerfile").read_text()
    for line in text.splitlines():
        if line.startswith("COPY"):
            sources = line.split()[1:-1]
            for src in sources:
                assert (ROOT / src).exists(), f"COPY source {src} missing"
    cmd = yaml.safe_load(re.search(r"^CMD (\[.*\])$", text, re.M).group(1))
    _check_command(cmd)
    assert "-m" in cmd and cmd[cmd.index("-m") + 1] == "garden_pipeline"


def test_compose_services_use_real_images_commands_and_env():
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    env_keys = {line.split("=", 1)[0] for line in (DEPLOY / "env.example").read_text().splitlines()
                if line and not line.startswith("#")}
    for required in ("GATEWAY_DB_URL", "GATEWAY_DB_SCHEMA", "REDIS_URL", "MODEL_GARDEN_URL", "GARDEN_EVENTS_SECRET",
                     "DAGSTER_PG_HOST", "DAGSTER_PG_PORT", "DAGSTER_PG_USER", "DAGSTER_PG_PASSWORD", "DAGSTER_PG_DB"):
        assert required in env_keys, required
    dagster_yaml = (ROOT / "dagster.yaml").read_text()
    for var in re.findall(r"\{env: (\w+)\}", dagster_yaml):
        assert var in env_keys, f"dagster.yaml reads {var}, which the compose env does not set"
    services = compose["services"]
    assert {"postgres", "redis", "dagster-webserver", "dagster-daemon", "user-code", "events-receiver",
            "simulator"} <= set(services)
    assert services["simulator"]["profiles"] == ["simulator"]
    for name, svc in services.items():
        if "build" in svc:
            context = (DEPLOY / svc["build"]["context"]).resolve()
            assert (context / svc["build"]["dockerfile"]).is_file(), name
            assert svc["env_file"] == ".env"
            _check_command(svc["command"])
        else:
            assert re.match(r"^(postgres|redis):\d+$", svc["image"]), name
        for dep in svc.get("depends_on", {}):
            assert dep in services, f"{name} depends on unknown {dep}"
    for volume in services["postgres"]["volumes"]:
        source = volume.split(":")[0]
        if source.startswith("."):
            assert (DEPLOY / source).exists(), source
    workspace = yaml.safe_load((DEPLOY / "workspace.grpc.yaml").read_text())
    grpc = workspace["load_from"][0]["grpc_server"]
    assert grpc["host"] in services
    code_cmd = services[grpc["host"]]["command"]
    assert str(grpc["port"]) == code_cmd[code_cmd.index("-p") + 1]


def test_helm_values_and_receiver_manifest():
    values = yaml.safe_load((DEPLOY / "helm" / "values.yaml").read_text())
    deployment = values["dagster-user-deployments"]["deployments"][0]
    assert deployment["dagsterApiGrpcArgs"] == ["-m", "garden_pipeline"]
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    limits = values["dagsterDaemon"]["runCoordinator"]["config"]["queuedRunCoordinator"]["tagConcurrencyLimits"]
    assert {"key": "garden/sync", "value": "gatewaydb", "limit": 1} in limits
    docs = list(yaml.safe_load_all((DEPLOY / "k8s" / "events-receiver.yaml").read_text()))
    receiver = docs[0]["spec"]["template"]["spec"]["containers"][0]
    _check_command(receiver["command"])
    assert receiver["readinessProbe"]["httpGet"]["path"] == "/api/v1/model-garden/health"
    assert docs[0]["spec"]["replicas"] >= 2


@pytest.mark.parametrize("name", ["dagster.yaml", "workspace.yaml"])
def test_top_level_instance_and_workspace_files_parse(name):
    assert yaml.safe_load((ROOT / name).read_text())
