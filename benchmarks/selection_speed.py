"""Cost of Data Selection scores relative to one plain teacher inference pass, and their peak memory.

Side by side in one run, on the same data, teacher and batches (`TensorBatchLoader(train=False)`, batch 256):

(i)   one plain inference pass: `teacher(images)` under `torch.no_grad()` over the split;
(ii)  `score_dataset(teacher, data, "influence")`: EK-FAC self-influence of the classifier layer, end to end
      (the teacher pass, the statistics, the eigendecompositions, the scores, the metadata);
(iii) `score_dataset(teacher, data, "influence_exact")`: the explicit damped Hessian of the classifier layer
      (where it fits: C (d + 1) <= 12,000 parameters);
(iv)  a per-sample LiSSA estimate (Koh & Liang's influence-function code) extrapolated: one recursion step
      h <- v + (1 - damping) h - H_B h / scale costs one Hessian-vector product (HVP) on a mini-batch B; per sample
      it runs `--lissa-depth` steps (5,000) x `--lissa-repeats` (1), for each of the N samples. We time the step
      with autograd's double backward (as that code does) over the classifier layer alone, and over the whole
      network, at B = 1, and multiply out.

Times are medians of `--reps` repetitions, (i)-(iii) alternating. Teachers have random weights (seed 0): the cost
of these computations does not depend on the weight values. The goal is (ii)/(i) <= 1.3.

Peak memory: for two data set sizes, a fresh process per size measures the growth of its peak resident memory
(VmHWM, reset through /proc/self/clear_refs; glibc's mmap threshold fixed so freed tensors leave the process)
during an inference pass and during `influence` with the head inputs kept in memory (the default below 256 MiB)
and spilled to disk (`memory_limit_bytes=0`), and the peak of its numpy allocations (the O(N) output).

Run (from the repository root):
    python benchmarks/selection_speed.py
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import timm
import torch
import torch.nn.functional as F
from _machine import cpu_model, load_average
from scipy.stats import spearmanr

import kd_zoo  # noqa: F401  (registers the lrds_* models in timm)
from kd_zoo.data import TensorBatchLoader, TensorImageSet, load_tensor_split
from kd_zoo.selection import score_dataset

BATCH = 256


def synthetic(n: int, num_classes: int) -> TensorImageSet:
    """Random 32x32 images (the cost does not depend on the pixels) with random labels."""
    generator = torch.Generator().manual_seed(0)
    return TensorImageSet(
        images=torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=generator),
        labels=torch.randint(0, num_classes, (n,), generator=generator),
        sample_idx=torch.arange(n),
        class_names=[str(i) for i in range(num_classes)],
        fingerprint={"name": "synthetic", "split": "train", "num_rows": n, "num_classes": num_classes},
    )


def teacher_model(arch: str, num_classes: int) -> torch.nn.Module:
    torch.manual_seed(0)
    return timm.create_model(arch, num_classes=num_classes).eval()


def inference_pass(teacher: torch.nn.Module, data: TensorImageSet) -> float:
    start = time.perf_counter()
    with torch.no_grad():
        for batch in TensorBatchLoader(data, BATCH, train=False):
            teacher(batch["image"])
    return time.perf_counter() - start


def timed_score(teacher: torch.nn.Module, data: TensorImageSet, scorer: str) -> tuple[float, object]:
    start = time.perf_counter()
    result = score_dataset(teacher, data, scorer, batch_size=BATCH)
    return time.perf_counter() - start, result


def measure_speed(arch: str, data: TensorImageSet, label: str, reps: int, exact: bool) -> dict:
    teacher = teacher_model(arch, data.num_classes)
    d = teacher.get_classifier().in_features
    params = data.num_classes * (d + 1)
    inference_pass(teacher, data)  # warm-up
    times: dict[str, list[float]] = {"inference": [], "influence": [], "influence_exact": []}
    phases: list[dict] = []
    rho = None
    for rep in range(reps):  # alternating, so a change in the machine's load hits all three
        times["inference"].append(inference_pass(teacher, data))
        seconds, ekfac = timed_score(teacher, data, "influence")
        times["influence"].append(seconds)
        phases.append(ekfac.metadata["seconds"])
        if exact:
            seconds, oracle = timed_score(teacher, data, "influence_exact")
            times["influence_exact"].append(seconds)
            rho = float(spearmanr(ekfac.scores, oracle.scores)[0])
        print(f"  {label} rep {rep}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in times.items() if v), flush=True)
    med = {k: statistics.median(v) for k, v in times.items() if v}
    return {
        "label": label,
        "arch": arch,
        "rows": len(data),
        "classes": data.num_classes,
        "features": d,
        "params": params,
        "median": med,
        "ratio_influence": statistics.median(
            i / p for i, p in zip(times["influence"], times["inference"], strict=True)
        ),
        "ratio_exact": statistics.median(
            i / p for i, p in zip(times["influence_exact"], times["inference"], strict=True)
        )
        if exact
        else None,
        "min_ratio_influence": min(times["influence"]) / min(times["inference"]),
        "min_ratio_exact": min(times["influence_exact"]) / min(times["inference"]) if exact else None,
        "scoring_after_pass": statistics.median(p["scoring"] for p in phases),
        "all": times,
        "spearman": rho,
    }


def lissa_step_seconds(teacher: torch.nn.Module, data: TensorImageSet, whole_network: bool, steps: int) -> float:
    """Median seconds of one LiSSA recursion step with a B = 1 autograd HVP (see the module docstring)."""
    batch = next(iter(TensorBatchLoader(data, BATCH, train=False)))
    classifier = teacher.get_classifier()
    params = [p for p in teacher.parameters()] if whole_network else [classifier.weight, classifier.bias]
    with torch.no_grad():
        features = teacher.forward_head(teacher.forward_features(batch["image"]), pre_logits=True)

    def loss_of(i: int) -> torch.Tensor:
        if whole_network:
            return F.cross_entropy(teacher(batch["image"][i : i + 1]), batch["label"][i : i + 1])
        return F.cross_entropy(classifier(features[i : i + 1]), batch["label"][i : i + 1])

    v = [torch.randn_like(p) for p in params]
    h = [x.clone() for x in v]
    damping, scale = 0.01, 25.0
    seconds = []
    for step in range(steps + 2):
        start = time.perf_counter()
        grads = torch.autograd.grad(loss_of(step % BATCH), params, create_graph=True)
        hvp = torch.autograd.grad(sum((g * x).sum() for g, x in zip(grads, h, strict=True)), params)
        h = [a + (1 - damping) * b - c / scale for a, b, c in zip(v, h, hvp, strict=True)]
        if step >= 2:  # two warm-up steps
            seconds.append(time.perf_counter() - start)
    return statistics.median(seconds)


def peak_memory_child(arch: str, rows: int, classes: int, reps: int) -> None:
    """Run in a fresh process: peak-RSS growth (MiB) of an inference pass and of `influence` (memory / spilled),
    the largest of `reps` runs each, and the peak of Python / numpy allocations (tracemalloc) of `influence`."""
    import tracemalloc

    def status(key: str) -> float:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
        raise RuntimeError(f"no {key} in /proc/self/status")

    def growth(fn) -> float:
        worst = 0.0
        for _ in range(reps):
            Path("/proc/self/clear_refs").write_text("5")  # reset the peak (VmHWM) to the current RSS
            base = status("VmRSS")
            fn()
            worst = max(worst, status("VmHWM") - base)
        return worst

    data = synthetic(rows, classes)
    teacher = teacher_model(arch, classes)
    score_dataset(teacher, synthetic(BATCH, classes), "influence", batch_size=BATCH)  # warm-up, first-call memory
    result: dict = {"rows": rows}
    result["inference"] = growth(lambda: inference_pass(teacher, data))

    def run(limit: int | None) -> None:
        kwargs = {} if limit is None else {"memory_limit_bytes": limit}
        meta = score_dataset(teacher, data, "influence", batch_size=BATCH, **kwargs).metadata["head_inputs"]
        result["store_memory_" + ("spilled" if meta["spilled_to_disk"] else "memory")] = meta["peak_memory_bytes"]
        result["head_input_bytes"] = meta["bytes"]

    result["influence_memory"] = growth(lambda: run(None))
    result["influence_spilled"] = growth(lambda: run(0))
    tracemalloc.start()
    run(0)
    result["numpy_peak"] = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    print(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: stable timings on a shared machine)")
    parser.add_argument("--synthetic-rows", type=int, default=3000, help="rows of the 100-class synthetic set")
    parser.add_argument("--memory-rows", type=int, nargs=2, default=[1437, 50000], help="the two sizes")
    parser.add_argument("--memory-arch", default="lrds_resnet8")
    parser.add_argument("--lissa-depth", type=int, default=5000)
    parser.add_argument("--lissa-repeats", type=int, default=1)
    parser.add_argument("--lissa-steps", type=int, default=20, help="recursion steps timed")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "selection_speed.md"))
    parser.add_argument("--memory-reps", type=int, default=2, help="runs per memory figure (the largest is kept)")
    parser.add_argument("--_memory-child", nargs=4, metavar=("ARCH", "ROWS", "CLASSES", "REPS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args._memory_child:
        arch, rows, classes, reps = args._memory_child
        peak_memory_child(arch, int(rows), int(classes), int(reps))
        return

    command = "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]])
    load_before = load_average()
    started = time.perf_counter()
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads", flush=True)
    demo = load_tensor_split(None, "train")
    wide = synthetic(args.synthetic_rows, 100)
    speed = [
        measure_speed("lrds_resnet8x4", demo, "demo train (1,437 rows), ResNet8x4, 10 classes", args.reps, True),
        measure_speed("lrds_resnet8", demo, "demo train (1,437 rows), ResNet8, 10 classes", args.reps, True),
        measure_speed(
            "lrds_resnet8x4", wide, f"synthetic ({len(wide):,} rows), ResNet8x4, 100 classes", args.reps, False
        ),
    ]

    lissa = []
    for arch in ("lrds_resnet8x4", "lrds_resnet8"):
        teacher = teacher_model(arch, 10)
        for whole in (False, True):
            step = lissa_step_seconds(teacher, demo, whole, args.lissa_steps)
            lissa.append({"arch": arch, "whole": whole, "step": step})
            print(f"  LiSSA step {arch} {'network' if whole else 'classifier'}: {step * 1e3:.2f} ms", flush=True)

    memory = []
    for rows in args.memory_rows:
        child = subprocess.run(
            [
                sys.executable,
                __file__,
                "--threads",
                str(args.threads),
                "--_memory-child",
                args.memory_arch,
                str(rows),
                "100",
                str(args.memory_reps),
            ],
            capture_output=True,
            text=True,
            check=True,
            # a fixed mmap threshold: glibc then returns freed tensors to the OS at once, so the peak RSS follows
            # the live memory instead of what the allocator keeps cached (its default adapts the threshold)
            env=dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536"),
        )
        memory.append(json.loads(child.stdout.strip().splitlines()[-1]))
        print(f"  memory {memory[-1]}", flush=True)
    load_after = load_average()

    inference_of = {s["arch"]: s["median"]["inference"] for s in speed[:2]}
    lines = [
        "# Data Selection scores: cost relative to one teacher inference pass, and peak memory",
        "",
        f"Command: `{command}` (from the repository root), written by `benchmarks/selection_speed.py` "
        f"in {time.perf_counter() - started:.0f} s.",
        "",
        f"- Date: {datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- Machine: {os.cpu_count()} CPUs ({cpu_model()}), no GPU; load average {load_before} before, "
        f"{load_after} after (other jobs shared the machine when above 0)",
        f"- Software: Python {platform.python_version()}, torch {torch.__version__}, timm {timm.__version__}; "
        f"torch threads: {torch.get_num_threads()}",
        f"- Teachers: random weights (seed 0), eval mode, float32, batch {BATCH}; one process. (i) plain inference "
        "pass; (ii) `score_dataset(..., 'influence')` end to end; (iii) `score_dataset(..., 'influence_exact')`. "
        f"Seconds are medians of {args.reps} alternating repetitions; ratios are medians of the per-repetition "
        "ratios, and in brackets the ratio of the fastest repetitions (least disturbed by other jobs).",
        "",
        "| data, teacher | classifier params C(d+1) | (i) inference s | (ii) influence s | (ii)/(i) (best/best) "
        "| of which after the pass s | (iii) influence_exact s | (iii)/(i) (best/best) | Spearman (ii) vs (iii) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for s in speed:
        exact = s["median"].get("influence_exact")
        lines.append(
            f"| {s['label']} | {s['params']:,} | {s['median']['inference']:.2f} | {s['median']['influence']:.2f} "
            f"| {s['ratio_influence']:.2f}x ({s['min_ratio_influence']:.2f}x) | {s['scoring_after_pass']:.3f} "
            + (
                f"| {exact:.2f} | {s['ratio_exact']:.2f}x ({s['min_ratio_exact']:.2f}x) | {s['spearman']:.4f} |"
                if exact is not None
                else f"| not run ({s['params'] ** 2 * 8 / 2**30:.1f} GiB Hessian) | - | - |"
            )
        )
    goal = max(s["ratio_influence"] for s in speed)
    lines += [
        "",
        f"Goal (ii)/(i) <= 1.3: {'met' if goal <= 1.3 else 'NOT met'} (worst {goal:.2f}x). The Spearman column "
        "compares random-weight teachers; tests/test_selection.py checks it on a trained one (>= 0.99).",
        "",
        f"## (iv) Per-sample LiSSA, extrapolated (depth {args.lissa_depth:,} x repeats {args.lissa_repeats} x N)",
        "",
        "One recursion step = an autograd double-backward HVP on one sample (B = 1) + the update, median of "
        f"{args.lissa_steps} timed steps. Cost for the 1,437 demo samples, against (i) for the same teacher:",
        "",
        "| teacher (10 classes) | HVP over | step ms | per sample s | all 1,437 samples h | x inference pass |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for item in lissa:
        per_sample = item["step"] * args.lissa_depth * args.lissa_repeats
        total = per_sample * len(demo)
        lines.append(
            f"| {item['arch']} | {'the whole network' if item['whole'] else 'the classifier layer'} "
            f"| {item['step'] * 1e3:.2f} | {per_sample:.1f} | {total / 3600:.1f} "
            f"| {total / inference_of[item['arch']]:,.0f}x |"
        )
    lines += [
        "",
        f"## Peak memory ({args.memory_arch}, 100 classes, synthetic data)",
        "",
        "Growth of the peak resident memory (VmHWM) of a fresh process during each call over its resident memory "
        "before the call (the images, the model and a warm-up call are already there), the largest of "
        f"{args.memory_reps} runs, with glibc's mmap threshold fixed at 64 KiB (`MALLOC_MMAP_THRESHOLD_=65536`) so "
        "freed tensors go back to the OS and the peak follows the live memory (with the adaptive default the same "
        "call measured anywhere from 30 to 260 MiB). Head inputs: the per-sample features and log-probabilities "
        "the scorers read, 4 (d + C) + 16 bytes a sample; the store's peak is what it held in memory at once. "
        "numpy: the peak of Python / numpy allocations (tracemalloc) of a spilled run, i.e. the O(N) output "
        "(index, score, prediction, label and their copies while the score set is built).",
        "",
        "| rows | (i) inference MiB | influence, in memory MiB | influence, spilled MiB | head inputs MiB "
        "| store peak in memory / spilled MiB | numpy peak MiB |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for m in memory:
        lines.append(
            f"| {m['rows']:,} | {m['inference']:.1f} | {m['influence_memory']:.1f} | {m['influence_spilled']:.1f} "
            f"| {m['head_input_bytes'] / 2**20:.1f} | {m['store_memory_memory'] / 2**20:.1f} / "
            f"{m['store_memory_spilled'] / 2**20:.1f} | {m['numpy_peak'] / 2**20:.1f} |"
        )
    lines += [
        "",
        "Every repetition (seconds):",
        "",
    ]
    for s in speed:
        lines.append(
            f"- {s['label']}: " + "; ".join(f"{k} {', '.join(f'{x:.2f}' for x in v)}" for k, v in s["all"].items() if v)
        )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
