"""Shared by the benchmarks: write figures into docs/benchmarks.md between a benchmark's own
markers, and run ``tansuo evaluate`` with its report kept on disk (resumable)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

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


def cached_evaluate(out_dir: Path, *args: str, fresh: bool = False
                    ) -> tuple[dict[str, Any], str]:
    """One ``tansuo evaluate`` run (home ``out_dir/home``); its JSON report is kept under
    ``out_dir`` by a hash of the command, so an interrupted benchmark resumes where it stopped
    (``fresh`` reruns). Returns (report, the command as documented)."""
    command = "tansuo evaluate " + " ".join(args)
    out = out_dir / (hashlib.sha256(command.encode()).hexdigest()[:16] + ".json")
    if out.exists() and not fresh:
        print(f"$ {command}  (kept: {out})", file=sys.stderr, flush=True)
        return json.loads(out.read_text()), command
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    cmd = [sys.executable, "-m", "tansuo.cli", "--home", str(out_dir / "home"), "evaluate",
           *args, "--json", str(tmp)]
    print(f"$ {command}", file=sys.stderr, flush=True)
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    os.replace(tmp, out)
    return json.loads(out.read_text()), command


def ci_cell(r: dict[str, Any], m: str) -> str:
    """A metric with its 95% CI, as the tables show it."""
    lo, hi = r["ci"][m]
    return f"{r['metrics'][m]:.4f} ({lo:.4f}–{hi:.4f})"
