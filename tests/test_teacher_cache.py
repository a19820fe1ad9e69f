"""The teacher-output cache: views as data, an exact cache, the step reading it, resume, and every refusal.

Exactness on the embedded demo digits with tiny timm-style models (every view of every sample in seconds): cached
float32 logits equal the live teacher's on the same views; a `fit` run from a float32 cache logs the live run's loss
terms step by step; a float16 cache is the float32 cache rounded, and moves the KD loss by no more than
`kd_loss_rounding_bound`. Then: a killed build resumes (and a half-written shard never reads as whole), and each
bad input (another teacher, data, padding or normalisation, an incomplete or truncated build, samples the cache
lacks, a feature method, a dtype or size the device cannot hold) is refused with what to do.
"""

import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from datasets import ClassLabel, Dataset, Features, Image
from recipe_runner import run_recipe
from safetensors.torch import save_file
from torch import nn

import kd_zoo  # noqa: F401
import kd_zoo.teacher_cache.reader as reader_module
import kd_zoo.teacher_cache.storage as storage_module
from kd_zoo.config import parse_recipe_args
from kd_zoo.constants import CIFAR100_MEAN, CIFAR100_STD
from kd_zoo.data import TensorBatchLoader, TensorImageSet, load_tensor_split
from kd_zoo.data.tensor_loader import center_view, decode_views, encode_views, num_views
from kd_zoo.engine import Distiller, FitOptions, fit, freeze, sgd, step_lr
from kd_zoo.engine.tracking import JsonlTracker, read_jsonl
from kd_zoo.hub import find_private_content
from kd_zoo.hub.cache_export import cache_repo_name, export_teacher_cache
from kd_zoo.methods import StepContext, create_method
from kd_zoo.methods.kd import kd_loss
from kd_zoo.revision import LabelRevision
from kd_zoo.selection import ScoreSet, score_dataset
from kd_zoo.teacher_cache import (
    CacheDeviceError,
    CacheFormatError,
    CacheMethodError,
    CacheMismatchError,
    IncompleteCacheError,
    TeacherCache,
    TeacherCacheError,
    build_teacher_cache,
    fp16_rounding,
    kd_loss_rounding_bound,
    kl_rounding_bound,
    logit_only_methods,
)

ROOT = Path(__file__).resolve().parents[1]
PAD = 1  # 18 views: every view of the 1,437 digits is 25,866 images
CTX = StepContext(epoch=3, num_epochs=10, step=2, steps_per_epoch=22)


