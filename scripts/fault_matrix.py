#!/usr/bin/env python
"""The fault matrix: every fault case run as a user would, written to paper_results/reliability/faults.{md,csv}.

    python scripts/fault_matrix.py                 # ~3 min on 2 CPU cores; needs no data files

The cases, and what each is expected to do, live in dacl/reliability.py; tests/test_faults.py asserts them.
"""
from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dacl.engine.results import git_commit, hardware  # noqa: E402
from dacl.reliability import run_matrix, write_matrix  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(REPO / "paper_results" / "reliability" / "faults"),
                    help="output path without suffix (.md and .csv are written)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="dacl-faults-") as work:
        results = run_matrix(Path(work))
    import torch

    info, hw = git_commit(REPO), hardware(torch.device("cpu"))
    provenance = (f"commit {info['commit']}{' (dirty)' if info['dirty'] else ''}, {hw['cpu']}, "
                  f"{hw['cpu_count']} cores, torch {torch.__version__}")
    write_matrix(results, Path(args.out), " ".join(["python scripts/fault_matrix.py", shlex.join(sys.argv[1:])]).strip(),
                 provenance)
    failed = [c.name for c, o in results if not o.passed]
    print(f"{len(results) - len(failed)} of {len(results)} cases pass -> {args.out}.md")
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    main()
