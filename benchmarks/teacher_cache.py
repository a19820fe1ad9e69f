"""The teacher-output cache on this CPU: step time, build speed, size, payback, and the digits student with it.

    python benchmarks/teacher_cache.py                    # writes benchmarks/results/teacher_cache.md (+ .json)
    python benchmarks/teacher_cache.py --skip-digits      # the speed part only

Speed (ResNet32x4 -> ResNet8x4, 100 classes, random weights, batch 64; variants alternating over `--reps`, the
median step time, as benchmarks/train_step_speed.py measures them and with its helpers):
(a) the plain PyTorch KD loop (torchvision per-sample transforms in a DataLoader, the teacher on every row);
(c) kd_zoo KD + LR + DS 80 % with the live teacher (on the distilled rows only);
(f) the same from a float16 teacher cache held in memory (`TeacherCache.open(..., placement="device")`), and
(f') read by memory map (`placement="mmap"`);
(d) the student alone with cross-entropy (the floor).
The cache of (f) is built by `build_teacher_cache` over the `--rows` samples the kd_zoo variants train on (every
one of their 162 views); that build is timed against a plain inference pass of the same teacher (same batch size,
channels-last, no augmentation work) over the same number of images, half before and half after the build.
From the build's images per second and the (c) - (f) saving, the report works out the build time of a CIFAR-100
cache (50,000 x 162 views), its size on disk (from the bytes per sample measured here), and after how many
student epochs it has paid for itself.

The plain pass uses the build's batch size and channels-last; probes at batch 64 / 256, contiguous / channels-last
show which setting is fastest on the machine (on this 2-CPU machine: small batches, channels-last).

Digits (`--skip-digits` to leave out): a teacher trained on the embedded digits for `--teacher-epochs` epochs,
its influence scores and the 80 % distill mask; then the same LR + DS student (KD + LR, DS 80 %) with the live
teacher and from a float16 cache of the teacher, for each of `--seeds`: wall time and top-1. Two controls: a
float32 cache (exact to float reordering) and the live teacher with its logits perturbed by 3e-7 relative noise,
to measure how far runs drift apart that differ only by float rounding.
"""

import argparse
import datetime
import json
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import timm
import torch
from _machine import cpu_model, load_average
from accelerate import Accelerator
from accelerate.utils import set_seed
from train_step_speed import plain_kd_setup, time_steps

import kd_zoo
from kd_zoo.data import TensorBatchLoader, TensorImageSet, load_tensor_split
from kd_zoo.engine import Distiller, FitOptions, Supervised, fit, freeze, sgd, step_lr, train_supervised
from kd_zoo.methods import StepContext, create_method
from kd_zoo.revision import LabelRevision
from kd_zoo.selection import score_dataset
from kd_zoo.teacher_cache import TeacherCache, build_teacher_cache

RESULTS = Path(__file__).parent / "results"
CIFAR100_TRAIN, CIFAR100_VIEWS, CIFAR_BATCH = 50_000, 162, 64
PERTURBED = "live teacher, logits x (1 + 3e-7 noise)"


def cycle(loader: TensorBatchLoader) -> Iterator[dict]:
    """Batches of successive epochs, for ever."""
    epoch = 0
    while True:
        loader.set_epoch(epoch)
        yield from loader
        epoch += 1


def synthetic_split(rows: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, TensorImageSet]:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (rows, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 100, rows)
    data = TensorImageSet(
        torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(),
        torch.from_numpy(labels).long(),
        torch.arange(rows),
        [str(i) for i in range(100)],
        {"name": "synthetic", "split": "train", "num_rows": rows, "num_classes": 100, "content_sha256": f"seed{seed}"},
    )
    return images, labels, data