class TinyNet(nn.Module):
    """A timm-style classifier (forward_features / forward_head / get_classifier / pretrained_cfg) small enough
    to run on every view of the demo digits in a second."""

    def __init__(self, num_classes: int = 10, width: int = 8, seed: int = 0):
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.num_classes, self.num_features = num_classes, 2 * width
        self.stem = nn.Sequential(nn.Conv2d(3, width, 3, 2, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        self.stage = nn.Sequential(nn.Conv2d(width, 2 * width, 3, 2, 1), nn.BatchNorm2d(2 * width), nn.ReLU())
        self.fc = nn.Linear(2 * width, num_classes)
        with torch.no_grad():
            for p in self.parameters():  # logits of a few units, as a trained teacher's
                p.copy_(torch.randn(p.shape, generator=generator) * (1.0 if p.dim() > 1 else 0.3))
        self.pretrained_cfg = {"architecture": "tiny_net", "mean": CIFAR100_MEAN, "std": CIFAR100_STD}
        self.feature_info = [
            {"num_chs": width, "reduction": 2, "module": "stem"},
            {"num_chs": 2 * width, "reduction": 4, "module": "stage"},
        ]

    def forward_features(self, x):
        return self.stage(self.stem(x))

    def forward_head(self, x, pre_logits: bool = False):
        x = x.mean((2, 3))
        return x if pre_logits else self.fc(x)

    def get_classifier(self):
        return self.fc

    def forward(self, x):
        return self.forward_head(self.forward_features(x))


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Tiny models run on small tensors: one intra-op thread avoids OpenMP waits when other processes hold a core."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def train():
    return load_tensor_split(None, "train")


@pytest.fixture(scope="module")
def teacher():
    return freeze(TinyNet(seed=1))


@pytest.fixture(scope="module")
def caches(tmp_path_factory, teacher, train):
    """Every view of the demo digits cached in float32 (pad 1, contiguous inputs) in `<root>/float32`."""
    root = tmp_path_factory.mktemp("caches")
    report = build_teacher_cache(
        teacher, train, root / "float32", pad=PAD, dtype="float32", batch_size=512, channels_last=False, progress=False
    )
    assert report.complete and report.built == report.num_shards == 4 and report.images == len(train) * 18
    return root


@pytest.fixture(scope="module")
def small(tmp_path_factory, teacher, train):
    """The first 230 samples cached in 10 shards, uninterrupted: what resumed builds must reproduce."""
    subset = _first(train, 230)
    folder = tmp_path_factory.mktemp("small") / "cache"
    assert build_teacher_cache(teacher, subset, folder, **SMALL).complete
    return subset, folder


SMALL = dict(pad=PAD, dtype="float32", batch_size=512, shard_rows=23, channels_last=False, progress=False)


def _loader(data, pad=PAD, **kwargs):
    return TensorBatchLoader(data, 64, train=True, seed=0, pad=pad, **kwargs)


def _synthetic(n: int, seed: int = 0) -> TensorImageSet:
    generator = torch.Generator().manual_seed(seed)
    return TensorImageSet(
        images=torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=generator),
        labels=torch.randint(0, 10, (n,), generator=generator),
        sample_idx=torch.arange(n) * 3 + 1,
        class_names=[str(i) for i in range(10)],
        fingerprint={"name": "synthetic", "split": "train"},
    )


def _first(data: TensorImageSet, n: int) -> TensorImageSet:
    """The first n samples, with a fingerprint of their own."""
    fingerprint = {
        **data.fingerprint,
        "num_rows": n,
        "content_sha256": f"first-{n}-of-{data.fingerprint['content_sha256']}",
    }
    return TensorImageSet(data.images[:n], data.labels[:n], data.sample_idx[:n], data.class_names, fingerprint)


# -- views as data ---------------------------------------------------------------------------------------------------
def test_view_ids_encode_every_crop_and_flip():
    assert [num_views(p) for p in (0, 1, 4)] == [2, 18, 162]
    assert [center_view(p) for p in (0, 1, 4)] == [0, 8, 80]
    for pad in (0, 1, 4):
        side = 2 * pad + 1
        offsets = torch.tensor([[t, left] for t in range(side) for left in range(side) for _ in (0, 1)])
        flips = torch.tensor([False, True] * side * side)
        views = encode_views(offsets, flips, pad)
        assert torch.equal(views, torch.arange(num_views(pad)))  # a bijection onto 0..V-1, in that order
        back_offsets, back_flips = decode_views(views, pad)
        assert torch.equal(back_offsets, offsets) and torch.equal(back_flips, flips)
    assert decode_views(torch.tensor([80]), 4)[0].tolist() == [[4, 4]]  # the centre view: no shift, no flip
    with pytest.raises(ValueError, match=r"\[0, 162\)"):
        decode_views(torch.tensor([162]), 4)


def test_batches_carry_their_views_identically_for_any_number_of_processes():
    data = _synthetic(40)
    single = TensorBatchLoader(data, 16, train=True, seed=3)
    single.set_epoch(2)
    offsets, flips = single.augmentation_params(2)
    position = {int(s): i for i, s in enumerate(data.sample_idx)}
    batches = list(single)
    for batch in batches:
        positions = torch.tensor([position[int(s)] for s in batch["sample_idx"]])
        assert torch.equal(batch["view"], encode_views(offsets[positions], flips[positions], 4))
        # view_images makes exactly the training images of (sample, view)
        assert torch.equal(single.view_images(positions, batch["view"]), batch["image"])
    for rank in range(2):
        loader = TensorBatchLoader(data, 16, train=True, seed=3, process_index=rank, num_processes=2)
        loader.set_epoch(2)
        for k, part in enumerate(loader):
            assert torch.equal(part["view"], batches[k]["view"][rank * 8 : (rank + 1) * 8])
    evaluation = TensorBatchLoader(data, 16, train=False)
    batch = next(iter(evaluation))
    assert torch.equal(batch["view"], torch.full((16,), 80))  # evaluation: the un-augmented image, the centre view
    assert torch.equal(evaluation.view_images(torch.arange(16), batch["view"]), batch["image"])


# -- exactness -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("placement", ["device", "mmap"])
def test_float32_cache_equals_the_live_teacher_on_every_view(caches, teacher, train, placement):
    cache = TeacherCache.open(caches / "float32", placement=placement)
    assert cache.placement == ("on cpu" if placement == "device" else "memory-mapped")
    assert len(cache) == len(train) and cache.num_views == 18 and cache.dtype == torch.float32
    loader = _loader(train)
    cache.check_run(teacher, loader)  # the good input passes
    for epoch in (0, 1):
        loader.set_epoch(epoch)
        for batch in loader:
            with torch.no_grad():
                live = teacher(batch["image"])
            cached = cache.lookup(batch["sample_idx"], batch["view"])
            torch.testing.assert_close(cached, live, rtol=1e-5, atol=1e-5)  # float reordering only
    # every view of a few samples, in one batch
    positions = torch.tensor([0, 700, 1436]).repeat_interleave(18)
    views = torch.arange(18).repeat(3)
    with torch.no_grad():
        live = teacher(loader.view_images(positions, views))
    torch.testing.assert_close(cache.lookup(train.sample_idx[positions], views), live, rtol=1e-5, atol=1e-5)


def test_the_centre_view_is_the_un_augmented_image(caches, teacher, train):
    cache = TeacherCache.open(caches / "float32")
    evaluation = TensorBatchLoader(train, 128, train=False, pad=PAD)
    batch = next(iter(evaluation))
    with torch.no_grad():
        live = teacher(batch["image"])
    torch.testing.assert_close(cache.lookup(batch["sample_idx"], batch["view"]), live, rtol=1e-5, atol=1e-5)
    assert cache.metadata["teacher_accuracy"] == pytest.approx(
        (cache.lookup(train.sample_idx, torch.full_like(train.sample_idx, 8)).argmax(1) == train.labels).float().mean()
    )


def _fit(accelerator, train, test, run_dir, teacher, cache, mask):
    torch.manual_seed(0)
    student = TinyNet(seed=7)
    method = create_method("kd", student, teacher)
    distiller = Distiller(student, method, LabelRevision(), teacher_cache=cache)
    optimizer = sgd(distiller, 0.05)
    distiller, optimizer = accelerator.prepare(distiller, optimizer)
    options = FitOptions(2, step_lr(0.05, [1]), progress=False, log_every=1, checkpoint_every=10)
    eval_loader = TensorBatchLoader(test, 128, train=False)
    fit(
        accelerator,
        distiller,
        optimizer,
        _loader(train),
        eval_loader,
        options,
        run_dir=run_dir,
        teacher=None if cache is not None else teacher,
        distill_mask=mask,
    )
    return [r for r in read_jsonl(run_dir / "metrics.jsonl") if "train/loss" in r]


def test_fit_from_a_float32_cache_logs_the_live_runs_loss_terms_step_by_step(caches, teacher, train, tmp_path):
    test = load_tensor_split(None, "test")
    mask = torch.zeros(len(train), dtype=torch.bool)
    mask[torch.randperm(len(train), generator=torch.Generator().manual_seed(0))[: int(0.8 * len(train))]] = True
    runs = {}
    for name, cache in (("live", None), ("cache", TeacherCache.open(caches / "float32"))):
        AcceleratorState._reset_state(reset_partial_state=True)
        run_dir = tmp_path / name
        acc = Accelerator(cpu=True, log_with=[JsonlTracker("t", run_dir)], project_dir=str(run_dir))
        acc.init_trackers("t")
        runs[name] = _fit(acc, train, test, run_dir, teacher, cache, mask)
        acc.end_training()
    AcceleratorState._reset_state(reset_partial_state=True)
    live, cached = runs["live"], runs["cache"]
    assert len(live) == len(cached) == 2 * (len(train) // 64)
    terms = {k for k in live[0] if k.startswith("train/loss")}
    assert {"train/loss_ce_ds", "train/loss_lr_ce", "train/loss_lr_right", "train/loss_lr_wrong"} <= terms
    for step_live, step_cached in zip(live, cached, strict=True):
        assert set(step_cached) == set(step_live)
        for key in terms:
            assert step_cached[key] == pytest.approx(step_live[key], rel=1e-4, abs=1e-6), (step_live["epoch"], key)


@pytest.mark.parametrize("lr", [False, True], ids=["lr_off", "lr_on"])
@pytest.mark.parametrize("name", logit_only_methods())
def test_every_logit_method_reads_the_cache_in_the_one_step(caches, teacher, train, name, lr):
    cache = TeacherCache.open(caches / "float32")
    loader = _loader(train)
    loader.set_epoch(0)
    batch = next(iter(loader))
    mask = torch.arange(64) % 5 != 0
    outs = []
    for source in ("live", "cache"):
        torch.manual_seed(0)
        student = TinyNet(seed=3)
        distiller = Distiller(
            student,
            create_method(name, student, teacher),
            LabelRevision() if lr else None,
            teacher_cache=cache if source == "cache" else None,
        ).train()
        keys = {"sample_idx": batch["sample_idx"], "view": batch["view"]}
        live_teacher = teacher if source == "live" else None
        outs.append(distiller(batch["image"], batch["label"], mask, teacher=live_teacher, ctx=CTX, **keys))
    live, cached = outs
    assert set(cached.terms) == set(live.terms) and cached.num_distilled == 51
    for key in live.terms:
        torch.testing.assert_close(cached.terms[key], live.terms[key], rtol=1e-5, atol=1e-6)
    cached.loss.backward()
    assert all(p.grad is not None for p in distiller.parameters())  # student and method extras learn


def test_float16_cache_is_the_rounded_float32_cache_within_the_stated_kd_bound(small, teacher, tmp_path):
    subset, folder32 = small
    build_teacher_cache(teacher, subset, tmp_path / "f16", **{**SMALL, "dtype": "float16"})
    c32, c16 = TeacherCache.open(folder32), TeacherCache.open(tmp_path / "f16")
    assert c16.nbytes * 2 == c32.nbytes
    sample_idx, views = subset.sample_idx.repeat_interleave(18), torch.arange(18).repeat(len(subset))
    t32, t16 = c32.lookup(sample_idx, views), c16.lookup(sample_idx, views)
    assert torch.equal(t16, t32.half().float())  # the same computation, only the storage rounds
    torch.manual_seed(0)
    for scale in (0.5, 2.0, 8.0):  # students from far off to close to the teacher
        student = t32 + scale * torch.randn_like(t32)
        for temperature, weight in ((4.0, 0.9), (1.0, 1.0)):
            change = abs(float(weight * (kd_loss(student, t16, temperature) - kd_loss(student, t32, temperature))))
            bound = kd_loss_rounding_bound(t32, student, temperature, weight)
            assert change <= bound, (scale, temperature, change, bound)
            assert bound > 0
    # not vacuous: moving each logit by 3 x its allowed error along the KL's gradient exceeds the bound
    student = t32 + 0.5 * torch.randn_like(t32)
    rounding = fp16_rounding(t32)
    log_p = torch.log_softmax(t32.double() / 4, 1)
    r = log_p - torch.log_softmax(student.double() / 4, 1)
    direction = torch.sign(log_p.exp() * (r - (log_p.exp() * r).sum(1, keepdim=True)))
    pushed = t32.double() + 3 * rounding.double().amax(1, keepdim=True) * direction
    per_sample = kl_rounding_bound(t32, student, 4.0, rounding.amax(1, keepdim=True).expand_as(rounding))

    def kl(t):
        return (torch.softmax(t / 4, 1) * (torch.log_softmax(t / 4, 1) - torch.log_softmax(student / 4, 1))).sum(1)

    assert ((kl(pushed) - kl(t32.double())).abs() > per_sample).float().mean() > 0.9


# -- building: resume, crash safety ------------------------------------------------------------------------------
def _shard_hashes(folder: Path) -> dict[str, str]:
    """Each shard's sha256 (shards are byte-reproducible: same teacher, data and settings, same bytes)."""
    return {e["file"]: e["sha256"] for e in json.loads((folder / "cache.json").read_text())["shards"]}


def test_a_killed_build_resumes_and_a_half_written_shard_never_reads_as_whole(small, teacher, tmp_path, monkeypatch):
    subset, uninterrupted = small
    folder = tmp_path / "cache"
    first = build_teacher_cache(teacher, subset, folder, stop_after_shards=3, **SMALL)
    assert not first.complete and first.built == 3
    with pytest.raises(IncompleteCacheError, match=r"unfinished build \(3 of 10 shards.*run the same build again"):
        TeacherCache.open(folder)
    # killed while writing the 3rd shard of the next call: the temporary file never gets the shard's name
    real_replace, calls = os.replace, []

    def dying_replace(src, dst):
        if str(dst).endswith(".safetensors"):
            calls.append(dst)
            if len(calls) == 3:
                raise KeyboardInterrupt("killed")
        return real_replace(src, dst)

    monkeypatch.setattr(storage_module.os, "replace", dying_replace)
    with pytest.raises(KeyboardInterrupt):
        build_teacher_cache(teacher, subset, folder, **SMALL)
    monkeypatch.setattr(storage_module.os, "replace", real_replace)
    assert len(list((folder / "shards").glob("*.safetensors"))) == 5
    assert not (folder / "shards" / Path(calls[2]).name).exists()
    assert not list((folder / "shards").glob(".*tmp*"))  # the half-written file was removed
    leftover = folder / "shards" / ".logits-00007-of-00010.safetensors.tmp-999-deadbeef"
    leftover.write_bytes(b"half a shard")  # as a SIGKILL leaves it
    resumed = build_teacher_cache(teacher, subset, folder, **SMALL)
    assert resumed.complete and resumed.reused == 5 and resumed.built == 5
    assert _shard_hashes(folder) == _shard_hashes(uninterrupted)  # as if never interrupted, byte for byte
    assert not leftover.exists()
    again = build_teacher_cache(teacher, subset, folder, **SMALL)
    assert again.complete and again.built == 0 and again.images == 0  # built once


def test_a_truncated_or_foreign_shard_is_refused_then_rebuilt(small, teacher, tmp_path):
    subset, uninterrupted = small
    folder = tmp_path / "cache"
    shutil.copytree(uninterrupted, folder)
    shard, other = (folder / "shards" / f"logits-0000{j}-of-00010.safetensors" for j in (4, 5))
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) - 100])
    with pytest.raises(CacheFormatError, match=r"logits-00004.*truncated: .* bytes of the .* its header declares"):
        TeacherCache.open(folder)
    shutil.copy(other, shard)  # a whole shard, but not shard 4
    with pytest.raises(CacheFormatError, match="logits-00004.* belongs to another build"):
        TeacherCache.open(folder)
    (folder / "shards" / "logits-00008-of-00010.safetensors").unlink()
    report = build_teacher_cache(teacher, subset, folder, **SMALL)
    assert report.complete and report.built == 2 and report.reused == 8
    assert _shard_hashes(folder) == _shard_hashes(uninterrupted)
    (folder / "shards" / "logits-00008-of-00010.safetensors").unlink()
    with pytest.raises(IncompleteCacheError, match="lacks 1 of its 10 shards"):
        TeacherCache.open(folder)
    shutil.copy(uninterrupted / "shards" / "logits-00008-of-00010.safetensors", folder / "shards")
    corrupt = bytearray(shard.read_bytes())  # a flipped byte keeps the size: only the sha256 check sees it
    corrupt[-1] ^= 0xFF
    shard.write_bytes(bytes(corrupt))
    TeacherCache.open(folder)
    with pytest.raises(CacheFormatError, match="sha256"):
        TeacherCache.open(folder, verify="sha256")


