"""Does LR + DS help? Students trained on the embedded real data (scikit-learn digits), several seeds, one table.

    python benchmarks/quality.py                 # main table + ablation, ~25 min on a quiet 2-CPU machine
    python benchmarks/quality.py --no-ablation   # the main table only

What is scaled down from the paper's CIFAR-100 recipe, and why: the data are the 1,437 / 360 digit images that ship
with scikit-learn (the only real images offline here), upsampled to 32x32 RGB; the teacher is a WRN-16-2 trained
for only `--teacher-epochs` epochs (lr 0.05, x0.1 at 60 % and 80 %), so that it is stronger than the students yet
still makes real mistakes on its training set (the paper's premise: LR needs wrong soft labels to revise); the
student is a ResNet-8 trained for `--epochs` epochs (lr 0.05, x0.1 at 60 % and 80 % of training) instead of 240.
Everything else is the library's defaults: KD at T = 4 with CE 0.1 / KD 0.9, LR with eta 0.8, lambda1 4,
lambda2 1, DS keeping the 80 % highest-influence samples (EK-FAC self-influence of the teacher's classifier layer).

Variants (each over `--seeds`): CE only; vanilla KD; KD + LR; KD + DS; KD + LR + DS; KD + LR + DS with a random
80 % instead of the influence ranking. Ablation: the lowest-score 80 % (the opposite reading of Table II),
eta 0.5, lambda1 1. The teacher and its scores are shared by all runs (seed 0). Results: benchmarks/results/
quality.md (+ quality.json, per-run logs in quality_logs/, and quality_time_vs_accuracy.png); the README's table
is rewritten between its `quality` markers.
"""

import argparse
import datetime
import json
import os
import platform
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import timm
import torch
from _machine import cpu_model, load_average
from accelerate import Accelerator
from accelerate.utils import set_seed

import kd_zoo
from kd_zoo.data import TensorBatchLoader, load_tensor_split
from kd_zoo.engine import (
    Distiller,
    FitOptions,
    Supervised,
    evaluate_accuracy,
    fit,
    freeze,
    sgd,
    step_lr,
    train_supervised,
)
from kd_zoo.methods import create_method
from kd_zoo.revision import LabelRevision
from kd_zoo.selection import score_dataset

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
TEACHER, STUDENT = "lrds_wrn_16_2", "lrds_resnet8"


@dataclass(frozen=True)
class Variant:
    name: str
    label: str
    method: str | None = "kd"  # None: CE only
    lr: bool = False
    ds: str | None = None  # selection strategy, or None for DS off
    eta: float = 0.8
    lambda1: float = 4.0
    ablation: bool = False


VARIANTS = [
    Variant("ce", "CE only", method=None),
    Variant("kd", "vanilla KD"),
    Variant("kd_lr", "KD + LR", lr=True),
    Variant("kd_ds", "KD + DS", ds="highest"),
    Variant("kd_lr_ds", "KD + LR + DS", lr=True, ds="highest"),
    Variant("kd_lr_ds_random", "KD + LR + DS (random 80 %)", lr=True, ds="random"),
    Variant("kd_lr_ds_lowest", "KD + LR + DS (lowest-score 80 %)", lr=True, ds="lowest", ablation=True),
    Variant("kd_lr_ds_eta05", "KD + LR + DS, eta 0.5", lr=True, ds="highest", eta=0.5, ablation=True),
    Variant("kd_lr_ds_lambda1", "KD + LR + DS, lambda1 1", lr=True, ds="highest", lambda1=1.0, ablation=True),
]


@dataclass
class Run:
    variant: str
    seed: int
    best_top1: float
    last_top1: float
    seconds: float
    history: list = field(default_factory=list)


def _loaders(train, test, seed):
    return TensorBatchLoader(train, 64, train=True, seed=seed), TensorBatchLoader(test, 256, train=False, seed=seed)


def train_teacher(accelerator, train, test, epochs, work):
    set_seed(0)
    model = timm.create_model(TEACHER, num_classes=len(train.class_names))
    train_loader, test_loader = _loaders(train, test, 0)
    milestones = [round(0.6 * epochs), round(0.8 * epochs)]
    options = FitOptions(epochs, step_lr(0.05, milestones), progress=False, log_every=10**9)
    teacher, _ = train_supervised(
        accelerator, model, train_loader, test_loader, options, run_dir=work / "teacher", lr=0.05
    )
    teacher = freeze(teacher)
    accelerator.free_memory()
    return teacher


