"""Whole-network influence (`influence_full`, kronfluence EK-FAC over every Linear and Conv2d) against the
classifier-layer `influence` and the teacher's `loss`: cost and rank agreement, on two trained digits teachers.

Side by side in one run, on the embedded digits (1,437 training images), for each teacher:

(i)   one plain inference pass: `teacher(images)` under `torch.no_grad()` over the split (batch 256);
(ii)  `score_dataset_multi(teacher, data, ["influence", "loss"])`: the classifier-layer EK-FAC self-influence and the
      teacher's cross-entropy, end to end;
(iii) `score_dataset_multi(teacher, data, [influence_full])`: the self-influence over every Linear and Conv2d weight,
      end to end (its own teacher pass, then kronfluence's covariance, eigenvalue-correction and score passes).

(i)-(iii) alternate over `--reps` repetitions; repetition r of (iii) draws the Fisher's labels with seed r, so two
repetitions also give the seed-to-seed agreement of `influence_full` (its Monte-Carlo noise floor). Rank agreement:
Spearman's rho over all samples; top-20 % overlap: the share of the 20 % highest-scored samples (the hardest, which
Data Selection distils) that two scorers have in common (for the default 80 / 20 split, the same share of the Ds
part agrees). Teacher mistakes: how many of the teacher's training mistakes each scorer ranks in its top 20 %.

Teachers are trained here as tests/test_selection.py trains its fixture (Adam, lr 1e-2, batch 64, then the
BatchNorm statistics re-estimated): `lrds_resnet8` for 3 epochs (the digits teacher of the tests) and a deeper one,
`lrds_resnet32` (31 convolutions) for 6 epochs; seed 0.

Run (from the repository root; about 12 minutes on 2 CPUs):
    python benchmarks/influence_full.py
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import timm
import torch
import torch.nn.functional as F
from _machine import cpu_model, load_average
from scipy.stats import spearmanr

import kd_zoo  # noqa: F401  (registers the lrds_* models in timm)
from kd_zoo.data import TensorBatchLoader, TensorImageSet, load_tensor_split
from kd_zoo.selection import make_scorer, score_dataset_multi
from kd_zoo.selection.influence_full import load_kronfluence

BATCH = 256
TOP = 0.2


def train_teacher(arch: str, data: TensorImageSet, epochs: int) -> tuple[torch.nn.Module, float]:
    """`arch` trained as tests/test_selection.py's fixture; returns it in eval mode and the seconds it took."""
    start = time.perf_counter()
    torch.manual_seed(0)
    model = timm.create_model(arch, num_classes=data.num_classes)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    loader = TensorBatchLoader(data, 64, train=True, seed=0, pad=0)
    for epoch in range(epochs):
        loader.set_epoch(epoch)
        model.train()
        for batch in loader:
            loss = F.cross_entropy(model(batch["image"]), batch["label"])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    for module in model.modules():  # the running statistics lag a few hundred Adam steps: re-estimate them
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            module.momentum = None
    with torch.no_grad():
        for batch in TensorBatchLoader(data, BATCH, train=False):
            model(batch["image"])
    return model.eval(), time.perf_counter() - start


def inference_pass(teacher: torch.nn.Module, data: TensorImageSet) -> float:
    start = time.perf_counter()
    with torch.no_grad():
        for batch in TensorBatchLoader(data, BATCH, train=False):
            teacher(batch["image"])
    return time.perf_counter() - start


def top_overlap(a: np.ndarray, b: np.ndarray, share: float = TOP) -> float:
    """The share of the `share` highest-scored samples of `a` that are also among those of `b`."""
    k = round(share * len(a))
    return len(set(np.argsort(-a, kind="stable")[:k]) & set(np.argsort(-b, kind="stable")[:k])) / k


def mistakes_in_top(scores: np.ndarray, wrong: np.ndarray, share: float = TOP) -> int:
    k = round(share * len(scores))
    return int(wrong[np.argsort(-scores, kind="stable")[:k]].sum())


def measure(arch: str, epochs: int, data: TensorImageSet, reps: int) -> dict:
    teacher, train_seconds = train_teacher(arch, data, epochs)
    inference, head, full, runs = [], [], [], []
    for rep in range(reps):
        inference.append(inference_pass(teacher, data))
        start = time.perf_counter()
        closed = score_dataset_multi(teacher, data, ["influence", "loss"], batch_size=BATCH)
        head.append(time.perf_counter() - start)
        start = time.perf_counter()
        whole = score_dataset_multi(teacher, data, [make_scorer("influence_full", seed=rep)], batch_size=BATCH)
        full.append(time.perf_counter() - start)
        runs.append(whole["influence_full"])
        print(f"{arch} rep {rep}: inference {inference[-1]:.1f} s, influence {head[-1]:.1f} s, full {full[-1]:.1f} s")
    scores = {
        "influence_full": runs[0].scores,
        "influence": closed["influence"].scores,
        "loss": closed["loss"].scores,
    }
    wrong = ~closed["loss"].teacher_correct.astype(bool)
    pairs = [("influence_full", "influence"), ("influence_full", "loss"), ("influence", "loss")]
    agreement = {
        f"{a} vs {b}": {
            "spearman": float(spearmanr(scores[a], scores[b])[0]),
            "top20_overlap": top_overlap(scores[a], scores[b]),
        }
        for a, b in pairs
    }
    if reps > 1:
        agreement["influence_full seed 0 vs seed 1"] = {
            "spearman": float(spearmanr(runs[0].scores, runs[1].scores)[0]),
            "top20_overlap": top_overlap(runs[0].scores, runs[1].scores),
        }
    ratios = [f / i for f, i in zip(full, inference, strict=True)]
    settings = runs[0].metadata["settings"]
    return {
        "teacher": arch,
        "train_epochs": epochs,
        "train_seconds": round(train_seconds, 1),
        "parameters": sum(p.numel() for p in teacher.parameters()),
        "covered_modules": settings["modules"],
        "covered_parameters": settings["parameters"],
        "train_accuracy": float(closed["loss"].metadata["teacher"]["accuracy"]),
        "mistakes": int(wrong.sum()),
        "mistakes_in_top20": {name: mistakes_in_top(s, wrong) for name, s in scores.items()},
        "seconds": {"inference": inference, "influence": head, "influence_full": full},
        "influence_full_seconds": [r.metadata["seconds"] for r in runs],
        "x_inference": {
            "influence": statistics.median(h / i for h, i in zip(head, inference, strict=True)),
            "influence_full": statistics.median(ratios),
            "influence_full_best": min(full) / min(inference),
        },
        "damping": {"min": settings["damping_min"], "max": settings["damping_max"]},
        "agreement": agreement,
    }


