"""MkDocs hooks of the documentation site (mkdocs.yml names this file).

The configuration page ends with the reference of every key, written from the pydantic
models at each build (tools/config_reference.py), so it cannot drift from the code.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

TOOLS = Path(__file__).resolve().parent
for path in (TOOLS, TOOLS.parent):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from config_reference import reference  # noqa: E402

CONFIGURATION_PAGE = "configuration.md"


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    if page.file.src_uri == CONFIGURATION_PAGE:
        return markdown.rstrip() + "\n\n" + reference()
    return markdown
