"""Training benchmark of the TransferTraj model on GENERATED inputs: step rate, peak memory, inference.

    .venv/bin/python bench/train.py --quick      # under a minute: 64x60 and 64x120, few steps
    .venv/bin/python bench/train.py              # more steps; CUDA rows too when a GPU is present
    .venv/bin/python bench/train.py --json out.json
    .venv/bin/python bench/train.py --before 1545dec   # A/B: that commit's model/ against this one, alternated

Every measurement runs in its own child process (this file with --child); the peak memory is that
child's ru_maxrss (CUDA: also torch.cuda.max_memory_allocated), never the driver's.

--before COMMIT: the training step of "ours" at 64 x 120 with the model package (model/) of COMMIT, taken
with `git archive COMMIT model` into a temporary directory, and with the working tree's, one child each,
alternated (before, after, before, ...) for --pairs pairs, at one torch thread, so both see the same
machine; the table gives process CPU seconds per step (steadier than wall time on shared cores), peak RSS
and the loss (the same maths gives the same loss).

Variants:
- ours: the model as trained (d=128, 2 RTTE layers, 8 experts, top-4), POI/road as per-point density
  vectors precomputed by the feature pipeline, one optimizer step per batch (pretraining mask).
- dense: the published way of building the POI modality, written here for comparison: every point
  takes the mean of the (trainable) embeddings of all POIs of the city within 100 m, through a dense
  (B, L, n_POI, d) tensor over ~6,500 POIs (Porto), micro-batched over trajectories to fit in memory.
  The rest of the model is the same.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.history import append_rows  # noqa: E402

RESULTS = REPO / "bench" / "results"

REFERENCE = [  # s/step at batch 64 x 120 on the same 2 cores (from the project's issue), peak GB or None
    ("UniTraj (published, 2.38 M params, no context)", 0.77, None),
    ("plain-torch stand-in of TransferTraj's compute", 0.95, None),
    ("published TransferTraj implementation", 41.0, 8.7),
]
N_POI = 6_500  # Porto: 6,529 POIs after preparation
POI_TEXT_DIM = 256  # size of the (generated) POI text embeddings the dense variant projects to d
POI_DIM, ROAD_DIM = 16, 8  # density vectors of "ours" (categories + total; road classes + nearest road)
BATCH = 64


# ------------------------------------------------------------------------------------------ child side


def generated_samples(n_traj: int, n_points: int, seed: int = 0) -> list[dict]:
    """GENERATED drives: 15 s steps at 5-12 m/s in an 11 x 5 km box, densities from position."""
    import numpy as np

    rng = np.random.default_rng(seed)
    out = []
    for i in range(n_traj):
        heading = rng.uniform(0, 2 * np.pi) + np.cumsum(rng.normal(0, 0.15, n_points))
        step = np.stack([np.cos(heading), np.sin(heading)], 1) * rng.uniform(5, 12) * 15.0
        step[0] = 0
        rel = np.cumsum(step, 0)
        origin = np.array([rng.uniform(0, 11_000), rng.uniform(0, 5_000)])
        t = np.arange(n_points) * 0.25
        time_feats = np.stack([np.full(n_points, i % 7), np.full(n_points, 8 + i % 12), (30 + t) % 60, t], 1)
        absolute = origin + rel
        out.append(
            {
                "row": i,
                "xy": rel.astype(np.float32),
                "time": time_feats.astype(np.float32),
                "poi": np.log1p(np.abs(np.sin(absolute[:, :1] / 400 + np.arange(POI_DIM)))).astype(np.float32) * 3,
                "road": np.abs(np.cos(absolute[:, 1:] / 300 + np.arange(ROAD_DIM))).astype(np.float32),
                "poi_missing": np.zeros((n_points, POI_DIM), bool),
                "road_missing": np.zeros(n_points, bool),
                "context_missing": False,
                "origin": origin + [530_000.0, 4_553_000.0],
            }
        )
    return out


class DensePoiPool:
    """The published POI modality: mean of the embeddings of all POIs within radius, densely."""

    def __init__(self, *, d: int, device, radius_m: float = 100.0, micro_batch: int = 4, seed: int = 0):
        import torch

        g = torch.Generator().manual_seed(seed)
        self.poi_xy = (torch.rand(N_POI, 2, generator=g) * torch.tensor([11_000.0, 5_000.0])).to(device)  # city metres
        self.poi_text = torch.randn(N_POI, POI_TEXT_DIM, generator=g).to(device)  # generated "text embeddings"
        self.proj = torch.nn.Linear(POI_TEXT_DIM, d).to(device)
        self.radius_m, self.micro_batch = radius_m, micro_batch

    def parameters(self):
        return self.proj.parameters()

    def __call__(self, abs_xy):  # (B, L, 2) city metres -> (B, L, d)
        import torch

        emb = self.proj(self.poi_text)  # (n_POI, d)
        out = []
        for chunk in abs_xy.split(self.micro_batch):  # (b, L, 2)
            dist = torch.cdist(chunk.reshape(-1, 2), self.poi_xy).view(*chunk.shape[:2], N_POI)  # (b, L, n_POI)
            within = (dist <= self.radius_m).to(emb.dtype)  # distance (not squared) against the radius
            pooled = (within.unsqueeze(-1) * emb).sum(dim=2)  # (b, L, n_POI, d) -> (b, L, d)
            out.append(pooled / within.sum(-1, keepdim=True).clamp(min=1))
        return torch.cat(out)  # (B, L, d)


def use_model_package(model_dir: str) -> None:
    """Make `transfertraj.model` the package in model_dir (another commit's model/, --before) for this
    process: registered before any of its modules is imported, so every `transfertraj.model.X` is read
    from there. The rest of `transfertraj` stays the working tree's."""
    import importlib.abc
    import importlib.machinery
    import importlib.util

    import transfertraj

    class OnlyThere(importlib.abc.MetaPathFinder):
        """`transfertraj.model.X` from model_dir or not at all: without it the editable install's finder
        would hand out the working tree's module where model_dir has none (a newer module)."""

        def find_spec(self, name, path, target=None):
            if not name.startswith("transfertraj.model."):
                return None
            found = importlib.machinery.PathFinder.find_spec(name, path)
            if found is None:
                raise ModuleNotFoundError(f"{name} is not in {model_dir}", name=name)
            return found

    sys.meta_path.insert(0, OnlyThere())
    init = Path(model_dir) / "__init__.py"
    spec = importlib.util.spec_from_file_location("transfertraj.model", init, submodule_search_locations=[model_dir])
    module = importlib.util.module_from_spec(spec)
    sys.modules["transfertraj.model"] = module
    spec.loader.exec_module(module)
    transfertraj.model = module


def optimizer_for(params, lr: float):
    """The optimizer as the model package's training builds it: model/optimizer.py where the package has
    it (torch's Adam update without importing torch._dynamo), else torch.optim.Adam (older commits)."""
    try:
        from transfertraj.model.optimizer import adam
    except ImportError:
        import torch

        return torch.optim.Adam(params, lr=lr)
    return adam(params, lr=lr)


def heap_for_training(choice: str = "package"):
    """A context manager: the heap settings the model package's training runs under (model/heap.py) where
    it has them, else glibc's defaults (older commits); choice "default" or "reused" forces one."""
    import contextlib

    if choice == "default":
        return contextlib.nullcontext(False)
    if choice == "reused":  # the working tree's model/heap.py, also for an older package that has none
        import importlib.util

        spec = importlib.util.spec_from_file_location("bench_heap", REPO / "model" / "heap.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module.reused_heap()
    try:
        from transfertraj.model.heap import reused_heap
    except ImportError:
        return contextlib.nullcontext(False)
    return reused_heap()


def child(spec: dict) -> dict:
    if spec.get("model_dir"):
        use_model_package(spec["model_dir"])
    import contextlib

    import torch  # noqa: F401 - imported before the heap settings, as training imports it before fit()

    # the +trim variant measures glibc's own settings from the environment: mallopt would override them
    heap = contextlib.nullcontext(False) if spec.get("malloc_trim") else heap_for_training(spec.get("heap", "package"))
    with heap as kept:
        return dict(_child(spec), heap_kept=kept)


def _child(spec: dict) -> dict:
    import numpy as np
    import psutil
    import torch

    from transfertraj.model.device import limit_threads
    from transfertraj.model.trajectory_data import Collator, to_device
    from transfertraj.model.transfertraj import ModelArgs, TransferTraj, count_parameters

    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])  # the A/B: the same thread count for both sides
    else:
        limit_threads()  # as training does (model.train.start_runtime): the idle cores, see core.cores
    torch.manual_seed(0)
    device = torch.device(spec["device"])
    L, variant = spec["points"], spec["variant"]
    samples = generated_samples(BATCH, L)
    batch, targets = Collator(task="pretrain", seed=0)(samples)
    batch, targets = to_device(batch, device), to_device(targets, device)
    dense = None
    if variant == "dense":
        args = ModelArgs(poi_dim=128, road_dim=ROAD_DIM)
        dense = DensePoiPool(d=128, device=device)
        no_missing = torch.zeros(BATCH, L, 128, dtype=torch.bool, device=device)
        abs_xy = (
            torch.from_numpy(np.stack([s["xy"] + s["origin"] - [530_000.0, 4_553_000.0] for s in samples]))
            .float()
            .to(device)
        )
    else:
        args = ModelArgs(poi_dim=POI_DIM, road_dim=ROAD_DIM)
    model = TransferTraj(args=args).to(device)
    params = list(model.parameters()) + (list(dense.parameters()) if dense else [])
    opt = optimizer_for(params, lr=1e-3)
    autocast = (
        torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast("cpu", enabled=False)
    )
    rss_before = psutil.Process().memory_info().rss

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    def inputs(b: dict) -> dict:
        """The dense variant swaps the density vectors for the densely pooled POI embeddings."""
        return dict(b, poi=dense(abs_xy), poi_missing=no_missing) if dense else b

    def step():  # as model/train.py steps: gradients freed right after the update, before the next forward
        with autocast:
            _, loss = model(inputs(batch), targets)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    for _ in range(spec["warmup"]):
        step()
    sync()
    profiler = None
    if spec.get("profile"):  # CPU time by operator over the timed steps (--profile): adds its own overhead
        profiler = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU])
        profiler.__enter__()
    t0, c0, r0 = time.perf_counter(), time.process_time(), resource.getrusage(resource.RUSAGE_SELF)
    for _ in range(spec["steps"]):
        loss = step()
    sync()
    s_per_step = (time.perf_counter() - t0) / spec["steps"]
    cpu_s_per_step = (time.process_time() - c0) / spec["steps"]
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    if profiler is not None:
        profiler.__exit__(None, None, None)
        table = profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=spec["profile"])
        Path(spec["profile_out"]).write_text(table)

    infer_ms = None
    if spec["infer_reps"]:
        model.eval()
        tp_batch, _ = Collator(task="tp", seed=0)(samples)
        tp_batch = to_device(tp_batch, device)
        with torch.no_grad(), autocast:
            model(inputs(tp_batch))
            sync()
            t0 = time.perf_counter()
            for _ in range(spec["infer_reps"]):
                model(inputs(tp_batch))
            sync()
        infer_ms = (time.perf_counter() - t0) / spec["infer_reps"] / BATCH * 1000
    return {
        **spec,
        "s_per_step": s_per_step,
        "cpu_s_per_step": cpu_s_per_step,  # process CPU time, all threads
        "sys_s_per_step": (r1.ru_stime - r0.ru_stime) / spec["steps"],  # of it in the kernel (page faults)
        "page_faults_per_step": (r1.ru_minflt - r0.ru_minflt) / spec["steps"],
        "load_avg_1min": os.getloadavg()[0],
        "steps_per_s": 1 / s_per_step,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,  # Linux: KiB
        "rss_before_mb": rss_before / 2**20,
        "cuda_peak_mb": torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None,
        "infer_ms_per_traj": infer_ms,
        "params": count_parameters(model) + (sum(p.numel() for p in dense.parameters()) if dense else 0),
        "threads": torch.get_num_threads(),
        "loss": loss.item(),
        "dynamo_imported": "torch._dynamo" in sys.modules,
    }