def run_variant(accelerator, variant, seed, teacher, train, test, scores, epochs, work) -> Run:
    set_seed(seed)
    student = timm.create_model(STUDENT, num_classes=len(train.class_names))
    if variant.method is None:
        model, mask = Supervised(student), None
    else:
        revision = LabelRevision(eta=variant.eta, lambda1=variant.lambda1) if variant.lr else None
        model = Distiller(student, create_method(variant.method, student, teacher), revision)
        mask = scores.distill_mask(0.8, variant.ds, seed) if variant.ds else None
    optimizer = sgd(model, 0.05)
    model, optimizer = accelerator.prepare(model, optimizer)
    train_loader, test_loader = _loaders(train, test, seed)
    milestones = [round(0.6 * epochs), round(0.8 * epochs)]
    start = time.perf_counter()
    options = FitOptions(epochs, step_lr(0.05, milestones), progress=False, log_every=10**9, checkpoint_every=10**9)
    result = fit(
        accelerator,
        model,
        optimizer,
        train_loader,
        test_loader,
        options,
        run_dir=work / f"{variant.name}_{seed}",
        teacher=teacher,
        distill_mask=mask,
    )
    seconds = time.perf_counter() - start
    accelerator.free_memory()
    return Run(variant.name, seed, result.best_top1, result.last_top1, seconds, result.history)


def _mean_std(values):
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def table(runs, variants) -> list[str]:
    base = {r.seed: r for r in runs if r.variant == "kd"}
    lines = [
        "| variant | top-1 best | top-1 last | vs vanilla KD (last) | seconds / run |",
        "|---|---:|---:|---:|---:|",
    ]
    for v in variants:
        rs = [r for r in runs if r.variant == v.name]
        if not rs:
            continue
        best, last, secs = (_mean_std([getattr(r, k) for r in rs]) for k in ("best_top1", "last_top1", "seconds"))
        delta = [r.last_top1 - base[r.seed].last_top1 for r in rs if r.seed in base]
        d_mean, d_std = _mean_std(delta) if delta else (float("nan"), 0.0)
        lines.append(
            f"| {v.label} | {best[0]:.2f} ± {best[1]:.2f} | {last[0]:.2f} ± {last[1]:.2f} | "
            f"{d_mean:+.2f} ± {d_std:.2f} | {secs[0]:.0f} |"
        )
    return lines