def markdown(results: list[dict], meta: dict) -> str:
    lines = [
        "# `influence_full` (all Linear and Conv2d layers, kronfluence) vs the classifier layer and the loss",
        "",
        f"Command: `{meta['command']}` (from the repository root), written by `benchmarks/influence_full.py` in "
        f"{meta['wall_seconds']:.0f} s.",
        "",
        f"- Date: {meta['date']}",
        f"- Machine: {meta['machine']}; load average {meta['load_before']} before, {meta['load_after']} after "
        "(other jobs shared the machine when above 0)",
        f"- Software: {meta['software']}; torch threads: {meta['threads']}",
        "- Data: the embedded digits, 1,437 training images (32x32); batch 256; one process. Teachers trained here "
        "(Adam, lr 1e-2, batch 64, BatchNorm statistics re-estimated, seed 0). Seconds are per repetition, "
        "(i) inference, (ii) influence + loss, (iii) influence_full alternating; ratios are medians of the "
        "per-repetition ratios (in brackets: fastest / fastest, the least disturbed by other jobs).",
        "",
        "## Cost",
        "",
        "| teacher | params (covered) | Linear + Conv2d | train acc. | (i) inference s | (ii) influence x (i) "
        "| (iii) influence_full s | (iii) x (i) | of (iii): teacher pass / kronfluence s |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        s = r["seconds"]
        split = r["influence_full_seconds"][0]
        lines.append(
            f"| {r['teacher']} ({r['train_epochs']} epochs) | {r['parameters']:,} ({r['covered_parameters']:,}) "
            f"| {r['covered_modules']} | {100 * r['train_accuracy']:.2f} % | {statistics.median(s['inference']):.2f} "
            f"| {r['x_inference']['influence']:.2f}x | {statistics.median(s['influence_full']):.1f} "
            f"| {r['x_inference']['influence_full']:.1f}x ({r['x_inference']['influence_full_best']:.1f}x) "
            f"| {split['teacher_pass']:.1f} / {split['scoring']:.1f} |"
        )
    lines += [
        "",
        "## Rank agreement",
        "",
        "Spearman's rho over the 1,437 samples, and the overlap of the 20 % highest-scored samples (287).",
        "",
        "| teacher | pair | Spearman | top-20 % overlap |",
        "| --- | --- | ---: | ---: |",
    ]
    for r in results:
        for pair, a in r["agreement"].items():
            lines.append(f"| {r['teacher']} | {pair} | {a['spearman']:.4f} | {100 * a['top20_overlap']:.1f} % |")
    lines += [
        "",
        "## The teacher's training mistakes in each scorer's top 20 %",
        "",
        "| teacher | mistakes | influence_full | influence | loss |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        m = r["mistakes_in_top20"]
        lines.append(f"| {r['teacher']} | {r['mistakes']} | {m['influence_full']} | {m['influence']} | {m['loss']} |")
    lines += ["", "Every repetition (seconds):", ""]
    for r in results:
        s = r["seconds"]
        lines.append(
            f"- {r['teacher']}: inference {', '.join(f'{x:.2f}' for x in s['inference'])}; influence "
            f"{', '.join(f'{x:.2f}' for x in s['influence'])}; influence_full "
            f"{', '.join(f'{x:.1f}' for x in s['influence_full'])}; damping per module "
            f"{r['damping']['min']:.3g} to {r['damping']['max']:.3g}"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teachers", nargs="+", default=["lrds_resnet8:3", "lrds_resnet32:6"], help="arch:epochs")
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: least disturbed by other jobs)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "influence_full.md"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    kronfluence = load_kronfluence()  # fails early, with the install command, when the extra is missing
    started, load_before = time.perf_counter(), load_average()
    data = load_tensor_split(None, "train")
    results = []
    for item in args.teachers:
        arch, epochs = item.split(":")
        results.append(measure(arch, int(epochs), data, args.reps))
    meta = {
        "command": "python benchmarks/influence_full.py" + (" " + " ".join(sys.argv[1:]) if sys.argv[1:] else ""),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{os.cpu_count()} CPUs ({cpu_model()}), "
        + ("a GPU present but unused" if torch.cuda.is_available() else "no GPU"),
        "software": f"Python {platform.python_version()}, torch {torch.__version__}, timm {timm.__version__}, "
        f"kronfluence {kronfluence.version}",
        "threads": args.threads,
        "load_before": load_before,
        "load_after": load_average(),
        "wall_seconds": time.perf_counter() - started,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(markdown(results, meta))
    out.with_suffix(".json").write_text(json.dumps({"meta": meta, "results": results}, indent=2))
    print(out.read_text())


if __name__ == "__main__":
    main()