# ------------------------------------------------------------------------------------------ driver side


def run_child(spec: dict) -> dict:
    env = {**os.environ, **({"MALLOC_TRIM_THRESHOLD_": "0"} if spec.get("malloc_trim") else {})}
    proc = subprocess.run(
        [sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True, text=True, env=env
    )
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark child failed for {spec}:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def plan(quick: bool, cuda: bool) -> list[dict]:
    specs = []
    devices = ["cpu"] + (["cuda"] if cuda else [])
    for device in devices:
        fast = device == "cuda"
        for L in (60, 120):
            specs.append(
                {
                    "variant": "ours",
                    "device": device,
                    "points": L,
                    "warmup": 1 if quick else 3,
                    "steps": (3 if quick else 10) * (5 if fast else 1),
                    "infer_reps": 3 if quick else 10,
                }
            )
        if device == "cpu":  # same work, glibc returning freed heap memory at once (see README)
            specs.append(
                {
                    "variant": "ours",
                    "malloc_trim": True,
                    "device": device,
                    "points": 120,
                    "warmup": 1 if quick else 3,
                    "steps": 3 if quick else 10,
                    "infer_reps": 3 if quick else 10,
                }
            )
        for L in (120,) if quick else (60, 120):
            specs.append(
                {
                    "variant": "dense",
                    "device": device,
                    "points": L,
                    "warmup": 0 if quick else 1,
                    "steps": 1 if quick else 2,
                    "infer_reps": 1,
                }
            )
    return specs


def report(results: list[dict]) -> str:
    lines = [
        "TransferTraj training benchmark (inputs: GENERATED trajectories and POIs; batch 64; Adam step)",
        f"{'variant':11s} {'device':6s} {'B x L':>8s} {'s/step':>8s} {'steps/s':>8s} {'CPU s/step':>10s} {'peak RSS MB':>12s} "
        f"{'CUDA MB':>8s} {'infer ms/traj':>14s} {'params':>10s} {'load':>5s}",
    ]
    for r in results:
        cuda = f"{r['cuda_peak_mb']:.0f}" if r["cuda_peak_mb"] is not None else "-"
        name = r["variant"] + ("+trim" if r.get("malloc_trim") else "")
        lines.append(
            f"{name:11s} {r['device']:6s} {BATCH:>3d} x {r['points']:<3d} {r['s_per_step']:8.3f} {r['steps_per_s']:8.2f} "
            f"{r['cpu_s_per_step']:10.2f} {r['peak_rss_mb']:12.0f} {cuda:>8s} {r['infer_ms_per_traj']:14.3f} {r['params']:10,d} "
            f"{r['load_avg_1min']:5.1f}"
        )
    lines.append(
        "load: the machine's 1-minute load average during the run (2 cores; above 2 means other work shared them)"
    )
    lines.append("")
    by = {(r["variant"], r["device"], r["points"]): r for r in results if not r.get("malloc_trim")}
    for (variant, device, L), r in sorted(by.items()):
        if variant != "ours" or ("dense", device, L) not in by:
            continue
        ratio = by[("dense", device, L)]["s_per_step"] / r["s_per_step"]
        ok = "met" if ratio >= 20 else "NOT met"
        lines.append(f"step-rate ratio ours / dense, {device}, 64 x {L}: {ratio:.1f}x (target >= 20x: {ok})")
        cpu = by[("dense", device, L)]["cpu_s_per_step"] / r["cpu_s_per_step"]
        lines.append(
            f"  the same by process CPU time per step: {cpu:.1f}x (steadier than wall time when other work "
            "shares the cores; it leaves out time spent waiting for a core)"
        )
    ours = by.get(("ours", "cpu", 120))
    if ours:
        lines.append(
            f"ours on CPU at 64 x 120: {ours['s_per_step']:.3f} s/step (target <= 2 s: {'met' if ours['s_per_step'] <= 2 else 'NOT met'}), "
            f"peak RSS {ours['peak_rss_mb'] / 1024:.2f} GB (target <= 1.5 GB: {'met' if ours['peak_rss_mb'] <= 1536 else 'NOT met'}; "
            f"{ours['rss_before_mb']:.0f} MB of it is the interpreter, torch and the batch before the first step), "
            f"{ours['threads']} threads"
        )
        trim = [r for r in results if r.get("malloc_trim")]
        if trim:
            t = trim[0]
            lines.append(
                f"same work with MALLOC_TRIM_THRESHOLD_=0 (glibc returns freed memory at once): peak RSS "
                f"{t['peak_rss_mb'] / 1024:.2f} GB at {t['s_per_step']:.3f} s/step ({t['cpu_s_per_step']:.2f} CPU s/step)"
            )
        lines.append("reference figures at 64 x 120 on 2 cores (not measured here):")
        for name, s, gb in REFERENCE:
            mem = f", {gb} GB peak" if gb else ""
            lines.append(f"  {name:50s} {s:6.2f} s/step{mem}  -> ours is {s / ours['s_per_step']:.1f}x its step rate")
    return "\n".join(lines)


def ab(
    before: str, *, pairs: int, warmup: int, steps: int, profile: int = 0, heap: str = "package"
) -> tuple[list[dict], str, str]:
    """--before: (results in run order, the report, the stamp). Children alternate before/after."""
    import tempfile

    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    commit = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short", before], capture_output=True, text=True, check=True
    ).stdout.strip()
    head = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "-C", str(REPO), "status", "--porcelain", "--", "model"], capture_output=True, text=True, check=True
    ).stdout.strip()
    after = f"{head}{'+changes' if dirty else ''}"
    base = {"variant": "ours", "device": "cpu", "points": 120, "warmup": warmup, "steps": steps, "infer_reps": 0}
    base.update(threads=1, heap=heap)
    uptime = [os.getloadavg()]
    results = []
    with tempfile.TemporaryDirectory(prefix="train-before-") as tmp:
        archive = subprocess.run(["git", "-C", str(REPO), "archive", commit, "model"], capture_output=True, check=True)
        subprocess.run(["tar", "-x", "-C", tmp], input=archive.stdout, check=True)
        for i in range(pairs):
            for side in ("before", "after"):
                spec = dict(base, model_dir=str(Path(tmp) / "model") if side == "before" else None)
                if profile:
                    spec.update(profile=profile, profile_out=str(RESULTS / f"train-profile-{stamp}-{side}-{i}.txt"))
                t0 = time.perf_counter()
                r = run_child(spec)
                r.update(side=side, commit=commit if side == "before" else after, pair=i)
                results.append(r)
                print(
                    f"  pair {i + 1} {side}: {r['cpu_s_per_step']:.3f} CPU s/step, peak {r['peak_rss_mb']:.0f} MB "
                    f"({time.perf_counter() - t0:.0f} s, load {r['load_avg_1min']:.2f})",
                    file=sys.stderr,
                )
    uptime.append(os.getloadavg())
    return results, ab_report(results, uptime, stamp), stamp


