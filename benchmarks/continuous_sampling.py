"""Benchmark: cost of sampling a ContinuousFlow (NFE 10, fixed-step Euler) against a plain Euler loop of the same field.

Run:  OMP_NUM_THREADS=1 python benchmarks/continuous_sampling.py [--repeats 25] [--quick]

For each case (a 2D field and a higher-dimensional one, batch 10,000) the same :class:`~bgflow_sci.flows.VectorField`
(random weights, so the trajectories are not trivial) is integrated from ``t = 0`` to 1 in 10 Euler steps by

* ``euler loop``: the hand-written loop ``x <- x + h v(t_i, x)``, ``t_i = i h``, ``h = 1/10``;
* ``transform``: ``ContinuousFlow(field, solver="euler", n_steps=10).transform(z)``, the sample-only path;
* ``forward``: ``ContinuousFlow(...)(z)``, the full path that also integrates the exact divergence (for reference);

all under ``torch.no_grad()``, in one process, one thread, after a warm-up.  The loop and ``transform`` are timed
back to back in every repeat (alternating which goes first), ``forward`` (many times slower) a few times afterwards.
Each call is timed by the process CPU time (``time.process_time``: on a shared machine it leaves out the time the
process waits for a core) and by the wall clock (``time.perf_counter``).  Reported per clock: the median of each
method over the repeats, and the median over repeats of the paired ratio ``transform / loop`` (the statistic the
1.1x limit is checked on; pairing cancels slow drifts of the machine's load); and the largest difference between
the sample-only ``y`` and the loop's.  Writes ``benchmarks/results/continuous_sampling.json``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from bgflow_sci.flows import ContinuousFlow, VectorField

RESULTS = Path(__file__).resolve().parent / "results" / "continuous_sampling.json"
CASES = {"2d": dict(dim=2, hidden=(64, 64)), "32d": dict(dim=32, hidden=(128, 128))}
N_STEPS = 10
LIMIT = 1.1  # the must-show: sample-only cost within 1.1x of the plain loop


def cpu_model() -> str:
    """The processor's model name (``/proc/cpuinfo`` on Linux), else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def random_field(dim: int, hidden: tuple[int, ...], seed: int = 0) -> VectorField:
    torch.manual_seed(seed)
    field = VectorField(dim, hidden=hidden, zero_init=False)
    field.requires_grad_(False)
    return field


def euler_loop(field: VectorField, z: torch.Tensor, n_steps: int = N_STEPS) -> torch.Tensor:
    """The plain fixed-step Euler integration of ``dx/dt = v(t, x)`` on ``[0, 1]``."""
    h = 1.0 / n_steps
    x = z
    for i in range(n_steps):
        x = x + h * field(i * h, x)
    return x


CLOCKS = {"cpu": time.process_time, "wall": time.perf_counter}


def time_once(fn: Callable[[], object]) -> dict[str, float]:
    """CPU and wall seconds of one call."""
    start = {name: clock() for name, clock in CLOCKS.items()}
    fn()
    return {name: clock() - start[name] for name, clock in CLOCKS.items()}


