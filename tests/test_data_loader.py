"""The 32x32 fast path: TensorImageSet decoding / caching and TensorBatchLoader's augmentation, order and sharding.

The augmentation is checked against a direct per-sample reference (F.pad + slicing + flip, torchvision's
normalize), and the process-count independence bit for bit (1 vs 2 vs 4 processes).
"""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import io  # noqa: E402
import warnings  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from datasets import ClassLabel, Dataset, Features, Image, Value  # noqa: E402
from PIL import Image as PILImage  # noqa: E402
from safetensors import safe_open  # noqa: E402
from torchvision.transforms import functional as TF  # noqa: E402

import kd_zoo.data.tensor_set as tensor_module  # noqa: E402
from kd_zoo.constants import CIFAR100_MEAN, CIFAR100_STD  # noqa: E402
from kd_zoo.data import (  # noqa: E402
    DataSchemaError,
    TensorBatchLoader,
    TensorImageSet,
    load_split,
    random_crop_flip,
    tensor_cache_path,
)

KEYS = ("image", "label", "sample_idx")


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("KD_ZOO_CACHE", str(tmp_path / "kd_zoo_cache"))
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf_datasets"))


def synthetic(n: int, seed: int = 0, size: int = 32, num_classes: int = 10) -> TensorImageSet:
    generator = torch.Generator().manual_seed(seed)
    return TensorImageSet(
        images=torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=generator),
        labels=torch.randint(0, num_classes, (n,), generator=generator),
        sample_idx=torch.arange(n) * 3 + 1,  # not positions, so a mix-up of the two shows
        class_names=[f"c{i}" for i in range(num_classes)],
        fingerprint={"name": "synthetic", "split": "train"},
    )


def epoch_batches(data: TensorImageSet, batch_size: int, epoch: int, processes: int, **kwargs) -> list[list[dict]]:
    """[process][batch] -> batch dict, for one epoch."""
    per_process = []
    for rank in range(processes):
        loader = TensorBatchLoader(data, batch_size, process_index=rank, num_processes=processes, **kwargs)
        loader.set_epoch(epoch)
        per_process.append(list(loader))
    return per_process


def reference_sample(image: torch.Tensor, top: int, left: int, flip: bool, pad: int = 4) -> torch.Tensor:
    """Per-sample reference: torchvision-style pad-4 crop, then horizontal flip, ToTensor, Normalize."""
    crop = F.pad(image, (pad, pad, pad, pad))[:, top : top + image.shape[1], left : left + image.shape[2]]
    if flip:
        crop = torch.flip(crop, dims=[2])
    return TF.normalize(crop.float() / 255.0, CIFAR100_MEAN, CIFAR100_STD)


def same(a: dict, b: dict) -> bool:
    return all(torch.equal(a[k], b[k]) for k in KEYS)


# -- augmentation ---------------------------------------------------------------------------------------------------
def test_batches_match_the_per_sample_reference():
    data = synthetic(40)
    loader = TensorBatchLoader(data, 16, train=True, seed=3)
    loader.set_epoch(2)
    offsets, flips = loader.augmentation_params(2)
    position_of = {int(s): i for i, s in enumerate(data.sample_idx)}
    seen = 0
    for batch in loader:
        assert batch["image"].dtype == torch.float32 and batch["image"].shape == (16, 3, 32, 32)
        for image, label, key in zip(batch["image"], batch["label"], batch["sample_idx"], strict=True):
            i = position_of[int(key)]
            top, left = offsets[i].tolist()
            assert torch.equal(image, reference_sample(data.images[i], top, left, bool(flips[i])))
            assert label == data.labels[i]
            seen += 1
    assert seen == 32  # 40 samples, global batch 16: the incomplete last batch is dropped


def test_every_output_is_a_pad4_crop_with_an_optional_horizontal_flip():
    """Without knowing the parameters: each uint8 output is one of the 9 x 9 x 2 candidate crops."""
    data = synthetic(24, seed=1)
    loader = TensorBatchLoader(data, 8, train=True, normalize=False)
    position_of = {int(s): i for i, s in enumerate(data.sample_idx)}
    flipped = 0
    for batch in loader:
        assert batch["image"].dtype == torch.uint8
        for image, key in zip(batch["image"], batch["sample_idx"], strict=True):
            padded = F.pad(data.images[position_of[int(key)]], (4, 4, 4, 4))
            matches = [
                (top, left, flip)
                for top in range(9)
                for left in range(9)
                for flip in (False, True)
                if torch.equal(
                    image,
                    padded[:, top : top + 32, left : left + 32].flip(2)
                    if flip
                    else padded[:, top : top + 32, left : left + 32],
                )
            ]
            assert matches, "an output that is no pad-4 crop (or flip of one) of its image"
            flipped += all(flip for _, _, flip in matches)
    assert 0 < flipped < 24