def ab_report(results: list[dict], uptime: list[tuple], stamp: str) -> str:
    import statistics

    b = [r for r in results if r["side"] == "before"]
    a = [r for r in results if r["side"] == "after"]
    r0 = results[0]
    lines = [
        f"Training step A/B, ours 64 x {r0['points']} on CPU, {r0['threads']} torch thread, {r0['warmup']} warm-up + "
        f"{r0['steps']} timed steps per child, children alternated (inputs: GENERATED)",
        f"before = model/ of {b[0]['commit']}, after = model/ of {a[0]['commit']}",
        f"{'pair':>4s}  {'before CPU s/step':>17s} {'peak MB':>8s} {'load':>5s}   {'after CPU s/step':>16s} "
        f"{'peak MB':>8s} {'load':>5s}   {'after/before CPU':>16s}",
    ]
    for x, y in zip(b, a):
        lines.append(
            f"{x['pair'] + 1:4d}  {x['cpu_s_per_step']:17.3f} {x['peak_rss_mb']:8.0f} {x['load_avg_1min']:5.2f}   "
            f"{y['cpu_s_per_step']:16.3f} {y['peak_rss_mb']:8.0f} {y['load_avg_1min']:5.2f}   "
            f"{y['cpu_s_per_step'] / x['cpu_s_per_step']:16.3f}"
        )
    cpu_b = statistics.mean(r["cpu_s_per_step"] for r in b)
    cpu_a = statistics.mean(r["cpu_s_per_step"] for r in a)
    ratio = cpu_a / cpu_b
    peak_a = max(r["peak_rss_mb"] for r in a)

    def kernel(side: list[dict]) -> str:
        return ", ".join(f"{r['sys_s_per_step']:.3f} ({r['page_faults_per_step']:,.0f})" for r in side)

    lines += [
        f"mean  {cpu_b:17.3f} {statistics.mean(r['peak_rss_mb'] for r in b):8.0f} {'':5s}   {cpu_a:16.3f} "
        f"{statistics.mean(r['peak_rss_mb'] for r in a):8.0f} {'':5s}   {ratio:16.3f}",
        f"after's CPU per step: {ratio:.3f} x before's (target <= 1.10: {'met' if ratio <= 1.10 else 'NOT met'}); "
        f"after's peak RSS at most {peak_a:,.0f} MB (target <= 1,500: {'met' if peak_a <= 1500 else 'NOT met'}); "
        f"median of the pairs' ratios {statistics.median(y['cpu_s_per_step'] / x['cpu_s_per_step'] for x, y in zip(b, a)):.3f}",
        f"losses after the timed steps: before {sorted({r['loss'] for r in b})}, after {sorted({r['loss'] for r in a})} "
        f"({'equal' if {r['loss'] for r in b} == {r['loss'] for r in a} else 'DIFFERENT'})",
        f"system CPU s/step (page faults per step): before {kernel(b)}; after {kernel(a)}",
        f"torch._dynamo imported: before {sorted({r['dynamo_imported'] for r in b})}, after "
        f"{sorted({r['dynamo_imported'] for r in a})}",
        f"heap kept between steps (model/heap.py): before {sorted({r['heap_kept'] for r in b})}, after "
        f"{sorted({r['heap_kept'] for r in a})}",
        f"machine: {platform.node()}, {os.cpu_count()} CPU(s), load average (1, 5, 15 min) "
        f"{' '.join(f'{v:.2f}' for v in uptime[0])} at start, {' '.join(f'{v:.2f}' for v in uptime[1])} at end ({stamp})",
    ]
    return "\n".join(lines)


