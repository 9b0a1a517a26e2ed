"""Benchmark of several jobs on one machine: N identical pipelines started together against a lone one.

    python scripts/bench_jobs.py [--size-px 2780] [--jobs 2 4] [--repeats 3] [--rounds 2] [--json out.json]

Each job is a separate process that does what ``s2v-gpu-run`` does with its defaults: the OpenMP
wait policy of ``s2v_gpu.openmp`` set before torch loads, a slot among the running jobs
(``s2v_gpu.sharing``), ``device.threads`` resolved as the run resolves it before each pair (the cores
divided among the jobs sharing them), one warm-up pair, then ``--repeats`` pairs on the bench's
cached pair (``scripts/bench.py``'s, written once into ``--cache``). Jobs wait at a barrier after
their warm-up, so their measured pairs overlap. Reported, for each job: its median wall time and
process CPU time per pair, and their ratio to a lone job measured in the same round. A fair share of
the cores gives N x the lone wall time on a machine with fewer cores than the jobs' threads.

``--policies`` also measures 0.4.1's behaviour (``0.4.1``: the OpenMP runtime's spinning threads,
every job on every core), ``passive-only`` (yielding threads, no sharing of the cores) or ``spinN``
(``GOMP_SPINCOUNT=N``), alternately with ours, for what each part does and what a lone job pays.
"""

from __future__ import annotations

import sys

if "--runtime-default" in sys.argv:  # torch loaded before s2v_gpu: OpenMP keeps the runtime's default
    import torch  # noqa: F401
else:  # s2v_gpu before torch, as every console command: its OpenMP wait policy applies
    import s2v_gpu  # noqa: F401

# isort: split
import argparse
import json
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BARRIER_TIMEOUT_S = 600.0


def worker(args) -> int:
    """One job: warm up on the pair, wait for the barrier, time ``--repeats`` pairs, write JSON."""
    import torch

    from s2v_gpu.pairing import find_pairs
    from s2v_gpu.pipeline import PipelineConfig, process_pair
    from s2v_gpu.products import find_products
    from s2v_gpu.sharing import JobSlot
    from s2v_gpu.threads import apply_threads

    slot = JobSlot().__enter__()  # as the run does: the job is counted by the others for its life
    threads = apply_threads(0)
    pair = find_pairs(find_products(Path(args.root)), "SYNTH-1")[0]
    cfg, device = PipelineConfig(), torch.device("cpu")
    process_pair(pair, cfg, device)
    ready, go = Path(args.barrier) / f"ready-{os.getpid()}", Path(args.barrier) / "go"
    ready.touch()
    deadline = time.monotonic() + BARRIER_TIMEOUT_S
    while not go.exists():  # bounded: the parent writes it once every job is ready
        if time.monotonic() > deadline:
            print("bench_jobs worker: no start signal", file=sys.stderr)
            return 1
        time.sleep(0.005)
    walls, cpus = [], []
    for _ in range(args.repeats):
        threads = apply_threads(0)  # before each pair, as the run does
        start, cpu_start = time.perf_counter(), time.process_time()
        process_pair(pair, cfg, device)
        walls.append(time.perf_counter() - start)
        cpus.append(time.process_time() - cpu_start)
    import s2v_gpu.openmp

    record = {"wall_s": statistics.median(walls), "cpu_s": statistics.median(cpus), "threads": threads,
              "policy": s2v_gpu.openmp.POLICY, "spincount": os.environ.get("GOMP_SPINCOUNT", "")}
    Path(args.out).write_text(json.dumps(record))
    slot.__exit__(None, None, None)
    return 0


