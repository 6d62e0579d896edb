"""Settings from flags and CRUCIBLE_* variables, validated at start with a clear message."""

from __future__ import annotations

import subprocess
import sys

import pytest

from service.cli.main import _parser
from service.settings import Settings, SettingsError, load


def parse(*argv: str) -> dict[str, object]:
    return vars(_parser().parse_args(["serve", *argv]))


def test_defaults_are_the_embedded_service_on_port_4000() -> None:
    settings = load(parse(), environ={})
    assert settings == Settings()
    assert (settings.host, settings.port, settings.data_dir) == ("127.0.0.1", 4000, "./data")
    assert settings.embedded_log and settings.embedded_warehouse and settings.writer


def test_environment_then_flags_win() -> None:
    environ = {"CRUCIBLE_PORT": "5000", "CRUCIBLE_DATA_DIR": "/srv/crucible", "CRUCIBLE_WRITER": "false"}
    assert load(parse(), environ=environ).port == 5000
    assert load(parse(), environ=environ).writer is False
    assert load(parse("--port", "6000"), environ=environ).port == 6000
    assert load(parse("--writer"), environ=environ).writer is True
    assert load(parse("--no-writer"), environ={}).writer is False


def test_kafka_and_clickhouse_select_the_distributed_parts() -> None:
    settings = load(parse("--kafka", "k1:9092,k2:9092", "--clickhouse", "http://u:p@ch:8123/db"), environ={})
    assert settings.kafka == "k1:9092,k2:9092" and not settings.embedded_log
    assert settings.clickhouse == "http://u:p@ch:8123/db" and not settings.embedded_warehouse


@pytest.mark.parametrize(
    ("argv", "environ", "mentions"),
    [
        (["--port", "99999"], {}, "--port"),
        (["--port", "eighty"], {}, "--port"),
        ([], {"CRUCIBLE_MAX_BATCH_EVENTS": "0"}, "CRUCIBLE_MAX_BATCH_EVENTS"),
        (["--kafka", "no-port-here"], {}, "HOST:PORT"),
        (["--clickhouse", "ch:8123"], {}, "http(s)://"),
        (["--log-level", "loud"], {}, "--log-level"),
        (["--writer-flush-seconds", "-1"], {}, "--writer-flush-seconds"),
        (["--trusted-proxies", "10.0.0.0/8, proxy.internal"], {}, "'proxy.internal' is not an IP address"),
        ([], {"CRUCIBLE_TRUSTED_PROXIES": "10.0.0.300"}, "CRUCIBLE_TRUSTED_PROXIES"),
        (["--allowed-origins", "localhost:5173"], {}, "--allowed-origins"),
        (["--allowed-origins", "https://ui.example/app"], {}, "expected http(s)://host[:port]"),
        (["--unauthenticated-rate-limit", "0"], {}, "--unauthenticated-rate-limit"),
    ],
)
def test_bad_settings_are_refused_with_a_clear_message(argv: list[str], environ: dict[str, str], mentions: str) -> None:
    with pytest.raises(SettingsError) as refused:
        load(parse(*argv), environ=environ)
    assert mentions in str(refused.value)


def test_proxies_and_origins_are_comma_separated_lists() -> None:
    environ = {"CRUCIBLE_TRUSTED_PROXIES": "10.0.0.1, 172.16.0.0/12, ::1", "CRUCIBLE_ALLOWED_ORIGINS": ""}
    settings = load(parse("--allowed-origins", "http://localhost:5173,https://ui.example"), environ=environ)
    assert settings.trusted_proxies == "10.0.0.1, 172.16.0.0/12, ::1"
    assert settings.allowed_origins == "http://localhost:5173,https://ui.example"
    assert load(parse(), environ={}).trusted_proxies is None  # no proxy is believed by default


def test_cli_exits_2_with_the_message() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "service", "serve", "--port", "99999"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert "--port" in result.stderr and "Traceback" not in result.stderr


def test_every_setting_has_a_flag_and_help() -> None:
    serve = subprocess.run(
        [sys.executable, "-m", "service", "serve", "--help"], capture_output=True, text=True, timeout=60
    ).stdout
    for name in Settings.__struct_fields__:
        assert "--" + name.replace("_", "-") in serve
        assert "CRUCIBLE_" + name.upper() in serve
