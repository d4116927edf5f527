"""Write a benchmark's figures into docs/benchmarks.md between its own markers."""

from __future__ import annotations

from pathlib import Path

DOC = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"


def write_block(name: str, heading: str, text: str, doc: Path = DOC) -> None:
    """Replace the block marked ``<!-- name:begin/end -->`` (or append it under heading)."""
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    content = doc.read_text() if doc.exists() else "# Benchmarks\n"
    block = f"{begin}\n{text}\n{end}"
    if begin in content:
        content = content[: content.index(begin)] + block + content[content.index(end) + len(end):]
    else:
        content += f"\n## {heading}\n\n{block}\n"
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text(content)
