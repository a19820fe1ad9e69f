"""kd_zoo.data sources, schema, demo set, fingerprints and the ImageNet pipeline, offline on tiny data sets built here.

The CIFAR-100-schema set has `img` / `fine_label` (100 names) / `coarse_label` (20 names), the ImageNet-schema set
`image` / `label`; both are saved with `save_to_disk`, written to parquet and written as image folders of PNGs.
"""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import io  # noqa: E402
import random  # noqa: E402
import socket  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from concurrent.futures import ThreadPoolExecutor  # noqa: E402

import datasets  # noqa: E402
import huggingface_hub.constants  # noqa: E402
import huggingface_hub.errors  # noqa: E402
import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from datasets import ClassLabel, Dataset, DatasetDict, Features, Image, Value  # noqa: E402
from PIL import Image as PILImage  # noqa: E402
from torchvision import transforms as T  # noqa: E402

import kd_zoo.data._images as images_module  # noqa: E402
import kd_zoo.data.fingerprint as fingerprint_module  # noqa: E402
from kd_zoo.constants import IMAGENET_MEAN, IMAGENET_STD  # noqa: E402
from kd_zoo.data import (  # noqa: E402
    DataError,
    DataSchemaError,
    DatasetUnavailableError,
    FingerprintMismatchError,
    TensorImageSet,
    UnknownDatasetError,
    UnknownSplitError,
    check_fingerprint,
    dataset_fingerprint,
    demo_cache_path,
    demo_dataset,
    imagenet_transforms,
    load_split,
    load_tensor_split,
    make_image_dataloader,
    resolve_source,
    to_schema,
)

FINE_NAMES = [f"fine_{i:02d}" for i in range(100)]
COARSE_NAMES = [f"coarse_{i:02d}" for i in range(20)]
IMAGENET_NAMES = ["tench", "goldfish", "great_white_shark"]
SCHEMA = ["image", "label", "sample_idx"]


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    """Caches in tmp dirs, offline Hub, a fresh once-per-split warning registry."""
    monkeypatch.setenv("KD_ZOO_CACHE", str(tmp_path / "kd_zoo_cache"))
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf_datasets"))
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(images_module, "_WARNED", set())
    monkeypatch.setattr(fingerprint_module, "_CONTENT_CACHE", {})


@pytest.fixture
def no_network(monkeypatch):
    """Any socket connection attempt fails the test loudly (not as a ConnectionError our code would wrap)."""

    def refuse(*args, **kwargs):
        raise AssertionError("the network was used")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def png_bytes(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    PILImage.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def random_pixels(rng: np.random.Generator, h: int = 32, w: int = 32) -> np.ndarray:
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


def cifar_split(n: int, seed: int) -> Dataset:
    """A CIFAR-100-schema split (uoft-cs/cifar100's columns)."""
    rng = np.random.default_rng(seed)
    fine = rng.integers(0, 100, n).tolist()
    features = Features(
        {"img": Image(), "fine_label": ClassLabel(names=FINE_NAMES), "coarse_label": ClassLabel(names=COARSE_NAMES)}
    )
    return Dataset.from_dict(
        {
            "img": [{"bytes": png_bytes(random_pixels(rng)), "path": None} for _ in range(n)],
            "fine_label": fine,
            "coarse_label": [f % 20 for f in fine],
        },
        features=features,
    )


def imagenet_split(n: int, seed: int) -> Dataset:
    """An ImageNet-schema split (ILSVRC/imagenet-1k's columns), images of varying sizes."""
    rng = np.random.default_rng(seed)
    features = Features({"image": Image(), "label": ClassLabel(names=IMAGENET_NAMES)})
    return Dataset.from_dict(
        {
            "image": [{"bytes": png_bytes(random_pixels(rng, 40 + 3 * i, 48 - 2 * i)), "path": None} for i in range(n)],
            "label": [i % 3 for i in range(n)],
        },
        features=features,
    )


@pytest.fixture(scope="module")
def cifar() -> DatasetDict:
    return DatasetDict({"train": cifar_split(12, 0), "test": cifar_split(5, 1)})


@pytest.fixture(scope="module")
def imagenet() -> DatasetDict:
    return DatasetDict({"train": imagenet_split(7, 2), "validation": imagenet_split(4, 3)})


def write_imagefolder(root, dd: DatasetDict, image_col: str, label_col: str) -> None:
    """One folder per split and class; file names keep the original row order within a class."""
    for split, ds in dd.items():
        names = ds.features[label_col].names
        for row, (cell, label) in enumerate(
            zip(ds.with_format("arrow")[image_col].to_pylist(), ds[label_col][:], strict=True)
        ):
            folder = root / split / names[label]
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"{row:04d}.png").write_bytes(cell["bytes"])