def test_a_folder_with_another_build_is_refused_unless_overwrite(small, teacher, tmp_path):
    subset, uninterrupted = small
    folder = tmp_path / "cache"
    shutil.copytree(uninterrupted, folder)
    options = {**SMALL, "dtype": "float16"}
    with pytest.raises(FileExistsError, match="overwrite=True"):
        build_teacher_cache(teacher, subset, folder, **options)
    report = build_teacher_cache(teacher, subset, folder, overwrite=True, **options)
    assert report.complete and report.built == 10
    assert TeacherCache.open(folder).dtype == torch.float16
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("not a cache")
    with pytest.raises(FileExistsError, match="choose another folder"):
        build_teacher_cache(teacher, subset, tmp_path / "mine", **options)


def test_channels_last_build_agrees_to_float_tolerance(teacher, train, tmp_path):
    subset = _first(train, 100)
    build_teacher_cache(teacher, subset, tmp_path / "c", pad=PAD, dtype="float32", progress=False, channels_last=True)
    cache = TeacherCache.open(tmp_path / "c")
    positions, views = torch.arange(100).repeat_interleave(18), torch.arange(18).repeat(100)
    with torch.no_grad():
        live = teacher(TensorBatchLoader(subset, 1, train=False, pad=PAD).view_images(positions, views))
    torch.testing.assert_close(cache.lookup(subset.sample_idx[positions], views), live, rtol=1e-4, atol=1e-4)
    assert teacher.stem[0].weight.is_contiguous()  # the teacher's memory format is restored


