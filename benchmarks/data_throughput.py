"""Images per second of the 32x32 fast path against a plain torchvision pipeline, and against the training step.

Side by side in one run, on the same data:

(a) torchvision as users write it: a torch Dataset returning PIL images through
    `Compose([RandomCrop(32, padding=4), RandomHorizontalFlip(), ToTensor(), Normalize(...)])` and
    `DataLoader(batch_size=64, shuffle=True, num_workers=W)` (W = the CPU count by default);
(b) `kd_zoo.data.TensorBatchLoader` at global batch 64 (same augmentation, on tensors, on the CPU here);
(c) what training consumes: a ResNet8x4 student (`lrds_resnet8x4`, 100 classes) forward + backward + SGD step at
    batch 64 on the CPU.

Two data sets: synthetic 32x32 uint8 images at CIFAR-100's training size (50,000 rows, random pixels: the cost of
these pipelines does not depend on the pixel values), and the embedded demo train split (1,437 real digits).
Each pipeline figure is the median over `--reps` full epochs, each timed from `iter()` to the last batch (so (a)
includes starting its workers, as every epoch of a default DataLoader does). The goals: (b)/(a) >= 10 and
(b)/(c) >= 5. The result table is written to `benchmarks/results/data_throughput.md`.

Run (from the repository root):
    python benchmarks/data_throughput.py
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import timm
import torch
import torchvision
from _machine import cpu_model, load_average
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

import kd_zoo  # noqa: F401  (registers the lrds_* models in timm)
from kd_zoo.constants import CIFAR100_MEAN, CIFAR100_STD
from kd_zoo.data import TensorBatchLoader, TensorImageSet, load_split

BATCH = 64
CIFAR100_TRAIN_ROWS = 50_000


class PILImageDataset(Dataset):
    """What torchvision's CIFAR datasets do: HWC uint8 rows -> PIL image -> per-sample transform."""

    def __init__(self, images_hwc: np.ndarray, labels: np.ndarray, transform):
        self.images = images_hwc
        self.labels = labels
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        return self.transform(Image.fromarray(self.images[index])), int(self.labels[index])


def torchvision_epoch(dataset: Dataset, workers: int) -> float:
    """Images per second of one epoch of a default DataLoader (workers started by `iter`, as each epoch does)."""
    loader = DataLoader(dataset, batch_size=BATCH, shuffle=True, num_workers=workers)
    count = 0
    start = time.perf_counter()
    for images, _labels in loader:
        count += images.shape[0]
    return count / (time.perf_counter() - start)


def tensor_epoch(loader: TensorBatchLoader, epoch: int) -> float:
    loader.set_epoch(epoch)
    count = 0
    start = time.perf_counter()
    for batch in loader:
        count += batch["image"].shape[0]
    if batch["image"].is_cuda:
        torch.cuda.synchronize()
    return count / (time.perf_counter() - start)


def train_step_rate(max_steps: int, max_seconds: float, warmup: int = 3) -> tuple[float, int]:
    """Images per second a ResNet8x4 training step (forward + backward + SGD) consumes at batch 64, and the number
    of timed steps (`max_steps`, or fewer once `max_seconds` have passed, at least 3)."""
    model = timm.create_model("lrds_resnet8x4", num_classes=100)
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(BATCH, 3, 32, 32, generator=generator)
    labels = torch.randint(0, 100, (BATCH,), generator=generator)
    steps = 0
    for step in range(warmup + max_steps):
        if step == warmup:
            start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(model(images), labels)
        loss.backward()
        optimizer.step()
        if step >= warmup:
            steps += 1
            if steps >= 3 and time.perf_counter() - start > max_seconds:
                break
    return BATCH * steps / (time.perf_counter() - start), steps


def measure(name: str, data: TensorImageSet, reps: int, workers: int) -> dict:
    images_hwc = data.images.permute(0, 2, 3, 1).contiguous().numpy()
    labels = data.labels.numpy()
    pipeline = transforms.Compose(
        [
            transforms.RandomCrop(32, padding=4),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            transforms.Normalize(CIFAR100_MEAN, CIFAR100_STD),
        ]
    )
    dataset = PILImageDataset(images_hwc, labels, pipeline)
    loader = TensorBatchLoader(data, BATCH, train=True, seed=0)
    tensor_epoch(loader, 0)  # warm-up (allocator, first-call overheads)
    torchvision_rates, tensor_rates = [], []
    for rep in range(reps):  # interleaved, so a change in machine load hits both
        torchvision_rates.append(torchvision_epoch(dataset, workers))
        tensor_rates.append(tensor_epoch(loader, rep + 1))
        print(f"  {name} rep {rep}: torchvision {torchvision_rates[-1]:,.0f}/s, tensor {tensor_rates[-1]:,.0f}/s")
    return {
        "name": name,
        "rows": len(data),
        "torchvision": statistics.median(torchvision_rates),
        "tensor": statistics.median(tensor_rates),
        "speedup": statistics.median(t / v for t, v in zip(tensor_rates, torchvision_rates, strict=True)),
        "torchvision_all": torchvision_rates,
        "tensor_all": tensor_rates,
    }