def decoded(ds: Dataset, row: int) -> np.ndarray:
    return np.asarray(ds[row]["image"])


def assert_schema(ds: Dataset, names: list[str]) -> None:
    assert ds.column_names == SCHEMA
    assert isinstance(ds.features["image"], Image)
    assert isinstance(ds.features["label"], ClassLabel)
    assert ds.features["label"].names == names
    assert ds.features["sample_idx"] == Value("int64")
    assert ds["sample_idx"][:] == list(range(len(ds)))


# -- each source kind maps to the schema ----------------------------------------------------------------------------
def test_save_to_disk_folder_cifar_schema(tmp_path, cifar):
    cifar.save_to_disk(str(tmp_path / "disk"))
    for split in ("train", "test"):
        ds = load_split(str(tmp_path / "disk"), split)
        assert_schema(ds, FINE_NAMES)
        assert ds["label"][:] == cifar[split]["fine_label"][:]
        assert np.array_equal(decoded(ds, 3), np.asarray(cifar[split][3]["img"]))
    assert resolve_source(tmp_path / "disk").kind == "disk"


def test_coarse_labels_option(tmp_path, cifar):
    cifar.save_to_disk(str(tmp_path / "disk"))
    ds = load_split(str(tmp_path / "disk"), "train", label="coarse")
    assert_schema(ds, COARSE_NAMES)
    assert ds["label"][:] == cifar["train"]["coarse_label"][:]
    named = load_split(str(tmp_path / "disk"), "train", label="coarse_label")
    assert named["label"][:] == ds["label"][:]


def test_single_dataset_folder_is_the_requested_split(tmp_path, imagenet):
    imagenet["validation"].save_to_disk(str(tmp_path / "one"))
    ds = load_split(str(tmp_path / "one"), "validation")
    assert_schema(ds, IMAGENET_NAMES)
    assert len(ds) == 4


def test_parquet_file_folder_and_glob(tmp_path, cifar):
    (tmp_path / "pq" / "data").mkdir(parents=True)
    for split, ds in cifar.items():
        ds.to_parquet(str(tmp_path / "pq" / "data" / f"{split}-00000-of-00001.parquet"))
    one_file = str(tmp_path / "pq" / "data" / "test-00000-of-00001.parquet")
    cache = tmp_path / "cache"
    by_file = load_split(one_file, "test", cache_dir=cache)
    by_folder = load_split(str(tmp_path / "pq"), "test", cache_dir=cache)
    by_glob = load_split(str(tmp_path / "pq" / "data" / "test-*.parquet"), "test", cache_dir=cache)
    by_prefix = load_split("parquet:" + one_file, "test", cache_dir=cache)
    for ds in (by_file, by_folder, by_glob, by_prefix):
        assert_schema(ds, FINE_NAMES)
        assert ds["label"][:] == cifar["test"]["fine_label"][:]
    assert load_split(str(tmp_path / "pq"), "train", cache_dir=cache)["label"][:] == cifar["train"]["fine_label"][:]
    assert resolve_source(tmp_path / "pq").kind == "parquet"


