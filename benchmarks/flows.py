"""The flow-library benchmark of issue 3 in one run: spline couplings vs zuko's NSF, OT vs independent flow matching.

    python benchmarks/flows.py            # both parts, results in benchmarks/results/{flows_splines,flow_matching}.json

Each part is also a script of its own (``benchmarks/flows_splines.py``, ``benchmarks/flow_matching.py``) with
its own options; this runner calls them with their defaults, one after the other, in one process.
"""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

if __name__ == "__main__":
    for script in ("flows_splines.py", "flow_matching.py"):
        print(f"\n=== {script} ===", flush=True)
        sys.argv = [str(HERE / script)]
        runpy.run_path(str(HERE / script), run_name="__main__")
