"""Batches of a `TensorImageSet` made on tensors, on the training device: the fast path for 32x32 data.

`TensorBatchLoader` does on the training device, for a whole batch at once, what a torchvision per-sample pipeline
does in worker processes: the CIFAR augmentation (a random 32x32 crop of the image zero-padded by 4 pixels, then a
random horizontal flip), uint8 -> float and normalisation.

Reproducibility: the sample order and every sample's crop offsets and flip are drawn for all N samples at once
from generators seeded by (seed, epoch), on the CPU, so they are the same on every device and for every number of
processes. `batch_size` is the global batch: global batch k is `perm[k*B:(k+1)*B]` and process p takes its
contiguous 1/P slice, so the union of the processes' k-th batches is, bit for bit, the one-process k-th batch.

Views: the augmentation is finite. With padding p, a crop corner (top, left) in `[0, 2p]^2` and a flip bit give
`num_views(p) = (2p + 1)^2 * 2` views of each image (162 for CIFAR's p = 4), numbered

    view = (top * (2p + 1) + left) * 2 + flip

(`encode_views` / `decode_views`): top = dy and left = dx are the corner in the zero-padded image, so the crop is the
image shifted by (p - top, p - left); flip = 1 mirrors it left-right. The un-augmented image is a view too, the
centre crop without flip: `center_view(p) = 4p(p + 1)` (80 for p = 4, 0 for p = 0). Every training batch carries its
rows' `view` next to `sample_idx` (from the same (seed, epoch) draw, so identical for any number of processes);
evaluation batches carry the centre view. (sample_idx, view) is the key of a teacher-output cache
(`kd_zoo.teacher_cache`), and `view_images` makes the images of any (sample, view) exactly as a training batch does.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..constants import CIFAR100_MEAN, CIFAR100_STD
from .tensor_set import TensorImageSet


def epoch_generator(seed: int, epoch: int, stream: int) -> torch.Generator:
    """A CPU generator for (seed, epoch, stream), mixed by numpy's SeedSequence (no collisions like seed+epoch)."""
    if seed < 0 or epoch < 0:
        raise ValueError(f"seed and epoch must be non-negative, got seed={seed}, epoch={epoch}")
    state = np.random.SeedSequence([seed, epoch, stream]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator(device="cpu").manual_seed(int(state))


def num_views(pad: int) -> int:
    """How many views the pad-`pad` crop + flip gives of each image: `(2 pad + 1)^2 * 2`."""
    if pad < 0:
        raise ValueError(f"pad must be non-negative, got {pad}")
    return (2 * pad + 1) ** 2 * 2


def center_view(pad: int) -> int:
    """The view id of the un-augmented image: the centre crop (top = left = pad), no flip."""
    num_views(pad)  # checks pad
    return (pad * (2 * pad + 1) + pad) * 2


def encode_views(offsets: torch.Tensor, flips: torch.Tensor, pad: int) -> torch.Tensor:
    """View ids `(top * (2 pad + 1) + left) * 2 + flip` (int64 `[b]`) of crop corners `[b, 2]` and flips `[b]`."""
    side = 2 * pad + 1
    return (offsets[:, 0] * side + offsets[:, 1]) * 2 + flips.long()


def decode_views(views: torch.Tensor, pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The crop corners (top, left) `[b, 2]` and flips `[b]` of view ids; a ValueError for ids outside the range."""
    views = views.long()
    total = num_views(pad)
    if views.numel() and (int(views.min()) < 0 or int(views.max()) >= total):
        raise ValueError(
            f"view ids must lie in [0, {total}) for pad {pad}, got [{int(views.min())}, {int(views.max())}]"
        )
    side = 2 * pad + 1
    position, flips = views // 2, (views % 2).bool()
    return torch.stack([position // side, position % side], dim=1), flips


def normalize_images(images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """uint8 `[b, 3, H, W]` -> float32 `(x / 255 - mean) / std`, with `mean` / `std` shaped `[1, 3, 1, 1]`.

    Separate ops (no fused multiply-add), so results are bit-identical whatever the batch split.
    """
    return images.float().div_(255.0).sub_(mean).div_(std)


def random_crop_flip(images: torch.Tensor, offsets: torch.Tensor, flips: torch.Tensor, pad: int) -> torch.Tensor:
    """Batched pad-`pad` random crop + horizontal flip, as torchvision's RandomCrop(padding=pad) + RandomHorizontalFlip.

    Args:
        images: `[b, C, H, W]` (any dtype).
        offsets: int64 `[b, 2]`, each sample's (top, left) corner in the zero-padded image, in `[0, 2*pad]`.
        flips: bool `[b]`, flip the crop left-right.
        pad: zero padding on every side.

    Returns:
        `[b, C, H, W]`: `flip?(pad(image)[:, top:top+H, left:left+W])` for each sample.
    """
    b, _, h, w = images.shape
    padded = F.pad(images, (pad, pad, pad, pad)) if pad else images
    # A view of every (top, left) window of every image, [b, C, 2p+1, 2p+1, H, W]; picking one window per
    # sample copies only the output pixels.
    windows = padded.unfold(2, h, 1).unfold(3, w, 1)
    crops = windows[torch.arange(b, device=images.device), :, offsets[:, 0], offsets[:, 1]]
    if images.is_cuda:  # no host sync on the GPU
        return torch.where(flips[:, None, None, None], crops.flip(3), crops)
    flipped = flips.nonzero().squeeze(1)  # on the CPU, copying only the flipped half is faster
    return crops.index_copy_(0, flipped, crops.index_select(0, flipped).flip(3))


class TensorBatchLoader:
    """Batches of a `TensorImageSet` made on tensors, on the training device (see the module docstring).

    Training (`train=True`): a permutation from (seed, epoch); global batch k is `perm[k*B:(k+1)*B]` and process p
    takes rows `[p*B/P, (p+1)*B/P)` of it. The incomplete last global batch is dropped (`drop_last=True`, the
    default): every process then gets equal batches (no rank waits on another, BatchNorm never sees a tiny batch)
    and the set of samples seen does not depend on the number of processes. `drop_last=False` is allowed with one
    process only. Each sample's crop offsets and flip are drawn for all N samples from (seed, epoch), so a sample
    gets the same augmentation whatever its batch or process.

    Evaluation (`train=False`): no augmentation, no shuffling; process p gets the contiguous shard
    `[p*N//P, (p+1)*N//P)` (unpadded: every sample exactly once across processes), in batches of `B/P`. Every
    process yields `len(self)` batches so that collective calls in an evaluation loop line up; a shard one sample
    shorter than the longest may end with a smaller (rarely an empty) batch.

    Call `set_epoch(epoch)` before each training epoch, as with `DistributedSampler`.

    Args:
        data: the decoded split.
        batch_size: the global batch size B (divisible by `num_processes`).
        train: training (shuffle + augment) or evaluation order.
        seed: base seed of the order and the augmentation.
        mean: per-channel mean of the normalisation (0-1 scale).
        std: per-channel standard deviation of the normalisation.
        device: where the images live and batches are made (e.g. `accelerator.device`).
        process_index: this process's rank p.
        num_processes: the number of processes P.
        drop_last: drop the incomplete last batch (default: True when training; evaluation never drops).
        pad: zero padding of the random crop (4 for CIFAR; 0 for flips only).
        normalize: yield normalised float32 images; False yields the augmented uint8 images.

    Yields:
        `{"image": float32 [b, 3, H, W], "label": int64 [b], "sample_idx": int64 [b], "view": int64 [b]}` on
        `device`; `view` is each row's augmentation (see the module docstring), the centre view in evaluation.
    """

    def __init__(
        self,
        data: TensorImageSet,
        batch_size: int,
        *,
        train: bool,
        seed: int = 0,
        mean: Sequence[float] = CIFAR100_MEAN,
        std: Sequence[float] = CIFAR100_STD,
        device: str | torch.device = "cpu",
        process_index: int = 0,
        num_processes: int = 1,
        drop_last: bool | None = None,
        pad: int = 4,
        normalize: bool = True,
    ):
        if num_processes < 1 or not 0 <= process_index < num_processes:
            raise ValueError(f"process_index must be in [0, {num_processes}), got {process_index}")
        if batch_size < 1 or batch_size % num_processes:
            raise ValueError(
                f"batch_size is the global batch and must be a positive multiple of num_processes={num_processes}, "
                f"got {batch_size}; use e.g. {max(1, batch_size // num_processes) * num_processes}"
            )
        if seed < 0 or pad < 0:
            raise ValueError(f"seed and pad must be non-negative, got seed={seed}, pad={pad}")
        if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
            raise ValueError(f"mean and std need 3 values (std > 0), got mean={mean}, std={std}")
        drop_last = train if drop_last is None else drop_last
        if not train and drop_last:
            raise ValueError("evaluation visits every sample once; drop_last=True applies to training only")
        if train and not drop_last and num_processes > 1:
            raise ValueError(
                "drop_last=False with several processes would give the processes unequal last batches; keep the "
                "default (the incomplete last global batch is dropped) or train with one process"
            )
        if train and drop_last and len(data) < batch_size:
            raise ValueError(
                f"batch_size {batch_size} exceeds the {len(data)} training samples: no full batch to train on"
            )
        self.data = data
        self.batch_size = batch_size
        self.local_batch_size = batch_size // num_processes
        self.train = train
        self.seed = seed
        self.process_index = process_index
        self.num_processes = num_processes
        self.drop_last = drop_last
        self.pad = pad
        self.normalize = normalize
        self.device = torch.device(device)
        self.epoch = 0
        self._last_iterated_epoch: int | None = None
        self._images = data.images.to(self.device)
        self._labels = data.labels.to(self.device)
        self._sample_idx = data.sample_idx.to(self.device)
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self._mean = torch.tensor(mean, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        self._std = torch.tensor(std, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)

    @property
    def augmentation(self) -> dict[str, Any]:
        """What the training batches are made with: image size, padding, flip, and the number of views."""
        return {"size": list(self.data.image_size), "pad": self.pad, "flip": True, "num_views": num_views(self.pad)}

    @property
    def normalization(self) -> dict[str, list[float]]:
        """The normalisation of the images (0-1 scale), or empty lists when `normalize=False`."""
        return {"mean": list(self.mean), "std": list(self.std)} if self.normalize else {"mean": [], "std": []}

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order and augmentation the next iteration uses (asked for explicitly, so a
        repeated epoch, as a second training on the same loader starts with, is intended and not warned about)."""
        if epoch < 0:
            raise ValueError(f"epoch must be non-negative, got {epoch}")
        self.epoch = int(epoch)
        self._last_iterated_epoch = None

    def __len__(self) -> int:
        n = len(self.data)
        if self.train:
            return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)
        return math.ceil(math.ceil(n / self.num_processes) / self.local_batch_size)

    def order(self, epoch: int | None = None) -> torch.Tensor:
        """Positions of the samples in global order: the (seed, epoch) permutation, or 0..N-1 for evaluation."""
        n = len(self.data)
        if not self.train:
            return torch.arange(n)
        epoch = self.epoch if epoch is None else epoch
        return torch.randperm(n, generator=epoch_generator(self.seed, epoch, 0))

    def augmentation_params(self, epoch: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Every sample's crop corner `[N, 2]` (top, left in `[0, 2*pad]`) and flip `[N]` for an epoch (CPU)."""
        epoch = self.epoch if epoch is None else epoch
        generator = epoch_generator(self.seed, epoch, 1)
        n = len(self.data)
        offsets = torch.randint(0, 2 * self.pad + 1, (n, 2), generator=generator)
        flips = torch.randint(0, 2, (n,), generator=generator).bool()
        return offsets, flips

    def _slices(self) -> list[tuple[int, int]]:
        """(start, end) in the global order of each of this process's batches."""
        b, p = self.local_batch_size, self.process_index
        n = len(self.data)
        if self.train:
            # Process p's part of global batch k; the last global batch may be short only with drop_last=False
            # (one process).
            return [(k * self.batch_size + p * b, min(k * self.batch_size + (p + 1) * b, n)) for k in range(len(self))]
        start, end = p * n // self.num_processes, (p + 1) * n // self.num_processes
        return [(min(start + k * b, end), min(start + (k + 1) * b, end)) for k in range(len(self))]

    def local_batches(self, epoch: int | None = None) -> list[torch.Tensor]:
        """The sample positions of each of this process's batches (CPU), in order."""
        order = self.order(epoch)
        return [order[start:end] for start, end in self._slices()]

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        epoch = self.epoch
        if self.train and self._last_iterated_epoch == epoch:
            warnings.warn(
                f"TensorBatchLoader iterated twice with epoch {epoch}: the order and augmentation repeat. Call "
                "set_epoch(epoch) before each epoch.",
                UserWarning,
                stacklevel=2,
            )
        self._last_iterated_epoch = epoch
        offsets = flips = None
        if self.train:
            offsets, flips = (t.to(self.device) for t in self.augmentation_params(epoch))
        order = self.order(epoch).to(self.device)
        for start, end in self._slices():
            with _one_cpu_thread(self.device):
                batch = self._make_batch(order[start:end], offsets, flips)
            yield batch

    def view_images(self, positions: torch.Tensor, views: torch.Tensor) -> torch.Tensor:
        """The images of samples (row positions in `data`) at the given views, made exactly as a training batch
        makes them (normalised unless `normalize=False`), on `device`; for building a teacher-output cache."""
        positions, views = positions.to(self.device), views.to(self.device)
        offsets, flips = decode_views(views, self.pad)
        images = random_crop_flip(self._images.index_select(0, positions), offsets, flips, self.pad)
        return normalize_images(images, self._mean, self._std) if self.normalize else images

    def _make_batch(
        self, idx: torch.Tensor, offsets: torch.Tensor | None, flips: torch.Tensor | None
    ) -> dict[str, torch.Tensor]:
        images = self._images.index_select(0, idx)
        if offsets is not None and flips is not None:
            offsets, flips = offsets[idx], flips[idx]
            images = random_crop_flip(images, offsets, flips, self.pad)
            views = encode_views(offsets, flips, self.pad)
        else:
            views = torch.full((idx.shape[0],), center_view(self.pad), dtype=torch.int64, device=self.device)
        if self.normalize:
            images = normalize_images(images, self._mean, self._std)
        return {"image": images, "label": self._labels[idx], "sample_idx": self._sample_idx[idx], "view": views}


@contextlib.contextmanager
def _one_cpu_thread(device: torch.device) -> Iterator[None]:
    """Make CPU batches with one intra-op thread: the ops are small, and when another process holds a core, a
    parallel region waits for it (measured: 2 threads fell to ~1k images/s under load, 1 thread kept ~50k)."""
    if device.type != "cpu":
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
