"""deploy/: images pinned to exact tags, and the crucible commands the tests run.

Docker does not run here, so these checks read the files: the compose file (with a YAML
parser when one is installed), the Dockerfile and the nginx configuration.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest

from service import settings
from service.cli import main as cli

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
INTERPOLATION = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?-([^}]*))?\}")


def _interpolate(text: str) -> str:
    """What compose makes of `${NAME:-default}` when NAME is unset."""
    return INTERPOLATION.sub(lambda match: match.group(2) or "", text)


def _pinned(image: str) -> bool:
    """`name:tag` with a version in the tag (a digest is fine too); never `latest`."""
    if "@sha256:" in image:
        return True
    name, _, tag = image.rpartition(":")
    return bool(name) and "/" not in tag and tag != "latest" and any(c.isdigit() for c in tag)


def _command(service: dict[str, Any]) -> list[str]:
    command = service["command"]
    words = shlex.split(command) if isinstance(command, str) else [str(word) for word in command]
    return [_interpolate(word) for word in words]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    yaml = pytest.importorskip("yaml")
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    return compose["services"]


def test_every_image_is_pinned_to_an_exact_tag(services: dict[str, Any]) -> None:
    for name, service in services.items():
        if "build" in service:
            assert service["build"]["context"] == ".."
            assert service["build"]["dockerfile"] == "deploy/Dockerfile"
            continue
        assert _pinned(service["image"]), f"{name}: {service['image']} is not an exact tag"


def test_the_images_are_the_official_ones(services: dict[str, Any]) -> None:
    assert services["kafka"]["image"].startswith("apache/kafka:")
    assert services["clickhouse"]["image"].startswith("clickhouse/clickhouse-server:")
    major = int(services["clickhouse"]["image"].rpartition(":")[2].split(".")[0])
    assert major >= 25
    assert services["lb"]["image"].startswith("nginx:")


@pytest.mark.parametrize(
    ("service", "expected"),
    [
        ("migrate", ["crucible", "migrate", "--clickhouse"]),
        ("api", ["crucible", "serve", "--no-writer", "--host", "0.0.0.0", "--kafka", "kafka:9092", "--clickhouse"]),
        ("writer", ["crucible", "writer", "--host", "0.0.0.0", "--kafka", "kafka:9092", "--clickhouse"]),
    ],
)
def test_commands_are_the_crucible_commands(services: dict[str, Any], service: str, expected: list[str]) -> None:
    command = _command(services[service])
    assert command[: len(expected)] == expected
    url = command[command.index("--clickhouse") + 1]
    assert re.fullmatch(r"http://[^:@/]+:[^@/]+@clickhouse:8123/\w+", url), url
    # The same parser and settings checks `crucible` runs at start accept them.
    args = cli._parser().parse_args(command[1:])
    loaded = settings.load(vars(args), environ={})
    assert loaded.clickhouse == url
    if service != "migrate":
        assert loaded.kafka == "kafka:9092"
        assert loaded.host == "0.0.0.0"
    if service == "api":
        assert loaded.writer is False


def test_replicas_scale_from_the_environment(services: dict[str, Any]) -> None:
    assert services["api"]["deploy"]["replicas"] == "${API_REPLICAS:-2}"
    assert services["writer"]["deploy"]["replicas"] == "${WRITER_REPLICAS:-2}"


def test_the_crucible_services_wait_for_their_dependencies(services: dict[str, Any]) -> None:
    assert services["migrate"]["depends_on"]["clickhouse"]["condition"] == "service_healthy"
    for name in ("api", "writer"):
        depends_on = services[name]["depends_on"]
        assert depends_on["kafka"]["condition"] == "service_healthy"
        assert depends_on["clickhouse"]["condition"] == "service_healthy"
        assert depends_on["migrate"]["condition"] == "service_completed_successfully"
        assert "CRUCIBLE_KAFKA_PARTITIONS" in services[name]["environment"]
    assert services["lb"]["depends_on"]["api"]["condition"] == "service_healthy"
    for name in ("kafka", "clickhouse", "api", "writer", "lb"):
        assert "healthcheck" in services[name], name


def test_kafka_takes_the_largest_record_the_app_sends(services: dict[str, Any]) -> None:
    from service.log.kafka import MAX_RECORD_BYTES

    environment = services["kafka"]["environment"]
    assert environment["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert int(environment["KAFKA_MESSAGE_MAX_BYTES"]) >= MAX_RECORD_BYTES
    assert int(environment["KAFKA_REPLICA_FETCH_MAX_BYTES"]) >= MAX_RECORD_BYTES
    assert str(environment["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"]) == "1"
    assert str(environment["KAFKA_AUTO_CREATE_TOPICS_ENABLE"]) == "false"


def test_the_clickhouse_user_is_the_one_in_the_commands(services: dict[str, Any]) -> None:
    environment = services["clickhouse"]["environment"]
    url = _command(services["api"])[-1]
    user, password = url.removeprefix("http://").split("@")[0].split(":")
    assert user == environment["CLICKHOUSE_USER"]
    assert password == _interpolate(environment["CLICKHOUSE_PASSWORD"])
    assert url.endswith("/" + environment["CLICKHOUSE_DB"])


def test_dockerfile() -> None:
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    base = re.search(r"^FROM\s+(\S+)", dockerfile, re.MULTILINE)
    assert base is not None
    assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm", base.group(1)), base.group(1)
    assert re.search(r"^RUN pip install \"?\.", dockerfile, re.MULTILINE)
    user = re.findall(r"^USER\s+(\S+)", dockerfile, re.MULTILINE)
    assert user and user[-1] not in {"root", "0"}
    assert re.search(r"^EXPOSE 4000$", dockerfile, re.MULTILINE)
    assert re.search(r"^VOLUME /data$", dockerfile, re.MULTILINE)
    assert re.search(r"^HEALTHCHECK .*\n?.*urllib.*/healthz", dockerfile, re.MULTILINE)
    assert 'CMD ["crucible", "serve", "--host", "0.0.0.0", "--data-dir", "/data"]' in dockerfile


def test_nginx_conf() -> None:
    conf = (DEPLOY / "nginx.conf").read_text()
    assert re.search(r"^\s*client_max_body_size 17m;", conf, re.MULTILINE)
    assert re.search(r"^\s*server api:4000\b", conf, re.MULTILINE)
    assert re.search(r"^\s*resolver 127\.0\.0\.11\b", conf, re.MULTILINE)
    assert re.search(r"^\s*listen 4000;", conf, re.MULTILINE)
    # Checkpoint files stream through unbuffered, with the API's own size limit.
    checkpoints = conf[conf.index("location ~ ^/api/v1/runs/[^/]+/checkpoints/") :]
    checkpoints = checkpoints[: checkpoints.index("}")]
    for directive in ("client_max_body_size 0;", "proxy_request_buffering off;", "proxy_buffering off;"):
        assert directive in checkpoints, directive


def test_the_api_replicas_share_one_artifact_store(services: dict[str, Any]) -> None:
    api = services["api"]
    assert "artifacts:/artifacts" in api["volumes"]
    assert _interpolate(api["environment"]["CRUCIBLE_ARTIFACT_STORE"]) == "/artifacts"
    assert "CRUCIBLE_KAFKA_PARTITIONS" in api["environment"]


def test_the_api_replicas_believe_nginx_forwarded_headers(services: dict[str, Any]) -> None:
    """Every request reaches the API from nginx: without trusting it, requests without a valid
    key would all count against nginx's one address."""
    trusted = _interpolate(services["api"]["environment"]["CRUCIBLE_TRUSTED_PROXIES"])
    assert settings.load({"trusted_proxies": trusted}, environ={}).trusted_proxies == trusted
    conf = (DEPLOY / "nginx.conf").read_text()
    assert "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;" in conf
    assert "proxy_set_header X-Forwarded-Proto $scheme;" in conf
    assert "proxy_set_header Host $http_host;" in conf  # the service's own origin is the one clients use