# -- refusals, each with what to do ---------------------------------------------------------------------------------
def test_a_cache_of_another_run_is_refused_naming_each_difference(caches, teacher, train):
    cache = TeacherCache.open(caches / "float32")
    with pytest.raises(CacheMismatchError, match=r"teacher: .*fingerprint .*load the teacher the cache was built"):
        cache.check_run(freeze(TinyNet(seed=2)), _loader(train))
    test = load_tensor_split(None, "test")
    with pytest.raises(
        CacheMismatchError, match=r"data: the cache was built on demo / train .*the run trains on demo / test"
    ):
        cache.check_run(teacher, _loader(test))
    with pytest.raises(CacheMismatchError, match=r"augmentation: .*pad 1, the run's loader uses 4.*pad=1"):
        cache.check_run(teacher, _loader(train, pad=4))
    with pytest.raises(CacheMismatchError, match=r"normalisation: .*mean \[0.5071.*caching.mean / caching.std"):
        cache.check_run(teacher, _loader(train, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25)))
    shifted = TensorImageSet(train.images, train.labels, train.sample_idx + 5000, train.class_names, train.fingerprint)
    with pytest.raises(CacheMismatchError, match=r"samples: the cache lacks 1437 of the split's 1437 sample_idx"):
        cache.check_run(teacher, _loader(shifted))
    relabelled = TensorImageSet(
        train.images, train.labels.roll(1), train.sample_idx, train.class_names, train.fingerprint
    )
    with pytest.raises(CacheMismatchError, match=r"decoded images, labels or sample_idx differ"):
        cache.check_run(teacher, _loader(relabelled))
    # several differences at once: every one named
    with pytest.raises(CacheMismatchError) as err:
        cache.check_run(freeze(TinyNet(seed=2)), _loader(test, pad=0))
    assert all(part in str(err.value) for part in ("teacher:", "data:", "augmentation:"))
    with pytest.raises(CacheMismatchError, match=r"sample_idx \[5000\] are not in the teacher cache"):
        cache.lookup(torch.tensor([5000]), torch.tensor([0]))
    with pytest.raises(CacheMismatchError, match=r"view ids must lie in \[0, 18\)"):
        cache.lookup(torch.tensor([0]), torch.tensor([18]))


