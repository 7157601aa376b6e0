"""Keep the README's settings tables equal to the plugins' `--about --format=markdown`.

python tools/readme_settings.py          # rewrite README.md
python tools/readme_settings.py --check  # exit 1 if README.md drifted
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"
PLUGINS = ("tap-redis-stream", "target-batched-postgres")


def settings_table(plugin: str) -> str:
    """The `## Settings` table of the plugin's markdown about text."""
    exe = Path(sys.executable).parent / plugin
    about = subprocess.run(
        [str(exe), "--about", "--format=markdown"], capture_output=True, text=True, check=True
    ).stdout
    lines = about.split("## Settings", 1)[1].strip().splitlines()
    table = [line for line in lines if line.startswith("|")]
    return "\n".join(table)


def render(readme: str) -> str:
    for plugin in PLUGINS:
        pattern = block_pattern(plugin)
        if pattern.search(readme):
            table = settings_table(plugin)

            def replace(match: re.Match[str], table: str = table) -> str:
                return match.group(1) + table + "\n" + match.group(3)

            readme = pattern.sub(replace, readme)
    return readme


def block_pattern(plugin: str) -> re.Pattern[str]:
    """Marker lines around a plugin's table; group 2 is the table with its last newline."""
    return re.compile(
        rf"(<!-- settings:{re.escape(plugin)} -->\n)(.*?)(<!-- /settings -->)", re.DOTALL
    )


def main() -> int:
    current = README.read_text()
    wanted = render(current)
    if "--check" in sys.argv:
        if wanted != current:
            print("README.md settings tables differ from --about; run: make readme")
            return 1
        return 0
    README.write_text(wanted)
    return 0


if __name__ == "__main__":
    sys.exit(main())