def synthetic_cifar(n: int) -> TensorImageSet:
    generator = torch.Generator().manual_seed(0)
    return TensorImageSet(
        images=torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=generator),
        labels=torch.randint(0, 100, (n,), generator=generator),
        sample_idx=torch.arange(n),
        class_names=[str(i) for i in range(100)],
        fingerprint={},
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=CIFAR100_TRAIN_ROWS, help="synthetic rows (CIFAR-100 train size)")
    parser.add_argument("--reps", type=int, default=3, help="epochs timed per pipeline")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2, help="DataLoader workers for (a)")
    parser.add_argument("--train-steps", type=int, default=20, help="most timed ResNet8x4 training steps for (c)")
    parser.add_argument("--train-seconds", type=float, default=15.0, help="stop timing (c) after this long")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "data_throughput.md"))
    args = parser.parse_args()

    command = "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]])
    load_before = load_average()
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads")

    start = time.perf_counter()
    demo = load_split(None, "train")
    demo_data = TensorImageSet.from_dataset(demo, name="demo", split="train", use_cache=False)
    decode_seconds = time.perf_counter() - start

    size_note = ", CIFAR-100 train size" if args.rows == CIFAR100_TRAIN_ROWS else ""
    results = [
        measure(
            f"synthetic 32x32 ({args.rows:,} rows{size_note})",
            synthetic_cifar(args.rows),
            args.reps,
            args.workers,
        ),
        measure(f"demo train split ({len(demo_data):,} rows)", demo_data, args.reps, args.workers),
    ]
    step_rate, steps = train_step_rate(args.train_steps, args.train_seconds)
    print(f"  ResNet8x4 training step: {step_rate:,.0f} images/s")
    load_after = load_average()

    lines = [
        "# Data throughput: the 32x32 tensor path vs torchvision, and vs the training step",
        "",
        f"Command: `{command}` (from the repository root), written by `benchmarks/data_throughput.py`.",
        "",
        f"- Date: {datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- Machine: {os.cpu_count()} CPUs ({cpu_model()}), no GPU used; load average {load_before} before, "
        f"{load_after} after (other jobs shared the machine if above 0)",
        f"- Software: Python {platform.python_version()}, torch {torch.__version__}, torchvision "
        f"{torchvision.__version__}, timm {timm.__version__}; {torch.get_num_threads()} torch threads",
        f"- (a) torchvision: PIL per sample, RandomCrop(32, padding=4) + RandomHorizontalFlip + ToTensor + Normalize, "
        f"DataLoader(batch_size={BATCH}, shuffle=True, num_workers={args.workers}), workers started each epoch "
        "(the default)",
        f"- (b) kd_zoo `TensorBatchLoader(batch_size={BATCH}, train=True)` on the CPU: same augmentation and "
        "normalisation, on uint8 tensors decoded once",
        f"- (c) `lrds_resnet8x4` (100 classes) forward + backward + SGD step at batch {BATCH} on the CPU, "
        f"{steps} timed steps after 3 warm-up steps",
        f"- Images per second are the median of {args.reps} full epochs per pipeline, timed from `iter()` to the "
        "last batch, (a) and (b) alternating; (b)/(a) is the median of the per-repetition ratios (robust to the "
        "machine's load changing between repetitions). The demo split's one-time decode to tensors took "
        f"{decode_seconds:.2f} s (load_split + TensorImageSet.from_dataset, no cache)",
        "",
        "| data | (a) torchvision img/s | (b) TensorBatchLoader img/s | (b)/(a) | (c) training step img/s | (b)/(c) |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        lines.append(
            f"| {r['name']} | {r['torchvision']:,.0f} | {r['tensor']:,.0f} | {r['speedup']:.1f}x "
            f"| {step_rate:,.0f} | {r['tensor'] / step_rate:.1f}x |"
        )
    main_result = results[0]
    speedup, headroom = main_result["speedup"], main_result["tensor"] / step_rate
    lines += [
        "",
        f"Goals (on the synthetic data): (b)/(a) >= 10: {'met' if speedup >= 10 else 'NOT met'} "
        f"({speedup:.1f}x); (b)/(c) >= 5: {'met' if headroom >= 5 else 'NOT met'} ({headroom:.1f}x).",
        "",
        "Every repetition (images/s):",
        "",
    ]
    for r in results:
        lines.append(
            f"- {r['name']}: (a) {', '.join(f'{x:,.0f}' for x in r['torchvision_all'])}; "
            f"(b) {', '.join(f'{x:,.0f}' for x in r['tensor_all'])}"
        )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