def test_imagefolder_prefix_and_autodetect(tmp_path, imagenet):
    write_imagefolder(tmp_path / "folder", imagenet, "image", "label")
    cache = tmp_path / "cache"
    for source in ("imagefolder:" + str(tmp_path / "folder"), str(tmp_path / "folder")):
        ds = load_split(source, "train", cache_dir=cache)
        assert_schema(ds, sorted(IMAGENET_NAMES))  # class names: the folder names, via datasets' ClassLabel
        assert len(ds) == 7
        # Rows come class by class; each is its original image with its original class.
        train = imagenet["train"]
        original = {decoded(train, i).tobytes(): IMAGENET_NAMES[train[i]["label"]] for i in range(len(train))}
        for row in range(len(ds)):
            assert original[decoded(ds, row).tobytes()] == ds.features["label"].names[ds[row]["label"]]
    assert len(load_split(str(tmp_path / "folder"), "validation", cache_dir=cache)) == 4


def test_sample_idx_is_stable_across_loads_and_sources(tmp_path, cifar):
    cifar.save_to_disk(str(tmp_path / "disk"))
    cifar["train"].to_parquet(str(tmp_path / "train.parquet"))
    a = load_split(str(tmp_path / "disk"), "train")
    b = load_split(str(tmp_path / "disk"), "train")
    c = load_split(str(tmp_path / "train.parquet"), "train", cache_dir=tmp_path / "cache")
    for other in (b, c):
        assert other["sample_idx"][:] == a["sample_idx"][:]
        assert other["label"][:] == a["label"][:]
        assert all(np.array_equal(decoded(a, i), decoded(other, i)) for i in range(len(a)))
    # A saved subset keeps the full split's numbering.
    subset = a.select([7, 2, 9])
    subset.save_to_disk(str(tmp_path / "subset"))
    assert load_split(str(tmp_path / "subset"), "train")["sample_idx"][:] == [7, 2, 9]


def test_in_memory_dataset_to_schema(imagenet):
    ds = to_schema(imagenet["train"], name="in-memory", split="train")
    assert_schema(ds, IMAGENET_NAMES)


def test_integer_labels_need_class_names(tmp_path):
    rng = np.random.default_rng(5)
    struct = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    table = pa.table(
        {
            "picture": pa.array([{"bytes": png_bytes(random_pixels(rng)), "path": None} for _ in range(4)], struct),
            "target": [0, 1, 1, 0],
        }
    )
    pq.write_table(table, str(tmp_path / "plain.parquet"))  # no `datasets` metadata: no Image, no ClassLabel
    with pytest.raises(DataSchemaError, match="class_names"):
        load_split(str(tmp_path / "plain.parquet"), cache_dir=tmp_path / "cache")
    ds = load_split(str(tmp_path / "plain.parquet"), class_names=["cat", "dog"], cache_dir=tmp_path / "cache")
    assert_schema(ds, ["cat", "dog"])
    assert ds[2]["image"].size == (32, 32)


# -- the embedded demo data set -------------------------------------------------------------------------------------
def test_demo_dataset_builds_from_scikit_learn_and_is_cached(tmp_path, monkeypatch, no_network):
    dd = demo_dataset(tmp_path)
    assert (len(dd["train"]), len(dd["test"])) == (1437, 360)
    for split in ("train", "test"):
        assert_schema(dd[split], [str(d) for d in range(10)])
        image = dd[split][0]["image"]
        assert image.mode == "RGB" and image.size == (32, 32)
    test_counts = np.bincount(dd["test"]["label"][:], minlength=10)
    assert test_counts.min() >= 35 and test_counts.max() <= 37  # stratified: 36 +- 1 per class
    assert (demo_cache_path(tmp_path) / "dataset_dict.json").is_file()

    def no_rebuild():
        raise AssertionError("the demo data set was rebuilt instead of read from the cache")

    monkeypatch.setattr("kd_zoo.data.demo.build_demo_dataset", no_rebuild)
    again = demo_dataset(tmp_path)
    assert dataset_fingerprint(again["train"], name="demo", split="train") == dataset_fingerprint(
        dd["train"], name="demo", split="train"
    )