def test_a_feature_method_with_a_cache_is_refused_naming_the_methods_it_serves(caches):
    assert logit_only_methods() == ["ctkd", "dkd", "dtd_la", "kd"]
    cache = TeacherCache.open(caches / "float32")
    student = kd_zoo.create_model("lrds_resnet8", num_classes=10)
    teacher = kd_zoo.create_model("lrds_resnet8x4", num_classes=10)
    served = r"serves ctkd, dkd, dtd_la, kd .*live teacher"
    for name in ("fitnet", "pkt", "vid", "srrl", "semckd"):
        method = create_method(name, student, teacher)
        with pytest.raises(CacheMethodError, match=rf"method '{name}' needs the teacher's features.*{served}"):
            Distiller(student, method, LabelRevision(), teacher_cache=cache)


def test_batches_without_views_are_refused_by_the_step(caches, train):
    cache = TeacherCache.open(caches / "float32")
    student = TinyNet(seed=3)
    distiller = Distiller(student, create_method("kd", student, TinyNet()), teacher_cache=cache)
    images, labels = torch.randn(4, 3, 32, 32), torch.zeros(4, dtype=torch.long)
    with pytest.raises(CacheMismatchError, match="sample_idx and view"):
        distiller(images, labels, teacher=None, ctx=CTX, sample_idx=train.sample_idx[:4], view=None)
    with pytest.raises(CacheMismatchError, match="TensorBatchLoader"):
        cache.check_run(None, [{"image": images}])


