"""A wrongly typed secret setting: the error names the setting, never its value."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from jsonschema import ValidationError
from singer_sdk.exceptions import ConfigValidationError

from tap_redis_stream import tap as tap_module
from tap_redis_stream.tap import TapRedisStream
from target_batched_postgres import target as target_module
from target_batched_postgres.target import TargetBatchedPostgres

BIN = Path(sys.executable).parent
SECRET = "S3CRETPW"
KAFKA_SECRET = "KAFKAS3CRET"

TARGET_CASES = [
    pytest.param(
        {
            "database_url": f"postgresql://u:{SECRET}@127.0.0.1:1/x",
            "kafka_producer_config": f"sasl.password={KAFKA_SECRET}",
        },
        "kafka_producer_config",
        KAFKA_SECRET,
        id="kafka_producer_config-string",
    ),
    pytest.param(
        {"database_url": [f"postgresql://u:{SECRET}@127.0.0.1:1/x"]},
        "database_url",
        SECRET,
        id="database_url-list",
    ),
]
TAP_CASES = [
    pytest.param(
        {"redis_url": [f"redis://u:{SECRET}@127.0.0.1:1/0"], "stream_keys": ["a"]},
        "redis_url",
        SECRET,
        id="redis_url-list",
    ),
    pytest.param(
        {"redis_url": {"url": f"redis://u:{SECRET}@127.0.0.1:1/0"}, "stream_keys": ["a"]},
        "redis_url",
        SECRET,
        id="redis_url-object",
    ),
]


def _run_cli(
    executable: str, tmp_path: Path, config: dict[str, Any]
) -> subprocess.CompletedProcess:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    return subprocess.run(
        [str(BIN / executable), "--config", str(path)],
        input="\n",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(("config", "setting", "secret"), TARGET_CASES)
def test_target_cli_never_shows_a_secret_value(tmp_path, config, setting, secret):
    result = _run_cli("target-batched-postgres", tmp_path, config)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert f"config[{setting!r}]: invalid value (not shown: secret)" in output
    assert secret not in output


@pytest.mark.parametrize(("config", "setting", "secret"), TAP_CASES)
def test_tap_cli_never_shows_a_secret_value(tmp_path, config, setting, secret):
    result = _run_cli("tap-redis-stream", tmp_path, config)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert f"config[{setting!r}]: invalid value (not shown: secret)" in output
    assert secret not in output


@pytest.mark.parametrize(
    ("plugin", "config", "setting", "secret"),
    [
        *[pytest.param(TargetBatchedPostgres, *case.values, id=case.id) for case in TARGET_CASES],
        *[pytest.param(TapRedisStream, *case.values, id=case.id) for case in TAP_CASES],
    ],
)
def test_in_process_errors_name_the_setting_only(plugin, config, setting, secret):
    with pytest.raises(ConfigValidationError) as raised:
        plugin(config=config)
    errors = raised.value.errors
    assert any(setting in error and "not of type" in error for error in errors)
    assert not any(secret in error for error in errors)


def test_other_settings_keep_the_sdk_message():
    config = {"database_url": "postgresql://u:p@127.0.0.1:1/x", "insert_batch_size": 0}
    with pytest.raises(ConfigValidationError) as raised:
        TargetBatchedPostgres(config=config)
    assert raised.value.errors == ["0 is less than the minimum of 1 in config['insert_batch_size']"]


@pytest.mark.parametrize("module", [target_module, tap_module])
def test_a_whole_config_message_quoting_a_secret_is_withheld(module):
    # An error about the config as a whole may quote the config (and so any value).
    config = {"redis_url": f"redis://u:{SECRET}@h/0", "other": 1}
    error = ValidationError(f"{config!r} is not valid under any of the given schemas")
    error.validator, error.validator_value = "anyOf", [{"required": ["x"]}]
    message = module.describe_config_error(error, frozenset({"redis_url"}), config)
    assert SECRET not in message
    assert "anyOf" in message