def test_demo_dataset_rebuilds_a_corrupt_cache(tmp_path, monkeypatch, caplog):
    first = dataset_fingerprint(demo_dataset(tmp_path)["test"], name="demo", split="test")
    for arrow in (demo_cache_path(tmp_path) / "test").glob("*.arrow"):
        arrow.write_bytes(b"not arrow")
    monkeypatch.setattr(fingerprint_module, "_CONTENT_CACHE", {})  # hash the rebuilt files, not a memory
    with caplog.at_level("WARNING", logger="kd_zoo.data.demo"):
        rebuilt = demo_dataset(tmp_path)
    assert "rebuilding" in caplog.text
    assert dataset_fingerprint(rebuilt["test"], name="demo", split="test") == first
    assert rebuilt["test"][0]["image"].size == (32, 32)


def test_demo_dataset_built_by_two_threads_at_once(tmp_path):
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(lambda _: demo_dataset(tmp_path), range(2)))
    assert all(len(dd["train"]) == 1437 for dd in results)
    assert [p.name for p in demo_cache_path(tmp_path).parent.iterdir()] == [demo_cache_path(tmp_path).name]


def test_no_source_means_the_demo_split(tmp_path):
    train = load_split(None, "train", cache_dir=tmp_path)
    test = load_split("demo", "test", cache_dir=tmp_path)
    assert (len(train), len(test)) == (1437, 360)
    assert train.features["label"].names == [str(d) for d in range(10)]
    tensors = load_tensor_split(None, "test", cache_dir=tmp_path)
    assert tensors.images.shape == (360, 3, 32, 32) and tensors.fingerprint["name"] == "demo"


# -- fingerprints ---------------------------------------------------------------------------------------------------
def test_fingerprint_identical_for_identical_content(tmp_path, cifar):
    ds = to_schema(cifar["train"])
    fp = dataset_fingerprint(ds, name="c", split="train")
    assert set(fp) == {"name", "revision", "split", "num_rows", "num_classes", "content_sha256"}
    assert (fp["num_rows"], fp["num_classes"]) == (12, 100)
    # Other Arrow chunking, a save_to_disk round trip and a parquet round trip: same content, same hash.
    rechunked = datasets.concatenate_datasets([ds.select(range(5)), ds.select(range(5, 12))]).flatten_indices()
    cifar.save_to_disk(str(tmp_path / "disk"))
    cifar["train"].to_parquet(str(tmp_path / "t.parquet"))
    for other in (
        rechunked,
        load_split(str(tmp_path / "disk"), "train"),
        load_split(str(tmp_path / "t.parquet"), "train", cache_dir=tmp_path / "cache"),
    ):
        assert dataset_fingerprint(other, name="c", split="train") == fp
    assert dataset_fingerprint(ds, name="c", split="train", revision="abc")["revision"] == "abc"


def test_fingerprint_covers_image_folder_files(tmp_path, imagenet):
    write_imagefolder(tmp_path / "f", imagenet, "image", "label")
    ds = load_split(str(tmp_path / "f"), "train", cache_dir=tmp_path / "cache")
    before = dataset_fingerprint(ds, name="f", split="train")["content_sha256"]
    path = next((tmp_path / "f" / "train").rglob("*.png"))
    path.write_bytes(path.read_bytes() + b"\0")  # one more byte in one file
    again = load_split(str(tmp_path / "f"), "train", cache_dir=tmp_path / "cache2")
    assert dataset_fingerprint(again, name="f", split="train")["content_sha256"] != before


def test_fingerprint_changes_with_one_label_or_one_image_byte(cifar):
    ds = to_schema(cifar["train"])
    base = dataset_fingerprint(ds, name="c", split="train")["content_sha256"]
    labels = ds["label"][:]
    labels[4] = (labels[4] + 1) % 100
    one_label = ds.remove_columns("label").add_column("label", labels, feature=ds.features["label"])
    cells = ds.with_format("arrow")["image"].to_pylist()
    payload = bytearray(cells[6]["bytes"])
    payload[-1] ^= 1
    cells[6] = {"bytes": bytes(payload), "path": None}
    one_byte = ds.remove_columns("image").add_column("image", cells, feature=Image())
    fingerprints = {dataset_fingerprint(d, name="c", split="train")["content_sha256"] for d in (one_label, one_byte)}
    assert base not in fingerprints and len(fingerprints) == 2


