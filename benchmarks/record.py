"""Run one benchmark and keep what it printed as its last result: ``benchmarks/NAME.last.md`` gets a line saying
the command, the date and the machine, then the script's standard output (its tables). Written only when the
script succeeds, through a temporary file; progress on standard error passes through. ``make bench`` runs each
benchmark that does not write its own result file through this, then ``collect.py``. NAME.LABEL runs NAME and
keeps its result beside the main one, as ``NAME.LABEL.last.md`` (a run on other inputs: another work folder).

    python benchmarks/record.py search_cost [ARGS...]
    python benchmarks/record.py supernet_rank.long-control --work ... [ARGS...]
"""
from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    script = sys.argv[1].split(".")[0] if len(sys.argv) >= 2 else ""
    if not script or not (HERE / f"{script}.py").is_file():
        names = ", ".join(sorted(p.stem for p in HERE.glob("*.py") if p.stem not in ("record", "collect")))
        print(f"usage: record.py NAME[.LABEL] [ARGS...]; NAME is a benchmark script's name: {names}", file=sys.stderr)
        return 2
    name, args = sys.argv[1], sys.argv[2:]
    cmd = [sys.executable, str(HERE / f"{script}.py"), *args]
    r = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
    sys.stdout.write(r.stdout)
    if r.returncode != 0:
        print(f"{name} failed (exit {r.returncode}); {name}.last.md left as it was", file=sys.stderr)
        return r.returncode
    head = (f"# `python benchmarks/{script}.py{' ' + ' '.join(args) if args else ''}`, last run {dt.date.today().isoformat()} "
            f"({os.cpu_count()} cores; a benchmark's figures hold when nothing else ran beside it)")
    out = HERE / f"{name}.last.md"
    tmp = out.with_suffix(f".md.{os.getpid()}.tmp")
    tmp.write_text(head + "\n\n" + r.stdout.strip() + "\n", encoding="utf-8")
    tmp.replace(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