def test_logits_float16_cannot_hold_are_refused_before_anything_is_stored(train, tmp_path):
    loud = freeze(TinyNet(seed=1))
    with torch.no_grad():
        loud.fc.weight.mul_(1e5)  # logits beyond float16's 65504
    subset = _first(train, 40)
    with pytest.raises(TeacherCacheError, match="NaN or infinite .*build with dtype float32"):
        build_teacher_cache(loud, subset, tmp_path / "f16", pad=0, progress=False)
    assert not list((tmp_path / "f16" / "shards").glob("*.safetensors"))
    assert build_teacher_cache(loud, subset, tmp_path / "f32", pad=0, dtype="float32", progress=False).complete


def test_incomplete_or_foreign_folders_are_refused(caches, tmp_path):
    with pytest.raises(CacheFormatError, match=r"not a teacher cache \(no cache.json\)"):
        TeacherCache.open(tmp_path)
    with pytest.raises(FileNotFoundError, match="neither a folder nor a Hub data set id"):
        TeacherCache.open(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="cannot fetch the teacher cache 'kd-zoo/no-such-logits' from the Hub"):
        TeacherCache.open("kd-zoo/no-such-logits")  # the tests run offline
    folder = tmp_path / "c"
    shutil.copytree(caches / "float32", folder)
    manifest = json.loads((folder / "cache.json").read_text())
    (folder / "cache.json").write_text(json.dumps({**manifest, "complete": False}))
    with pytest.raises(IncompleteCacheError, match="complete build"):
        TeacherCache.open(folder)


def test_a_dtype_or_size_the_device_cannot_hold_is_refused(small, monkeypatch):
    _, folder = small
    with pytest.raises(CacheDeviceError, match=r"GiB, more than the .* allowed on cpu: .*placement='mmap'"):
        TeacherCache.open(folder, placement="device", max_device_bytes=1000)
    assert TeacherCache.open(folder, max_device_bytes=1000).placement == "memory-mapped"  # auto
    monkeypatch.setattr(reader_module, "device_holds", lambda dtype, device: "float32 is not supported here")
    with pytest.raises(CacheDeviceError, match=r"float32 logits, which cpu cannot hold .*placement='mmap'"):
        TeacherCache.open(folder, placement="device")
    assert TeacherCache.open(folder).placement == "memory-mapped"  # auto reads them by memory map


# -- Data Selection from the build, and the Hub folder ----------------------------------------------------------
def test_score_set_from_the_cache_is_the_one_score_py_writes(caches, teacher, train):
    direct = score_dataset(teacher, train, "influence")
    cached = TeacherCache.open(caches / "float32").score_set("influence")
    for column in ("sample_idx", "teacher_pred", "teacher_correct", "label"):
        assert np.array_equal(cached.column(column), direct.column(column)), column
    np.testing.assert_allclose(cached.scores, direct.scores, rtol=1e-4, atol=1e-9 * np.abs(direct.scores).max())
    assert np.array_equal(cached.join(train, teacher).distill_mask(0.8), direct.join(train, teacher).distill_mask(0.8))
    for key in ("format", "teacher", "data_fingerprint", "scorer", "num_rows"):
        assert cached.metadata[key] == direct.metadata[key], key
    assert cached.metadata["settings"].keys() == direct.metadata["settings"].keys()
    assert cached.metadata["teacher_mistakes"]["count"] == direct.metadata["teacher_mistakes"]["count"]


def test_export_writes_a_public_card_and_keeps_the_cache_readable(small, teacher, tmp_path):
    subset, uninterrupted = small
    folder = tmp_path / "cache"
    shutil.copytree(uninterrupted, folder)
    manifest = json.loads((folder / "cache.json").read_text())
    manifest["teacher"]["weights"] = str(tmp_path / "secret" / "teacher.safetensors")
    (folder / "cache.json").write_text(json.dumps(manifest))
    export_teacher_cache(folder, repo_id="kd-zoo/digits-tiny-logits")
    card = (folder / "README.md").read_text()
    expected = [manifest["teacher"]["weights_fingerprint"], manifest["data"]["content_sha256"], "18 per image"]
    expected += ["mean [0.5071", 'TeacherCache.open("kd-zoo/digits-tiny-logits"', "float32", "arXiv 2404.03693"]
    for text in expected:
        assert text in card, text
    assert find_private_content(folder) == []
    public = json.loads((folder / "cache.json").read_text())
    assert public["teacher"]["weights"] == "teacher.safetensors"
    cache = TeacherCache.open(folder, verify="sha256")
    cache.check_run(teacher, _loader(subset))
    assert cache_repo_name(public) == "digits-tiny_net-pad1-fp32-logits"