def test_augmentation_parameters_cover_the_range():
    loader = TensorBatchLoader(synthetic(3000, size=8), 64, train=True)
    offsets, flips = loader.augmentation_params(0)
    assert offsets.shape == (3000, 2) and flips.shape == (3000,)
    assert sorted(offsets.unique().tolist()) == list(range(9))
    assert 0.45 < flips.float().mean() < 0.55


def test_random_crop_flip_pad_zero_is_flip_only():
    images = synthetic(6).images
    flips = torch.tensor([True, False, True, False, False, True])
    out = random_crop_flip(images, torch.zeros(6, 2, dtype=torch.int64), flips, pad=0)
    for i in range(6):
        assert torch.equal(out[i], images[i].flip(2) if flips[i] else images[i])


# -- reproducibility and process-count independence -----------------------------------------------------------------
def test_reproducible_from_seed_and_epoch():
    data = synthetic(50)
    a = epoch_batches(data, 10, 4, 1, train=True, seed=11)[0]
    b = epoch_batches(data, 10, 4, 1, train=True, seed=11)[0]
    assert len(a) == 5 and all(same(x, y) for x, y in zip(a, b, strict=True))
    other_epoch = epoch_batches(data, 10, 5, 1, train=True, seed=11)[0]
    other_seed = epoch_batches(data, 10, 4, 1, train=True, seed=12)[0]
    for other in (other_epoch, other_seed):
        assert not torch.equal(a[0]["sample_idx"], other[0]["sample_idx"])
        assert not torch.equal(torch.cat([x["image"] for x in a]), torch.cat([x["image"] for x in other]))
    # The augmentation differs across epochs for the same sample, not only the order.
    loader = TensorBatchLoader(data, 10, train=True, seed=11)
    assert not torch.equal(loader.augmentation_params(4)[0], loader.augmentation_params(5)[0])