def run_jobs(n: int, root: Path, repeats: int, policy: str) -> list[dict]:
    """Start ``n`` jobs at once under ``policy``; their records. ``ours``: the defaults (yielding
    OpenMP threads, the cores shared among the jobs); ``0.4.1``: the runtime's spinning threads and
    every job on every core; ``passive-only``: yielding threads, every job on every core; ``spinN``:
    GOMP_SPINCOUNT=N, every job on every core."""
    env = dict(os.environ)
    env.pop("OMP_WAIT_POLICY", None)
    env.pop("GOMP_SPINCOUNT", None)
    extra, alone = [], policy != "ours"
    if policy == "0.4.1":
        extra = ["--runtime-default"]
    elif policy.startswith("spin"):  # the runtime's spinning, shortened to N iterations before a sleep
        extra, env["GOMP_SPINCOUNT"] = ["--runtime-default"], policy.removeprefix("spin")
    with tempfile.TemporaryDirectory(prefix="s2v-bench-jobs-") as tmp:
        outs = [Path(tmp) / f"job{k}.json" for k in range(n)]
        # each job its own slot folder when they must not share (it then sees itself alone)
        envs = [{**env, "S2V_JOBS_DIR": str(Path(tmp) / (f"alone{k}" if alone else "jobs"))} for k in range(n)]
        procs = [subprocess.Popen([sys.executable, __file__, "--worker", "--root", str(root), "--barrier", tmp,
                                   "--out", str(out), "--repeats", str(repeats), *extra], env=e)
                 for out, e in zip(outs, envs)]
        deadline = time.monotonic() + BARRIER_TIMEOUT_S
        while len(list(Path(tmp).glob("ready-*"))) < n and time.monotonic() < deadline:
            if any(p.poll() not in (None, 0) for p in procs):
                break
            time.sleep(0.01)
        (Path(tmp) / "go").touch()
        codes = [p.wait() for p in procs]
        if any(codes):
            raise SystemExit(f"bench_jobs: a job failed (exit codes {codes})")
        return [json.loads(out.read_text()) for out in outs]


def measure_round(root: Path, jobs: list[int], repeats: int, policy: str) -> dict:
    """A lone job, then each N of ``jobs`` together, under one policy."""
    lone = run_jobs(1, root, repeats, policy)[0]
    out = {"lone": lone, "together": {}}
    print(f"[{policy}] lone job: {lone['wall_s']:.2f} s wall, {lone['cpu_s']:.2f} CPU-s per pair "
          f"({lone['threads']} threads, OMP_WAIT_POLICY {lone['policy']})", flush=True)
    for n in jobs:
        records = run_jobs(n, root, repeats, policy)
        for r in records:
            r["wall_over_lone"] = r["wall_s"] / lone["wall_s"]
            r["cpu_over_lone"] = r["cpu_s"] / lone["cpu_s"]
        out["together"][n] = records
        print(f"[{policy}] {n} jobs at once: wall " + ", ".join(f"{r['wall_s']:.2f} s ({r['wall_over_lone']:.2f}x)"
                                                                 for r in records)
              + "; CPU " + ", ".join(f"{r['cpu_s']:.2f} s ({r['cpu_over_lone']:.2f}x)" for r in records), flush=True)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-px", type=int, default=2780)
    parser.add_argument("--cache", default="bench_cache")
    parser.add_argument("--jobs", type=int, nargs="+", default=[2, 4])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=1, help="rounds of every policy, alternately")
    parser.add_argument("--policies", nargs="+", default=["ours"],
                        help="ours (the defaults), 0.4.1 (spinning threads, no sharing), passive-only, spinN "
                             "(GOMP_SPINCOUNT=N, no sharing)")
    parser.add_argument("--json", default=None)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--runtime-default", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--root", help=argparse.SUPPRESS)
    parser.add_argument("--barrier", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args)
    if args.size_px < 256 or args.repeats < 1 or args.rounds < 1 or min(args.jobs) < 1:
        print("scripts/bench_jobs.py: --size-px >= 256, --repeats, --rounds and --jobs >= 1", file=sys.stderr)
        return 2
    import torch

    sys.path.insert(0, str(HERE))
    from bench import make_pair

    root, _ = make_pair(args.size_px, Path(args.cache), torch.device("cpu"))
    rounds = [{policy: measure_round(root, args.jobs, args.repeats, policy) for policy in args.policies}
              for _ in range(args.rounds)]
    results = {"size_px": args.size_px, "repeats": args.repeats, "cores": len(os.sched_getaffinity(0)),
               "cpu": _cpu_model(), "rounds": rounds}
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


if __name__ == "__main__":
    sys.exit(main())