def run_case(dim: int, hidden: tuple[int, ...], batch: int, repeats: int, forward_repeats: int) -> dict:
    field = random_field(dim, hidden)
    flow = ContinuousFlow(field, solver="euler", n_steps=N_STEPS)
    z = torch.randn(batch, dim, generator=torch.Generator().manual_seed(1))
    methods = {"euler_loop": lambda: euler_loop(field, z), "transform": lambda: flow.transform(z)}
    with torch.no_grad():
        y_loop, y_sample = methods["euler_loop"](), methods["transform"]()
        assert flow.nfe == N_STEPS
        y_full = flow(z)[0]
        max_diff = {
            "transform_vs_loop": (y_sample - y_loop).abs().max().item(),
            "forward_vs_loop": (y_full - y_loop).abs().max().item(),
        }
        for fn in methods.values():  # warm-up
            fn()
        times: dict[str, list[dict[str, float]]] = {name: [] for name in methods}
        names = list(methods)
        for r in range(repeats):
            for name in names if r % 2 == 0 else names[::-1]:
                times[name].append(time_once(methods[name]))
        times["forward"] = [time_once(lambda: flow(z)) for _ in range(forward_repeats)]
    out: dict = dict(dim=dim, hidden=list(hidden), batch=batch, nfe=N_STEPS, max_abs_diff=max_diff)
    for clock in CLOCKS:
        series = {name: [t[clock] for t in ts] for name, ts in times.items()}
        median = {name: statistics.median(v) for name, v in series.items()}
        paired = [a / b for a, b in zip(series["transform"], series["euler_loop"])]
        out[clock] = dict(
            median_s=median,
            min_s={name: min(v) for name, v in series.items()},
            ratio_transform_to_loop=statistics.median(paired),
            ratio_of_medians_transform_to_loop=median["transform"] / median["euler_loop"],
            ratio_forward_to_loop=median["forward"] / median["euler_loop"],
            times_s=series,
        )
    return out


def main(batch: int = 10_000, repeats: int = 25, forward_repeats: int = 3) -> dict:
    torch.set_num_threads(1)
    cases = {}
    for name, spec in CASES.items():
        res = run_case(spec["dim"], spec["hidden"], batch, repeats, forward_repeats)
        cases[name] = res
        for clock in CLOCKS:
            r = res[clock]
            m = r["median_s"]
            print(
                f"{name:4s} {clock:4s} batch {batch}: euler loop {1e3 * m['euler_loop']:8.2f} ms | "
                f"transform {1e3 * m['transform']:8.2f} ms (paired {r['ratio_transform_to_loop']:.3f}x, "
                f"of medians {r['ratio_of_medians_transform_to_loop']:.3f}x) | "
                f"forward {1e3 * m['forward']:8.2f} ms ({r['ratio_forward_to_loop']:.2f}x)",
                flush=True,
            )
        print(f"     max|y_transform - y_loop| {res['max_abs_diff']['transform_vs_loop']:.1e}", flush=True)
    worst = {clock: max(c[clock]["ratio_transform_to_loop"] for c in cases.values()) for clock in CLOCKS}
    result = dict(
        benchmark="continuous_sampling: ContinuousFlow.transform (euler, 10 steps) vs a plain Euler loop, same field",
        limit=LIMIT,
        worst_paired_ratio=worst,
        within_limit=worst["cpu"] <= LIMIT,
        config=dict(
            batch=batch,
            repeats=repeats,
            forward_repeats=forward_repeats,
            n_steps=N_STEPS,
            solver="euler",
            statistic="median over repeats of the paired ratio transform / loop; process CPU time and wall time",
            grad="torch.no_grad()",
        ),
        machine=dict(
            processor=cpu_model(),
            cpu_count=os.cpu_count(),
            torch_threads=torch.get_num_threads(),
            omp_num_threads=os.environ.get("OMP_NUM_THREADS"),
            load_average_1min=os.getloadavg()[0],
            torch=torch.__version__,
            python=platform.python_version(),
            date=datetime.datetime.now().isoformat(timespec="seconds"),
        ),
        cases=cases,
    )
    verdict = "ok" if worst["cpu"] <= LIMIT else "EXCEEDED"
    print(
        f"worst paired transform / loop ratio: cpu {worst['cpu']:.3f}, wall {worst['wall']:.3f} "
        f"(limit {LIMIT}): {verdict}"
    )
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=25)
    parser.add_argument("--forward-repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="batch 1,000, 3 repeats, no JSON (smoke test)")
    parser.add_argument("--no-save", action="store_true", help="do not write the JSON result")
    args = parser.parse_args()
    if args.quick:
        args.batch, args.repeats, args.forward_repeats = 1000, 3, 1
    res = main(args.batch, args.repeats, args.forward_repeats)
    if not args.no_save and not args.quick:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(res, indent=1) + "\n")
        print(f"wrote {RESULTS}")
