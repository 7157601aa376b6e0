"""The README's settings tables are generated from the plugins' --about output."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))
import readme_settings

README = readme_settings.README.read_text()


@pytest.mark.parametrize("plugin", readme_settings.PLUGINS)
def test_settings_table_matches_about(plugin: str) -> None:
    if shutil.which(plugin, path=str(Path(sys.executable).parent)) is None:
        pytest.fail(f"{plugin} is not installed: pip install -e .")
    marker = f"<!-- settings:{plugin} -->"
    assert marker in README, f"README lacks the {plugin} settings table"
    block = readme_settings.block_pattern(plugin).search(README)
    assert block is not None
    assert block.group(2) == readme_settings.settings_table(plugin) + "\n"


def test_readme_starts_with_the_two_commands() -> None:
    head = README[:1500]
    assert "make demo" in head
    assert "make test" in head


@pytest.mark.parametrize("plugin", readme_settings.PLUGINS)
def test_about_names_the_distribution_version(plugin: str) -> None:
    # The SDK looks the version up by `package_name`; the plugin's own name is
    # no distribution, which logs and --about showed as "[could not be detected]".
    from importlib.metadata import version

    from tap_redis_stream.tap import TapRedisStream
    from target_batched_postgres.target import TargetBatchedPostgres

    plugin_class = TapRedisStream if plugin == "tap-redis-stream" else TargetBatchedPostgres
    assert plugin_class.plugin_version == version("redis-stream-drainer")