def test_check_fingerprint(cifar):
    fp = dataset_fingerprint(to_schema(cifar["train"]), name="uoft-cs/cifar100", split="train", revision="r1")
    local_copy = dict(fp, name="/data/cifar100", revision=None)
    check_fingerprint(fp, local_copy, "influence scores")  # same content under another name: fine
    other = dataset_fingerprint(to_schema(cifar["test"]), name="uoft-cs/cifar100", split="test")
    with pytest.raises(FingerprintMismatchError) as info:
        check_fingerprint(fp, other, "influence scores kd-zoo/scores")
    message = str(info.value)
    assert "influence scores kd-zoo/scores" in message and "recompute" in message
    for field in ("split", "num_rows", "content_sha256", "revision"):
        assert f"{field}: stored {fp[field]!r}, in use {other[field]!r}" in message
    assert "num_classes" not in message  # equal fields are not listed
    assert isinstance(info.value, ValueError)
    with pytest.raises(ValueError, match="lacks"):
        check_fingerprint({"name": "x"}, fp, "a mask")


# -- bad input ------------------------------------------------------------------------------------------------------
def test_hub_ids_offline_fail_fast_with_both_fixes(no_network):
    for source, hub_id in (
        ("uoft-cs/cifar100", "uoft-cs/cifar100"),
        ("ILSVRC/imagenet-1k", "ILSVRC/imagenet-1k"),
        ("imagenet-1k", "ILSVRC/imagenet-1k"),
    ):
        start = time.monotonic()
        with pytest.raises(DatasetUnavailableError) as info:
            load_split(source, "train")
        assert time.monotonic() - start < 5
        message = str(info.value)
        assert hub_id in message
        for fix in ("hf auth login", "HF_TOKEN", "save_to_disk", "parquet", "imagefolder", "Offline mode"):
            assert fix in message, fix


def test_unknown_dataset_name():
    with pytest.raises(UnknownDatasetError, match="Did you mean 'cifar100'") as info:
        load_split("cifar10O")
    assert "demo" in str(info.value) and isinstance(info.value, LookupError)
    with pytest.raises(UnknownDatasetError, match="matches no parquet"):
        load_split("/nonexistent/dir/*.parquet")


def test_unknown_split_lists_the_available_ones(tmp_path, cifar):
    cifar.save_to_disk(str(tmp_path / "disk"))
    with pytest.raises(UnknownSplitError, match="Available splits: train, test"):
        load_split(str(tmp_path / "disk"), "validation")
    with pytest.raises(UnknownSplitError, match="Did you mean 'test'"):
        load_split(None, "tset", cache_dir=tmp_path)
    with pytest.raises(UnknownSplitError, match="select"):
        load_split(str(tmp_path / "disk"), "train[:10%]")


def test_missing_or_ambiguous_columns(cifar):
    no_image = Dataset.from_dict(
        {"pixels": [[1, 2]], "label": [0]},
        features=Features({"pixels": datasets.List(Value("int32")), "label": ClassLabel(names=["a"])}),
    )
    with pytest.raises(DataSchemaError, match=r"no image column .*pixels \(List\)"):
        to_schema(no_image)
    no_label = cifar["train"].remove_columns(["fine_label", "coarse_label"])
    with pytest.raises(DataSchemaError, match="no label column"):
        to_schema(no_label)
    two_labels = cifar["train"].rename_columns({"fine_label": "a", "coarse_label": "b"})
    with pytest.raises(DataSchemaError, match=r"several label columns \['a', 'b'\]"):
        to_schema(two_labels)
    assert to_schema(two_labels, label="b").features["label"].names == COARSE_NAMES
    with pytest.raises(DataSchemaError, match="no coarse labels"):
        to_schema(
            Dataset.from_dict(
                {"image": [None], "label": [0]}, features=Features({"image": Image(), "label": ClassLabel(names=["x"])})
            ),
            label="coarse",
        )


