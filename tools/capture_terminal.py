"""Draw the terminal pictures of the documentation from the real commands.

Runs the demo in a throw-away home, then `lopper suggestions` at 80 columns, and saves what
it printed as an SVG (docs/images/suggestions.svg), so that the picture shows what the
command prints today.

    python tools/capture_terminal.py
"""

from __future__ import annotations

import io
import os
import re
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
IMAGES = ROOT / "docs" / "images"


def main() -> int:
    with tempfile.TemporaryDirectory() as home:
        os.environ.update(
            XDG_CONFIG_HOME=f"{home}/config", XDG_STATE_HOME=f"{home}/state", COLUMNS="80"
        )
        for name in ("LOPPER_CONFIG", "CONFIGURATION_DIRECTORY", "STATE_DIRECTORY"):
            os.environ.pop(name, None)
        sys.path.insert(0, str(ROOT))
        from rich.console import Console
        from typer.testing import CliRunner

        from service import cli

        runner = CliRunner()
        demo = runner.invoke(cli.app, ["demo", "--size", "3000", "--no-run"])
        if demo.exit_code:
            print(demo.output, file=sys.stderr)
            return 1
        cli.out = Console(record=True, width=80, file=io.StringIO(), force_terminal=True)
        cli.out.print("$ lopper suggestions -n 10", style="bold")
        runner.invoke(cli.app, ["suggestions", "-n", "10"])
        IMAGES.mkdir(parents=True, exist_ok=True)
        target = IMAGES / "suggestions.svg"
        svg = cli.out.export_svg(title="lopper suggestions")
        # No font from elsewhere: the reader's own monospace font draws it.
        svg = re.sub(r"@font-face \{.*?\}\s*", "", svg, flags=re.S)
        target.write_text(svg, encoding="utf-8")
        print(f"{target.relative_to(ROOT)}: {target.stat().st_size:,} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