@pytest.mark.parametrize("processes", [2, 4])
def test_union_over_processes_equals_one_process_bit_for_bit(processes):
    data = synthetic(70)
    single = epoch_batches(data, 16, 1, 1, train=True, seed=5)[0]
    sharded = epoch_batches(data, 16, 1, processes, train=True, seed=5)
    assert len(single) == 70 // 16
    for rank_batches in sharded:
        assert len(rank_batches) == len(single)
        assert all(b["image"].shape[0] == 16 // processes for b in rank_batches)
    for k, expected in enumerate(single):
        union = {key: torch.cat([sharded[r][k][key] for r in range(processes)]) for key in KEYS}
        assert same(union, expected)


@pytest.mark.parametrize(("n", "processes", "batch_size"), [(37, 3, 6), (10, 4, 8), (40, 1, 16), (9, 4, 4)])
def test_evaluation_shards_cover_each_sample_once(n, processes, batch_size):
    data = synthetic(n, seed=2)
    shards = epoch_batches(data, batch_size, 0, processes, train=False)
    lengths = {len(batches) for batches in shards}
    assert len(lengths) == 1  # every process yields as many batches
    keys = torch.cat([b["sample_idx"] for batches in shards for b in batches])
    assert torch.equal(keys, data.sample_idx)  # each sample once, in order, shards contiguous
    expected = TF.normalize(data.images.float() / 255.0, CIFAR100_MEAN, CIFAR100_STD)
    images = torch.cat([b["image"] for batches in shards for b in batches])
    assert torch.equal(images, expected)  # no augmentation in evaluation
    sizes = [sum(len(b["label"]) for b in batches) for batches in shards]
    assert max(sizes) - min(sizes) <= 1


def test_drop_last_rules_and_argument_errors():
    data = synthetic(37)
    keep_all = TensorBatchLoader(data, 8, train=True, drop_last=False)
    assert len(keep_all) == 5 and sum(len(b["label"]) for b in keep_all) == 37
    assert len(TensorBatchLoader(data, 8, train=True)) == 4
    with pytest.raises(ValueError, match="multiple of num_processes=4"):
        TensorBatchLoader(data, 10, train=True, num_processes=4)
    with pytest.raises(ValueError, match="unequal last batches"):
        TensorBatchLoader(data, 8, train=True, drop_last=False, num_processes=2)
    with pytest.raises(ValueError, match="every sample once"):
        TensorBatchLoader(data, 8, train=False, drop_last=True)
    with pytest.raises(ValueError, match="process_index"):
        TensorBatchLoader(data, 8, train=True, process_index=2, num_processes=2)
    with pytest.raises(ValueError, match="no full batch"):
        TensorBatchLoader(data, 64, train=True)


def test_iterating_twice_without_set_epoch_warns():
    loader = TensorBatchLoader(synthetic(16), 8, train=True)
    threads = torch.get_num_threads()
    list(loader)
    assert torch.get_num_threads() == threads  # batches are made with one thread, then it is restored
    with pytest.warns(UserWarning, match="set_epoch"):
        list(loader)
    loader.set_epoch(1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        list(loader)
        loader.set_epoch(1)  # asked for again (a second training on the same loader): intended, no warning
        list(loader)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.gpu
def test_cuda_batches_equal_cpu_batches():
    data = synthetic(64)
    cpu = epoch_batches(data, 16, 3, 2, train=True, seed=1)
    gpu = epoch_batches(data, 16, 3, 2, train=True, seed=1, device="cuda")
    for cpu_rank, gpu_rank in zip(cpu, gpu, strict=True):
        for a, b in zip(cpu_rank, gpu_rank, strict=True):
            assert b["image"].is_cuda
            assert all(torch.equal(a[k], b[k].cpu()) for k in KEYS)


# -- TensorImageSet -------------------------------------------------------------------------------------------------
def test_tensor_image_set_from_demo_decodes_and_caches(tmp_path, monkeypatch):
    ds = load_split(None, "test", cache_dir=tmp_path)
    data = TensorImageSet.from_dataset(ds, name="demo", split="test", cache_dir=tmp_path)
    assert data.images.shape == (360, 3, 32, 32) and data.images.dtype == torch.uint8
    assert data.class_names == [str(d) for d in range(10)] and data.num_classes == 10
    assert torch.equal(data.sample_idx, torch.arange(360))
    assert data.labels.tolist() == ds["label"][:]
    for row in (0, 123, 359):
        assert torch.equal(data.images[row], torch.from_numpy(np.array(ds[row]["image"])).permute(2, 0, 1))
    path = tensor_cache_path(data.fingerprint, tmp_path)
    with safe_open(str(path), framework="pt") as f:  # a safetensors file, no pickle
        assert set(f.keys()) == {"images", "labels", "sample_idx"}

    def no_decode(*args):
        raise AssertionError("decoded again instead of reading the tensor cache")

    monkeypatch.setattr(tensor_module, "_decode_images", no_decode)
    again = TensorImageSet.from_dataset(ds, name="demo", split="test", cache_dir=tmp_path)
    assert torch.equal(again.images, data.images) and again.fingerprint == data.fingerprint


def test_images_of_different_sizes_are_refused():
    cells = []
    for size in (32, 32, 28):
        buffer = io.BytesIO()
        PILImage.new("RGB", (size, size)).save(buffer, format="PNG")
        cells.append({"bytes": buffer.getvalue(), "path": None})
    ds = Dataset.from_dict(
        {"image": cells, "label": [0, 1, 0], "sample_idx": [0, 1, 2]},
        features=Features({"image": Image(), "label": ClassLabel(names=["a", "b"]), "sample_idx": Value("int64")}),
    )
    with pytest.raises(DataSchemaError, match="row 2 is 28x28 but row 0 is 32x32"):
        TensorImageSet.from_dataset(ds, name="mixed", split="train", use_cache=False)
    with pytest.raises(DataSchemaError, match="kd_zoo schema"):
        TensorImageSet.from_dataset(ds.remove_columns("sample_idx"), name="mixed", split="train")


def test_tensor_image_set_validation(tmp_path):
    data = synthetic(5)
    with pytest.raises(DataSchemaError, match="uint8"):
        TensorImageSet(data.images.float(), data.labels, data.sample_idx, data.class_names)
    with pytest.raises(DataSchemaError, match="outside"):
        TensorImageSet(data.images, data.labels + 10, data.sample_idx, data.class_names)
    with pytest.raises(DataSchemaError, match="sample_idx"):
        TensorImageSet(data.images, data.labels, data.sample_idx[:3], data.class_names)
    data.save(tmp_path / "x.safetensors")
    loaded = TensorImageSet.load(tmp_path / "x.safetensors")
    assert torch.equal(loaded.images, data.images) and loaded.class_names == data.class_names