def test_labels_outside_the_classes(tmp_path):
    rng = np.random.default_rng(1)
    images = [{"bytes": png_bytes(random_pixels(rng)), "path": None} for _ in range(4)]
    too_big = Dataset.from_dict(
        {"image": images, "label": [0, 1, 3, 1]}, features=Features({"image": Image(), "label": Value("int64")})
    )
    with pytest.raises(DataSchemaError, match=r"1 labels outside \[0, 3\) \(row 2: 3\)"):
        to_schema(too_big, class_names=["a", "b", "c"])
    unlabelled = Dataset.from_dict(
        {"image": images, "label": [-1] * 4},
        features=Features({"image": Image(), "label": ClassLabel(names=["a", "b"])}),
    )
    with pytest.raises(DataSchemaError, match="unlabelled"):
        to_schema(unlabelled, name="ILSVRC/imagenet-1k", split="test")


def test_empty_split():
    empty = Dataset.from_dict(
        {"image": [], "label": []}, features=Features({"image": Image(), "label": ClassLabel(names=["a"])})
    )
    with pytest.raises(DataSchemaError, match="empty"):
        to_schema(empty)


def test_grayscale_and_rgba_are_converted_with_one_warning(tmp_path):
    rng = np.random.default_rng(2)
    cells = []
    for i in range(6):
        pixels = rng.integers(0, 256, (32, 32), dtype=np.uint8)
        mode = ("L", "RGBA", "RGB")[i % 3]
        image = PILImage.fromarray(pixels).convert(mode)
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        cells.append({"bytes": buffer.getvalue(), "path": None})
    ds = Dataset.from_dict(
        {"image": cells, "label": [0, 1] * 3},
        features=Features({"image": Image(), "label": ClassLabel(names=["a", "b"])}),
    )
    ds.save_to_disk(str(tmp_path / "mixed"))
    with pytest.warns(UserWarning) as record:
        loaded = load_split(str(tmp_path / "mixed"), "train")
    messages = [str(w.message) for w in record if "not RGB" in str(w.message)]
    assert len(messages) == 1 and "2 L" in messages[0] and "2 RGBA" in messages[0]
    assert all(loaded[i]["image"].mode == "RGB" for i in range(6))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the split was announced once already
        tensors = TensorImageSet.from_dataset(loaded, name=str(tmp_path / "mixed"), split="train", cache_dir=tmp_path)
    gray = tensors.images[0]
    assert torch.equal(gray[0], gray[1]) and torch.equal(gray[1], gray[2])
    with pytest.warns(UserWarning, match=r"2 L, 2 RGBA image\(s\) in all 6 rows are not RGB"):
        TensorImageSet.from_dataset(loaded, name="not announced yet", split="train", use_cache=False)


def test_dataset_errors_share_one_base():
    for error in (
        DataSchemaError,
        DatasetUnavailableError,
        UnknownDatasetError,
        UnknownSplitError,
        FingerprintMismatchError,
    ):
        assert issubclass(error, DataError)


# -- the ImageNet pipeline ------------------------------------------------------------------------------------------
def test_imagenet_eval_transform_is_resize_256_centre_crop_224():
    image = PILImage.fromarray(random_pixels(np.random.default_rng(3), 300, 400))
    reference = T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    assert torch.allclose(imagenet_transforms(train=False)(image), reference(image), atol=1e-6)
    train_steps = [type(t).__name__ for t in imagenet_transforms(train=True).transforms]
    assert "RandomResizedCropAndInterpolation" in train_steps and "RandomHorizontalFlip" in train_steps
    assert not any("Jitter" in name for name in train_steps)
    assert imagenet_transforms(train=True)(image).shape == (3, 224, 224)


