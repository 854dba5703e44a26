"""Runs one benchmark module in its own process and records that process's peak RSS.

`python -m bench._child RSS_FILE MODULE [ARGS...]`: the suite (`python -m bench`)
uses it so each figure's memory is its own, not the whole suite's.
"""

from __future__ import annotations

import resource
import runpy
import sys
from pathlib import Path


def main() -> None:
    rss_file, module, *args = sys.argv[1:]
    sys.argv = [module, *args]
    try:
        runpy.run_module(module, run_name="__main__")
    except SystemExit as exc:
        if exc.code not in (0, None):
            raise
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    Path(rss_file).write_text(f"{peak_kib / 1024:.1f}\n")


if __name__ == "__main__":
    main()
