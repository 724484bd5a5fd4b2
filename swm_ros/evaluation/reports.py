"""What every `swm eval` command leaves behind: its summary as JSON and as Markdown, side by side."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def write_summary(out: str | Path, stem: str, summary: dict[str, Any], markdown: str) -> Path:
    """`<out>/<stem>.json` and `<out>/<stem>.md`; returns the directory."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out / f"{stem}.md").write_text(markdown)
    return out


def print_summary(summary: dict[str, Any], markdown: str, as_json: bool) -> None:
    """One JSON line (`--json`, for scripts) or the Markdown table (for people)."""
    print(json.dumps(summary) if as_json else markdown)