def plain_inference(teacher: torch.nn.Module, images: int, batch_size: int, channels_last: bool = True) -> float:
    """Images per second of the teacher alone on ready-made batches (no augmentation work)."""
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.randn(batch_size, 3, 32, 32).contiguous(memory_format=memory_format)
    model = teacher.to(memory_format=memory_format)
    with torch.inference_mode():
        model(x[:8])  # warm-up
        done, start = 0, time.perf_counter()
        while done < images:
            n = min(batch_size, images - done)
            model(x[:n])
            done += n
    seconds = time.perf_counter() - start
    teacher.to(memory_format=torch.contiguous_format)
    return done / seconds


class PerturbedLogits(torch.nn.Module):
    """A teacher whose logits are multiplied by (1 + scale * N(0, 1)): float-rounding-sized noise, to show how far
    runs that differ only by it drift apart (the chaos the cached runs must be compared with)."""

    def __init__(self, teacher: torch.nn.Module, scale: float = 3e-7, seed: int = 0):
        super().__init__()
        self.teacher, self.scale = teacher, scale
        self.generator = torch.Generator().manual_seed(seed)

    def forward_features(self, x):
        return self.teacher.forward_features(x)

    def forward_head(self, x, pre_logits: bool = False):
        out = self.teacher.forward_head(x, pre_logits=pre_logits)
        if pre_logits:
            return out
        return out * (1 + self.scale * torch.randn(out.shape, generator=self.generator).to(out.device))