def test_make_image_dataloader_batches_and_reproducibility(imagenet):
    ds = to_schema(imagenet["train"], name="inet", split="train")

    def batches(num_workers):
        random.seed(0)  # with num_workers=0 the transforms use the global RNGs
        torch.manual_seed(0)
        loader = make_image_dataloader(
            ds, 3, train=True, num_workers=num_workers, seed=7, transform=imagenet_transforms(True, 24)
        )
        return [b for epoch in range(2) for b in loader]

    first = batches(0)
    assert len(first) == 4  # 7 rows, batch 3, drop_last in training: 2 per epoch
    batch = first[0]
    assert set(batch) == {"image", "label", "sample_idx"}
    assert batch["image"].shape == (3, 3, 24, 24) and batch["image"].dtype == torch.float32
    assert batch["label"].dtype == torch.int64 and batch["sample_idx"].dtype == torch.int64
    assert not torch.equal(first[0]["sample_idx"], first[2]["sample_idx"]) or not torch.equal(
        first[1]["sample_idx"], first[3]["sample_idx"]
    )  # the two epochs are shuffled differently
    for a, b in zip(first, batches(0), strict=True):
        assert all(torch.equal(a[k], b[k]) for k in a)
    with_workers = batches(2)
    for a, b in zip(with_workers, batches(2), strict=True):
        assert all(torch.equal(a[k], b[k]) for k in a)
    evaluation = list(
        make_image_dataloader(ds, 4, train=False, num_workers=0, transform=imagenet_transforms(False, 24))
    )
    assert torch.cat([b["sample_idx"] for b in evaluation]).tolist() == list(range(7))


def test_parquet_with_integer_labels_is_checked_against_class_names(tmp_path):
    rng = np.random.default_rng(4)
    bad = Dataset.from_dict(
        {"image": [{"bytes": png_bytes(random_pixels(rng)), "path": None} for _ in range(3)], "label": [0, 1, 7]},
        features=Features({"image": Image(), "label": Value("int64")}),
    )
    bad.to_parquet(str(tmp_path / "bad.parquet"))
    with pytest.raises(DataSchemaError, match=r"1 labels outside \[0, 2\) \(row 2: 7\)"):
        load_split(str(tmp_path / "bad.parquet"), class_names=["a", "b"], cache_dir=tmp_path)
    good = load_split(
        str(tmp_path / "bad.parquet"), class_names=["a", "b", "c", "d", "e", "f", "g", "h"], cache_dir=tmp_path
    )
    assert good["label"][:] == [0, 1, 7] and good.features["label"].names[7] == "h"


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (
            datasets.exceptions.DatasetNotFoundError(
                "Dataset 'ILSVRC/imagenet-1k' is a gated dataset on the Hub. You must be authenticated to access it."
            ),
            "gated dataset",
        ),
        (huggingface_hub.errors.LocalTokenNotFoundError("Token is required but no token found"), "no token found"),
        (ConnectionError("Couldn't reach 'ILSVRC/imagenet-1k' on the Hub (ConnectTimeout)"), "Couldn't reach"),
    ],
)
def test_hub_access_failures_become_dataset_unavailable(monkeypatch, error, reason):
    def fail(*args, **kwargs):
        raise error

    monkeypatch.setattr(datasets, "load_dataset", fail)
    with pytest.raises(DatasetUnavailableError, match=reason) as info:
        load_split("ILSVRC/imagenet-1k", "validation", token="hf_xxx")
    assert "https://huggingface.co/datasets/ILSVRC/imagenet-1k" in str(info.value)
    assert info.value.__cause__ is error


def test_hub_unknown_split_and_other_errors(monkeypatch):
    def unknown_split(*args, **kwargs):
        raise ValueError("Unknown split \"val\". Should be one of ['train', 'validation', 'test'].")

    monkeypatch.setattr(datasets, "load_dataset", unknown_split)
    with pytest.raises(UnknownSplitError, match=r"no split 'val'; available splits: \['train', 'validation', 'test'\]"):
        load_split("ILSVRC/imagenet-1k", "val")

    def bug(*args, **kwargs):
        raise KeyError("a bug, not an access problem")

    monkeypatch.setattr(datasets, "load_dataset", bug)
    with pytest.raises(KeyError):  # not disguised as a Hub access error
        load_split("ILSVRC/imagenet-1k", "validation")