def plot(runs, variants, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for v in variants:
        rs = [r for r in runs if r.variant == v.name]
        if not rs:
            continue
        t, acc = _mean_std([r.seconds for r in rs]), _mean_std([r.last_top1 for r in rs])
        ax.errorbar(t[0], acc[0], xerr=t[1], yerr=acc[1], fmt="o", capsize=3, label=v.label)
    ax.set_xlabel("training time per run (s, CPU)")
    ax.set_ylabel("top-1, last epoch (%)")
    ax.set_title(f"digits, {TEACHER} -> {STUDENT}: top-1 vs training time (mean ± std over seeds)", fontsize=10)
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def update_readme(lines):
    readme = ROOT / "README.md"
    text = readme.read_text()
    start, end = "<!-- quality:start -->", "<!-- quality:end -->"
    if start in text and end in text:
        head, rest = text.split(start, 1)
        readme.write_text(head + start + "\n" + "\n".join(lines) + "\n" + end + rest.split(end, 1)[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--teacher-epochs", type=int, default=8)
    parser.add_argument("--no-ablation", action="store_true")
    parser.add_argument("--output", default=str(RESULTS), help="results folder")
    parser.add_argument("--no-readme", action="store_true", help="leave the README alone")
    parser.add_argument("--plot-only", action="store_true", help="redraw the plot from the recorded quality.json")
    args = parser.parse_args()
    out = Path(args.output)
    if args.plot_only:
        recorded = json.loads((out / "quality.json").read_text())["runs"]
        names = {r["variant"] for r in recorded}
        plot(
            [Run(**r) for r in recorded], [v for v in VARIANTS if v.name in names], out / "quality_time_vs_accuracy.png"
        )
        return
    (out / "quality_logs").mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    load_before = load_average()

    accelerator = Accelerator(cpu=True)
    train, test = load_tensor_split(None, "train"), load_tensor_split(None, "test")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        t0 = time.perf_counter()
        teacher = train_teacher(accelerator, train, test, args.teacher_epochs, work)
        teacher_seconds = time.perf_counter() - t0
        eval_train = TensorBatchLoader(train, 256, train=False)
        teacher_train = evaluate_accuracy(accelerator, teacher, eval_train)
        teacher_test = evaluate_accuracy(accelerator, teacher, _loaders(train, test, 0)[1])
        t0 = time.perf_counter()
        scores = score_dataset(teacher, train, "influence").join(train, teacher)
        score_seconds = time.perf_counter() - t0
        mistakes = scores.mistakes(0.8)
        variants = [v for v in VARIANTS if not (v.ablation and args.no_ablation)]
        runs = []
        for seed in args.seeds:
            for v in variants:
                run = run_variant(accelerator, v, seed, teacher, train, test, scores, args.epochs, work)
                runs.append(run)
                (out / "quality_logs" / f"{v.name}_seed{seed}.jsonl").write_text(
                    "".join(json.dumps(h) + "\n" for h in run.history)
                )
                print(
                    f"{v.label:<36} seed {seed}: best {run.best_top1:.2f} last {run.last_top1:.2f} "
                    f"({run.seconds:.0f} s)",
                    flush=True,
                )

    main_variants = [v for v in variants if not v.ablation]
    main_lines = table(runs, main_variants)
    ablation_lines = table(runs, [v for v in variants if v.ablation or v.name in ("kd", "kd_lr_ds")])
    wrong = 100 - teacher_train["top1"]
    summary = [
        f"Teacher {TEACHER} ({args.teacher_epochs} epochs): training-set error {wrong:.2f} % "
        f"({mistakes['count']} of {len(train)} samples), test top-1 {teacher_test['top1']:.2f} %; "
        f"{mistakes['in_distilled']['highest']} of its {mistakes['count']} training mistakes fall in the distilled "
        f"80 % under the influence ranking (highest), {mistakes['in_distilled']['lowest']} under the lowest-score "
        f"80 %, {mistakes['in_distilled']['random']} under a random 80 %.",
        f"Student {STUDENT}, {args.epochs} epochs, seeds {args.seeds}; top-1 on the 360 test images, mean ± std.",
    ]
    total = time.perf_counter() - started
    doc = [
        "# Quality: does LR + DS help? (embedded digits, CPU)",
        "",
        f"Command: `python benchmarks/quality.py --epochs {args.epochs} --teacher-epochs {args.teacher_epochs} "
        f"--seeds {' '.join(map(str, args.seeds))}{' --no-ablation' if args.no_ablation else ''}` (from the "
        "repository root); written by the script. See its docstring for what is scaled down.",
        "",
        f"- Date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC; total wall time {total / 60:.1f} "
        f"min (teacher {teacher_seconds:.0f} s, influence scores {score_seconds:.1f} s)",
        f"- Machine: {os.cpu_count()} CPUs ({cpu_model()}), load average {load_before} at the start; Python "
        f"{platform.python_version()}, torch "
        f"{torch.__version__}, kd_zoo {kd_zoo.__version__}",
        f"- {summary[0]}",
        f"- {summary[1]}",
        "",
        "## Main table",
        "",
        *main_lines,
        "",
        "## Ablation (why, when it does or does not help)",
        "",
        *ablation_lines,
        "",
        "Per-run logs (one JSON line per epoch: top-1, top-5, eval loss, elapsed seconds): `quality_logs/`. Plot: "
        "`quality_time_vs_accuracy.png`.",
    ]
    (out / "quality.md").write_text("\n".join(doc) + "\n")
    (out / "quality.json").write_text(
        json.dumps(
            {
                "teacher": {
                    "model": TEACHER,
                    "epochs": args.teacher_epochs,
                    "train_error": wrong,
                    "test_top1": teacher_test["top1"],
                    "mistakes": mistakes,
                },
                "runs": [{k: v for k, v in r.__dict__.items() if k != "history"} for r in runs],
            },
            indent=2,
        )
    )
    plot(runs, variants, out / "quality_time_vs_accuracy.png")
    if not args.no_readme:
        update_readme(
            [
                f"- {summary[0]}",
                f"- {summary[1]}",
                "",
                *main_lines,
                "",
                "Ablation and logs: `benchmarks/results/quality.md`.",
            ]
        )
    print("\n".join(doc))


if __name__ == "__main__":
    main()