def speed(args, work: Path) -> dict:
    torch.manual_seed(0)
    pil_images, pil_labels, _ = synthetic_split(args.pil_rows)
    _, _, data = synthetic_split(args.rows, seed=1)
    mask = torch.zeros(args.rows, dtype=torch.bool)
    mask[torch.randperm(args.rows)[: round(0.8 * args.rows)]] = True
    teacher = freeze(timm.create_model("lrds_resnet32x4", num_classes=100))

    # the build against a plain inference pass over as many images (half before, half after)
    probes = {(b, cl): plain_inference(teacher, args.probe_images, b, cl) for b in (64, 256) for cl in (False, True)}
    images = args.rows * CIFAR100_VIEWS
    plain_before = plain_inference(teacher, images // 2, args.build_batch)
    report = build_teacher_cache(teacher, data, work / "cache", batch_size=args.build_batch, progress=False)
    plain_after = plain_inference(teacher, images // 2, args.build_batch)
    plain = statistics.mean([plain_before, plain_after])
    manifest = json.loads((work / "cache" / "cache.json").read_text())
    in_memory = TeacherCache.open(work / "cache", placement="device")
    mapped = TeacherCache.open(work / "cache", placement="mmap")
    ctx = StepContext(epoch=0, num_epochs=240)

    def plain_setup():
        step, loader = plain_kd_setup(teacher, pil_images, pil_labels, args.workers, CIFAR_BATCH)
        return step, iter(loader)

    def ours_setup(cache: TeacherCache | None, distill: bool = True):
        student = timm.create_model("lrds_resnet8x4", num_classes=100)
        if distill:
            model = Distiller(student, create_method("kd", student, teacher), LabelRevision(), teacher_cache=cache)
        else:
            model = Supervised(student)
        model.train()
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
        live = teacher if cache is None else None

        def step(batch):
            keys = {"sample_idx": batch["sample_idx"], "view": batch["view"]}
            m = mask[batch["sample_idx"]] if distill else None
            out = model(batch["image"], batch["label"], m, teacher=live, ctx=ctx, **keys)
            opt.zero_grad()
            out.loss.backward()
            opt.step()

        return step, cycle(TensorBatchLoader(data, CIFAR_BATCH, train=True, seed=0))

    variants = {
        "(a) plain PyTorch KD (torchvision + DataLoader, teacher on all rows)": plain_setup,
        "(c) kd_zoo KD + LR + DS 80 %, live teacher": lambda: ours_setup(None),
        "(f) kd_zoo KD + LR + DS 80 %, float16 cache in memory": lambda: ours_setup(in_memory),
        "(f') kd_zoo KD + LR + DS 80 %, float16 cache by memory map": lambda: ours_setup(mapped),
        "(d) student alone, CE (floor)": lambda: ours_setup(None, distill=False),
    }
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.reps):
        for name, setup in variants.items():
            step, batches = setup()
            times[name].extend(time_steps(step, batches, args.warmup, args.steps))
    medians = {name: 1000 * statistics.median(t) for name, t in times.items()}
    quartiles = {name: statistics.quantiles([1000 * x for x in t], n=4) for name, t in times.items()}
    return {
        "medians_ms": medians,
        "quartiles_ms": quartiles,
        "steps_ms": {name: [round(1000 * x, 1) for x in t] for name, t in times.items()},
        "build": {
            "rows": args.rows,
            "images": report.images,
            "seconds": report.seconds,
            "images_per_second": report.images_per_second,
            "plain_images_per_second": plain,
            "plain_before_after": [plain_before, plain_after],
            "plain_probes": {
                f"batch {b}, {'channels-last' if cl else 'contiguous'}": v for (b, cl), v in probes.items()
            },
            "batch_size": args.build_batch,
            "bytes": manifest["total_bytes"],
            "logit_bytes": in_memory.nbytes,
            "shards": manifest["layout"]["num_shards"],
        },
    }


def digits(args, work: Path) -> dict:
    accelerator = Accelerator(cpu=True)
    train, test = load_tensor_split(None, "train"), load_tensor_split(None, "test")
    evaluation = TensorBatchLoader(test, 256, train=False)
    set_seed(0)
    started = time.perf_counter()
    epochs = args.teacher_epochs
    milestones = [round(0.6 * epochs), round(0.8 * epochs)]
    options = FitOptions(epochs, step_lr(0.05, milestones), progress=False, log_every=10**9, checkpoint_every=10**9)
    teacher, teacher_fit = train_supervised(
        accelerator,
        timm.create_model(args.teacher, num_classes=train.num_classes),
        TensorBatchLoader(train, 64, train=True, seed=0),
        evaluation,
        options,
        run_dir=work / "teacher",
        lr=0.05,
    )
    teacher = freeze(teacher)
    teacher_seconds = time.perf_counter() - started
    scores = score_dataset(teacher, train, "influence").join(train, teacher)
    mask = scores.distill_mask(0.8)
    report = build_teacher_cache(teacher, train, work / "digits_cache", progress=False)
    cache = TeacherCache.open(work / "digits_cache")
    cache_mask = cache.score_set("influence").join(train, teacher).distill_mask(0.8)
    cache.check_run(teacher, TensorBatchLoader(train, 64, train=True))
    caches = {"live teacher": None, "float16 cache": cache}
    if args.float32_control:  # the same run but exact: tells rounding from the seed-to-seed spread
        build_teacher_cache(teacher, train, work / "digits_cache32", dtype="float32", progress=False)
        caches["float32 cache"] = TeacherCache.open(work / "digits_cache32")
    caches[PERTURBED] = "perturbed"

    runs = []
    for seed in args.seeds:
        for variant, source in caches.items():
            set_seed(seed)
            student = timm.create_model(args.student, num_classes=train.num_classes)
            method = create_method("kd", student, teacher)
            cached = source if isinstance(source, TeacherCache) else None
            distiller = Distiller(student, method, LabelRevision(), teacher_cache=cached)
            optimizer = sgd(distiller, 0.05)
            distiller, optimizer = accelerator.prepare(distiller, optimizer)
            milestones = [round(0.6 * args.epochs), round(0.8 * args.epochs)]
            options = FitOptions(
                args.epochs, step_lr(0.05, milestones), progress=False, log_every=10**9, checkpoint_every=10**9
            )
            start = time.perf_counter()
            result = fit(
                accelerator,
                distiller,
                optimizer,
                TensorBatchLoader(train, 64, train=True, seed=seed),
                evaluation,
                options,
                run_dir=work / f"{variant.replace(' ', '_')}_{seed}",
                teacher=None if cached is not None else PerturbedLogits(teacher, seed=seed) if source else teacher,
                distill_mask=mask,
            )
            seconds = time.perf_counter() - start
            runs.append(
                {"variant": variant, "seed": seed, "best": result.best_top1, "last": result.last_top1, "s": seconds}
            )
            summary = f"best {result.best_top1:.2f} last {result.last_top1:.2f} ({seconds:.0f} s)"
            print(f"digits {variant:<14} seed {seed}: {summary}", flush=True)
            accelerator.free_memory()
    return {
        "teacher": args.teacher,
        "student": args.student,
        "teacher_top1": teacher_fit.last_top1,
        "teacher_seconds": teacher_seconds,
        "build_seconds": report.seconds,
        "build_images_per_second": report.images_per_second,
        "num_train": len(train),
        "cache_bytes": json.loads((work / "digits_cache" / "cache.json").read_text())["total_bytes"],
        "cache_mask_equals_score_py_mask": bool(torch.equal(torch.as_tensor(cache_mask), torch.as_tensor(mask))),
        "runs": runs,
    }


def _mean_std(values: list[float]) -> str:
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.2f} ± {std:.2f}"