def _history_row(r: dict, stamp: str, *, variant: str) -> dict:
    """The train-history.csv fields every run of a child has (bench/history.py keeps the file's column order)."""
    return {
        "date": stamp,
        "host": platform.node(),
        "cores": os.cpu_count(),
        "load_1min_child": round(r["load_avg_1min"], 2),
        "variant": variant,
        "device": r["device"],
        "batch": BATCH,
        "points": r["points"],
        "steps": r["steps"],
        "s_per_step": round(r["s_per_step"], 4),
        "cpu_s_per_step": round(r["cpu_s_per_step"], 3),
        "peak_rss_mb": round(r["peak_rss_mb"]),
        "threads": r["threads"],
    }


def append_ab(results: list[dict], text: str, stamp: str) -> Path:
    """The A/B's rows to train-history.csv (variant "ours@<commit>", "before"/"after" in ab_side) and its
    report to train-ab-<stamp>.md."""
    rows = [
        {
            **_history_row(r, stamp, variant=f"ours@{r['commit']}"),
            "ab_side": r["side"],
            "sys_s_per_step": round(r["sys_s_per_step"], 3),
            "page_faults_per_step": round(r["page_faults_per_step"]),
        }
        for r in results
    ]
    path = append_rows(RESULTS / "train-history.csv", rows)
    (RESULTS / f"train-ab-{stamp}.md").write_text("```\n" + text + "\n```\n")
    return path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="few steps, dense variant at 64 x 120 only (under a minute)")
    p.add_argument("--cpu-only", action="store_true", help="skip the CUDA rows even when a GPU is present")
    p.add_argument("--json", type=Path, help="also write the raw figures here")
    p.add_argument(
        "--before", metavar="COMMIT", help="A/B of the training step: COMMIT's model/ against the working tree's"
    )
    p.add_argument("--pairs", type=int, default=3, help="--before: before/after pairs of children (default 3)")
    p.add_argument("--warmup", type=int, default=2, help="--before: warm-up steps per child (default 2)")
    p.add_argument("--steps", type=int, default=6, help="--before: timed steps per child (default 6)")
    p.add_argument(
        "--profile",
        type=int,
        default=0,
        metavar="ROWS",
        help="--before: write each child's top ROWS operators by CPU time",
    )
    p.add_argument(
        "--heap",
        choices=["package", "default", "reused"],
        default="package",
        help="--before: glibc's heap as each side's training sets it (package: model/heap.py where it exists), "
        "or the same for both (default: glibc's; reused: model/heap.py, from the working tree for both)",
    )
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return 0
    if args.before:
        results, text, stamp = ab(
            args.before, pairs=args.pairs, warmup=args.warmup, steps=args.steps, profile=args.profile, heap=args.heap
        )
        print(text)
        print(f"appended to {append_ab(results, text, stamp)}")
        if args.json:
            args.json.write_text(json.dumps(results, indent=2))
        return 0
    import torch

    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    load_start = os.getloadavg()[0]
    results = []
    for spec in plan(args.quick, torch.cuda.is_available() and not args.cpu_only):
        t0 = time.perf_counter()
        results.append(run_child(spec))
        print(
            f"  measured {spec['variant']} {spec['device']} 64x{spec['points']} in {time.perf_counter() - t0:.1f}s",
            file=sys.stderr,
        )
    text = (
        report(results)
        + f"\nmachine: {platform.node()}, {os.cpu_count()} CPU(s), load average {load_start:.1f} at start, {os.getloadavg()[0]:.1f} at end ({stamp})"
    )
    print(text)
    print(f"appended to {append_results(results, text, stamp, load_start)}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


def append_results(results: list[dict], text: str, stamp: str, load_start: float) -> Path:
    """One dated row per measurement appended to bench/results/train-history.csv (with the ratio to the
    dense variant of the same run and the machine's load); the printed report to train-<stamp>.md."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    dense = {(r["device"], r["points"]): r["s_per_step"] for r in results if r["variant"] == "dense"}
    rows = []
    for r in results:
        d = dense.get((r["device"], r["points"]))
        rows.append(
            {
                **_history_row(r, stamp, variant=r["variant"] + ("+trim" if r.get("malloc_trim") else "")),
                "load_1min_start": round(load_start, 2),
                "infer_ms_per_traj": round(r["infer_ms_per_traj"], 3),
                "allocator": r.get("allocator", ""),
                "dense_over_this": round(d / r["s_per_step"], 2) if d and r["variant"] != "dense" else "",
            }
        )
    path = RESULTS / "train-history.csv"
    append_rows(path, rows)
    (RESULTS / f"train-{stamp}.md").write_text("```\n" + text + "\n```\n")
    return path


if __name__ == "__main__":
    sys.exit(main())