def test_export_refuses_an_incomplete_build(teacher, train, tmp_path):
    build_teacher_cache(teacher, train, tmp_path / "c", pad=0, shard_rows=500, progress=False, stop_after_shards=1)
    with pytest.raises(IncompleteCacheError):
        export_teacher_cache(tmp_path / "c")
    assert not (tmp_path / "c" / "README.md").exists()


# -- the recipe, the distributed build, a zoo teacher on CIFAR's 162 views -----------------------------------------
def _recipe(monkeypatch):
    spec = importlib.util.spec_from_file_location("cache_teacher", ROOT / "recipes" / "cache_teacher.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "cache_teacher", module)  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_recipe_options_and_a_dry_run(tmp_path, capsys, monkeypatch):
    recipe = _recipe(monkeypatch)
    argv = ["caching.pad=0", "caching.dtype=float32", "caching.mean=[0.5,0.5,0.5]", "caching.std=[0.5,0.5,0.5]"]
    cfg = parse_recipe_args("x", recipe.DEMO_CACHE, argv)
    assert cfg.caching.pad == 0 and cfg.caching.dtype == "float32" and cfg.caching.mean == [0.5, 0.5, 0.5]
    assert cfg.caching.channels_last and cfg.teacher.weights == "runs/demo/teacher/model"
    bad_inputs = (
        (["run.dry_run=true"], "run.dry_run=true needs run.push_to_hub"),
        (["run.push_to_hub=x"], "ORG/NAME"),
        (["caching.mean=[0.5,0.5,0.5]"], "caching.mean and caching.std go together"),
        (["caching.dtype=bfloat16"], "caching.dtype"),
        (["caching.pad=-1"], "caching.pad"),
    )
    for bad, message in bad_inputs:
        with pytest.raises(SystemExit):
            parse_recipe_args("x", recipe.DEMO_CACHE, bad)
        assert message in capsys.readouterr().err
    AcceleratorState._reset_state(reset_partial_state=True)
    argv = [
        "teacher.model=lrds_resnet8",
        "scoring.random_init=true",
        "caching.pad=0",
        f"run.output_dir={tmp_path / 'c'}",
    ]
    argv += [
        f"caching.scores={tmp_path / 's'}",
        "run.push_to_hub=kd-zoo/digits-resnet8-pad0-logits",
        "run.dry_run=true",
    ]
    monkeypatch.setattr(sys, "argv", ["cache_teacher.py", *argv])
    recipe.main()
    AcceleratorState._reset_state(reset_partial_state=True)
    out = capsys.readouterr().out
    assert "1 shards built, 0 reused, of 1" in out and "dry run: would upload to dataset repo" in out
    assert "cache.json" in out and "README.md" in out and "influence scores: 1437 samples" in out
    cache = TeacherCache.open(tmp_path / "c")
    assert cache.num_views == 2 and (tmp_path / "s" / "README.md").is_file()
    assert ScoreSet.load(tmp_path / "s").join(load_tensor_split(None, "train")) is not None
    card = (tmp_path / "c" / "README.md").read_text()
    assert "python recipes/cache_teacher.py teacher.model=lrds_resnet8" in card and "caching.pad=0" in card


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_recipe_two_processes_build_the_one_process_cache_with_scores(tmp_path):
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    common = ["teacher.model=lrds_resnet8", "scoring.random_init=true", "caching.pad=0", "caching.dtype=float32"]
    common += ["caching.channels_last=false"]
    one = [sys.executable, "recipes/cache_teacher.py", *common]
    one += [f"run.output_dir={tmp_path / 'one'}", f"caching.scores={tmp_path / 'one_scores'}"]
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"]
    launch += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    launch += ["--main_process_port", str(_free_port())]
    two = [*launch, "recipes/cache_teacher.py", *common, f"run.output_dir={tmp_path / 'two'}"]
    two += [f"caching.scores={tmp_path / 'two_scores'}", "run.push_to_hub=kd-zoo/x-logits", "run.dry_run=true"]
    for command in (one, two):
        result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
        assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    assert "dry run: would upload to dataset repo kd-zoo/x-logits" in result.stdout
    assert _shard_hashes(tmp_path / "one") == _shard_hashes(tmp_path / "two")  # shards independent of P
    assert (tmp_path / "two" / "README.md").is_file() and (tmp_path / "two_scores" / "README.md").is_file()
    a, b = ScoreSet.load(tmp_path / "one_scores"), ScoreSet.load(tmp_path / "two_scores")
    assert np.array_equal(a.sample_idx, b.sample_idx)
    np.testing.assert_allclose(a.scores, b.scores, rtol=1e-6)


def test_zoo_teacher_on_every_cifar_view_equals_the_live_teacher(tmp_path):
    """The real thing on a few samples: lrds_resnet8, pad 4 (162 views), channels-last, float32."""
    train = load_tensor_split(None, "train")
    subset = _first(train, 24)
    teacher = freeze(kd_zoo.create_model("lrds_resnet8", num_classes=10))
    build_teacher_cache(teacher, subset, tmp_path / "c", dtype="float32", progress=False)
    cache = TeacherCache.open(tmp_path / "c")
    loader = TensorBatchLoader(subset, 8, train=True, seed=0)
    cache.check_run(teacher, loader)
    for epoch in range(3):
        loader.set_epoch(epoch)
        for batch in loader:
            with torch.no_grad():
                live = teacher(batch["image"])
            torch.testing.assert_close(cache.lookup(batch["sample_idx"], batch["view"]), live, rtol=1e-4, atol=1e-4)


# -- the README's workflow: one teacher, one cache, several students ------------------------------------------------
def _local_data(root: Path) -> Path:
    """A local parquet data set of 32x32 images (4 classes): 64 training images, 32 test images."""
    rng = np.random.default_rng(0)
    features = Features({"image": Image(), "label": ClassLabel(names=["a", "b", "c", "d"])})
    folder = root / "tiny_32"
    folder.mkdir(parents=True)
    for split, n in (("train", 64), ("test", 32)):
        images = [rng.integers(0, 255, (32, 32, 3), dtype=np.uint8) for _ in range(n)]
        Dataset.from_dict({"image": images, "label": [i % 4 for i in range(n)]}, features=features).to_parquet(
            str(folder / f"{split}-00000.parquet")
        )
    return folder


def test_the_recipes_cache_one_teacher_for_several_students(tmp_path, monkeypatch, capsys):
    data = _local_data(tmp_path)
    for seed, name in ((0, "teacher.safetensors"), (1, "other_teacher.safetensors")):
        torch.manual_seed(seed)
        save_file(kd_zoo.create_model("lrds_resnet8", num_classes=4).state_dict(), str(tmp_path / name))
    common = [f"data.name={data}", "teacher.model=lrds_resnet8", f"teacher.weights={tmp_path / 'teacher.safetensors'}"]
    status, out, err = run_recipe(
        "cache_teacher", *common, "caching.dtype=float32", f"run.output_dir={tmp_path / 'cache'}",
        f"caching.scores={tmp_path / 'scores'}", monkeypatch=monkeypatch, capsys=capsys,
    )  # fmt: skip
    assert status == 0, err[-3000:]
    assert "10,368 images" in out and "influence scores: 64 samples" in out  # 64 samples x 162 views

    student = [
        *common, "student.model=lrds_resnet8", "train.epochs=2", "train.milestones=[1]", "train.batch_size=16",
        "data.eval_batch_size=32", "run.log_every=1", "run.report_to=[]", f"selection.scores={tmp_path / 'scores'}",
    ]  # fmt: skip
    logs = {}
    for name, extra in (("live", []), ("cached", [f"teacher.cache={tmp_path / 'cache'}"])):
        status, out, err = run_recipe(
            "distill", *student, *extra, f"run.output_dir={tmp_path / name}", monkeypatch=monkeypatch, capsys=capsys
        )
        assert status == 0, err[-3000:]
        logs[name] = [r for r in read_jsonl(tmp_path / name / "metrics.jsonl") if "train/loss" in r]
    assert len(logs["live"]) == len(logs["cached"]) == 2 * 64 // 16
    for live, cached in zip(logs["live"], logs["cached"], strict=True):  # the same run, step by step
        for key in (k for k in live if k.startswith("train/loss")):
            assert cached[key] == pytest.approx(live[key], rel=1e-4, abs=1e-6), key
    card = (tmp_path / "cached" / "model" / "README.md").read_text()
    assert "its logits from the cache cache (float32, 162 views a sample)" in card
    assert str(tmp_path) not in card

    status, _, err = run_recipe(  # a second student of the same teacher, another method, from the same cache
        "distill", *student, "method.name=dkd", "label_revision.enabled=false", f"teacher.cache={tmp_path / 'cache'}",
        f"run.output_dir={tmp_path / 'dkd'}", monkeypatch=monkeypatch, capsys=capsys,
    )  # fmt: skip
    assert status == 0, err[-3000:]

    other = [a.replace("teacher.safetensors", "other_teacher.safetensors") for a in student]
    status, _, err = run_recipe(  # another teacher's run: refused before training, nothing left behind
        "distill", *other, f"teacher.cache={tmp_path / 'cache'}", f"run.output_dir={tmp_path / 'other'}",
        monkeypatch=monkeypatch, capsys=capsys,
    )  # fmt: skip
    assert status == 1 and "teacher: the cache holds the outputs of lrds_resnet8" in err and "Traceback" not in err
    assert not (tmp_path / "other" / "checkpoints").exists() and not (tmp_path / "other" / "model").exists()