def report_lines(args, result: dict) -> list[str]:
    meta, speed_part, build = result["meta"], result["speed"], result["speed"]["build"]
    med = speed_part["medians_ms"]
    names = list(med)
    a, c, f, f_mapped, d = (med[n] for n in names)
    ratio_build = build["images_per_second"] / build["plain_images_per_second"]
    per_sample = build["bytes"] / build["rows"]
    cifar_bytes = per_sample * CIFAR100_TRAIN
    cifar_logits = CIFAR100_TRAIN * CIFAR100_VIEWS * 100 * 2
    cifar_build_s = CIFAR100_TRAIN * CIFAR100_VIEWS / build["images_per_second"]
    steps_per_epoch = CIFAR100_TRAIN // CIFAR_BATCH
    saving_c = (c - f) / 1000 * steps_per_epoch
    saving_a = (a - f) / 1000 * steps_per_epoch
    lines = [
        "# Teacher-output cache: step time, build speed, size, payback (CPU)",
        "",
        f"Command: `python benchmarks/teacher_cache.py --steps {args.steps} --reps {args.reps} --rows {args.rows} "
        f"--workers {args.workers}{f' --threads {args.threads}' if args.threads else ''}"
        f"{' --skip-digits' if args.skip_digits else ''}{'' if args.float32_control else ' --no-float32-control'}` "
        "(from the repository root), written by the script.",
        "",
        f"- Date: {meta['date']}; total wall time {meta['seconds'] / 60:.1f} min",
        f"- Machine: {meta['machine']}; load average {meta['load_before']} before, {meta['load_after']} after (the "
        "machine is shared: read the ratios, which are measured side by side, more than the absolute times)",
        f"- Software: {meta['software']}; (a) uses {args.workers} DataLoader workers",
        f"- Step variants: ResNet32x4 -> ResNet8x4, 100 classes, random weights, batch 64; median of {args.reps} x "
        f"{args.steps} timed steps per variant (after {args.warmup} warm-up steps), variants alternating. The kd_zoo "
        f"variants train on {args.rows} synthetic 32x32 images whose every view is cached; (a) on {args.pil_rows}.",
        "",
        "## Step time",
        "",
        "| variant | ms / step (median) | quartiles | vs (a) | vs (d) |",
        "| --- | ---: | ---: | ---: | ---: |",
        *[
            f"| {n} | {ms:.0f} | {speed_part['quartiles_ms'][n][0]:.0f}-{speed_part['quartiles_ms'][n][2]:.0f} | "
            f"{a / ms:.2f}x faster | {ms / d:.2f}x |"
            for n, ms in med.items()
        ],
        "",
        f"Goals: (f) within 1.1x of (d): {'met' if f <= 1.1 * d else 'NOT met'} ({f / d:.2f}x); at least 2x faster "
        f"than (a): {'met' if a / f >= 2 else 'NOT met'} ({a / f:.2f}x). By memory map (f'): {f_mapped / d:.2f}x "
        f"(d), {a / f_mapped:.2f}x faster than (a). The cache turns the teacher's share of (c) ({c - d:.0f} ms) into "
        f"a lookup within the noise of (d) ((f) - (d) = {f - d:+.0f} ms; the quartiles overlap).",
        "",
        "## Build, size, payback",
        "",
        "| | |",
        "| --- | ---: |",
        f"| build: images / s (batch {build['batch_size']}, channels-last, float16, every view of {build['rows']} "
        f"samples, {build['images']:,} images) | {build['images_per_second']:.1f} |",
        f"| plain teacher inference, images / s (same batch, channels-last; before / after the build: "
        f"{build['plain_before_after'][0]:.1f} / {build['plain_before_after'][1]:.1f}) | "
        f"{build['plain_images_per_second']:.1f} |",
        f"| plain teacher inference, other settings (images / s): "
        f"{'; '.join(f'{k} {v:.1f}' for k, v in build['plain_probes'].items())} | best "
        f"{max(build['plain_probes'].values()):.1f} |",
        f"| build / plain inference (goal >= 0.9x) | {ratio_build:.2f}x "
        f"({'met' if ratio_build >= 0.9 else 'NOT met'}) |",
        f"| size on disk, measured: {build['rows']} samples, {build['shards']} shard(s) | {build['bytes']:,} bytes "
        f"({per_sample:,.0f} per sample) |",
        f"| size on disk, CIFAR-100 (50,000 samples x 162 views x 100 classes, float16) | {cifar_bytes / 1e9:.2f} GB "
        f"(logits {cifar_logits / 1e9:.2f} GB; the rest is the centre view's features and logits for scoring) |",
        f"| CIFAR-100 build on this CPU at the measured rate | {cifar_build_s / 3600:.1f} h |",
        f"| saving per CIFAR-100 epoch ({steps_per_epoch} steps), (c) - (f) | {saving_c / 60:.1f} min |",
        f"| the build has paid for itself after, vs (c) | {cifar_build_s / saving_c:.0f} student epochs |",
        f"| the build has paid for itself after, vs (a) | {cifar_build_s / saving_a:.0f} student epochs |",
        "",
        "Reading the payback: the build runs the teacher on 162 views of each image, a live LR + DS epoch on 0.8 of "
        "one view, so one cache costs about as much teacher time as 200 live epochs. One paper-length student "
        "(240 epochs) already pays for it; every further student of the same teacher (the paper trains dozens) "
        "trains at about the cost of cross-entropy.",
    ]
    if "digits" in result:
        dg = result["digits"]
        runs = dg["runs"]
        by = {v: [r for r in runs if r["variant"] == v] for v in dict.fromkeys(r["variant"] for r in runs)}
        live = {r["seed"]: r for r in by["live teacher"]}
        diffs = {v: [r["last"] - live[r["seed"]]["last"] for r in rs] for v, rs in by.items() if v != "live teacher"}
        lines += [
            "",
            "## The digits student with and without the float16 cache (and a float32 cache, the exact control)",
            "",
            f"Teacher {dg['teacher']} trained {args.teacher_epochs} epochs on the embedded digits (test top-1 "
            f"{dg['teacher_top1']:.2f}, {dg['teacher_seconds']:.0f} s); its float16 cache (162 views x "
            f"{dg['num_train']:,} samples, {dg['cache_bytes'] / 1e6:.1f} MB) built in {dg['build_seconds']:.0f} s "
            f"({dg['build_images_per_second']:.0f} images / s). Student {dg['student']}, KD + LR + DS 80 % "
            f"(influence, the same mask for every run; the score set computed from the cache gives "
            f"{'the same' if dg['cache_mask_equals_score_py_mask'] else 'a DIFFERENT'} mask), {args.epochs} epochs, "
            f"seeds {args.seeds}; top-1 on the 360 test images (one image = 0.28 points).",
            "",
            "| variant | top-1 best | top-1 last | seconds / run |",
            "| --- | ---: | ---: | ---: |",
            *[
                f"| {v} | {_mean_std([r['best'] for r in rs])} | {_mean_std([r['last'] for r in rs])} | "
                f"{_mean_std([r['s'] for r in rs])} |"
                for v, rs in by.items()
            ],
            "",
            "Minus the live teacher, last top-1, per seed: "
            + "; ".join(
                f"{v} {', '.join(f'{x:+.2f}' for x in d)} (mean {statistics.mean(d):+.2f})" for v, d in diffs.items()
            )
            + ". Per run (best / last):",
            "",
            *[f"- {r['variant']}, seed {r['seed']}: {r['best']:.2f} / {r['last']:.2f}, {r['s']:.0f} s" for r in runs],
            "",
            "How to read it: the control whose teacher logits differ from the live run's only by float-rounding-sized "
            "noise (3e-7 relative) ends a mean "
            f"{statistics.mean(abs(x) for x in diffs[PERTURBED]):.2f} points (absolute) away from the live run, the "
            f"float32 cache {statistics.mean(abs(x) for x in diffs.get('float32 cache', [0.0])):.2f}, the float16 "
            f"cache {statistics.mean(abs(x) for x in diffs['float16 cache']):.2f}: short digits runs are chaotic (a "
            "1e-7 change of the soft targets grows to percent-level loss differences within a few steps), so each "
            "seed's run is one more draw, and the question is whether the cached runs' mean stays within the "
            "seed-to-seed spread of the live runs. The exactness itself is tested step by step "
            "(tests/test_teacher_cache.py).",
        ]
    lines += ["", "Every step (ms):", ""]
    lines += [f"- {n}: {', '.join(f'{x:.0f}' for x in t)}" for n, t in speed_part["steps_ms"].items()]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rows", type=int, default=64, help="samples the kd_zoo variants train on (all cached)")
    parser.add_argument("--pil-rows", type=int, default=5000, help="samples of the plain loop (a)")
    parser.add_argument("--build-batch", type=int, default=64, help="images per forward pass of the build")
    parser.add_argument("--probe-images", type=int, default=640, help="images per plain-inference probe")
    parser.add_argument("--skip-digits", action="store_true")
    parser.add_argument("--teacher", default="lrds_resnet14", help="digits: the teacher")
    parser.add_argument("--student", default="lrds_resnet8", help="digits: the student")
    parser.add_argument("--teacher-epochs", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    no_control = "digits: leave out the float32-cache runs"
    parser.add_argument("--no-float32-control", dest="float32_control", action="store_false", help=no_control)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--output", default=str(RESULTS))
    parser.add_argument("--render-only", action="store_true", help="rewrite the .md from the recorded .json")
    args = parser.parse_args()
    out = Path(args.output)
    if args.render_only:
        recorded = json.loads((out / "teacher_cache.json").read_text())
        lines = report_lines(argparse.Namespace(**recorded.pop("args")), recorded)
        (out / "teacher_cache.md").write_text("\n".join(lines) + "\n")
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    started, load_before = time.perf_counter(), load_average()
    result: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        result["speed"] = speed(args, Path(tmp))
        print(json.dumps(result["speed"]["medians_ms"], indent=1), flush=True)
        if not args.skip_digits:
            result["digits"] = digits(args, Path(tmp))
    result["meta"] = {
        "date": f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC",
        "seconds": time.perf_counter() - started,
        "machine": f"{os.cpu_count()} CPUs ({cpu_model()}), no GPU",
        "load_before": load_before,
        "load_after": load_average(),
        "software": f"Python {platform.python_version()}, torch {torch.__version__}, timm {timm.__version__}, "
        f"kd_zoo {kd_zoo.__version__}; {torch.get_num_threads()} torch threads",
    }
    lines = report_lines(args, result)
    out.mkdir(parents=True, exist_ok=True)
    (out / "teacher_cache.md").write_text("\n".join(lines) + "\n")
    recorded = {"args": {k: v for k, v in vars(args).items() if k != "render_only"}, **result}
    (out / "teacher_cache.json").write_text(json.dumps(recorded, indent=2) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
