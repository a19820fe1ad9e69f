"""Reference CIFAR checkpoints (CRD / RepDistiller, mdistiller) read into the zoo: the name map and the reader.

`data/reference_state_dict_keys.json.gz` is a fact file: for each of the 22 architectures, the state-dict keys and
shapes (num_classes=100) of the reference model as CRD's `models/` and mdistiller's `mdistiller/models/cifar/`
build it (identical in both), recorded by instantiating the reference code. The map is checked against it for every
registered model; fake reference checkpoints are made from our weights with the inverse of the map and saved as
CRD's `train_teacher.py` saves them.
"""

import argparse
import copy
import gzip
import json
import re
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file

from kd_zoo.models import (
    CheckpointMismatchError,
    ReferenceCheckpointError,
    ReferenceKeyError,
    kd_zoo_to_reference,
    load_reference_checkpoint,
    read_reference_checkpoint,
    reference_to_kd_zoo,
)
from kd_zoo.models.reference import REFERENCE_ARCHS, REFERENCE_NAMES, fitting_architectures, reference_arch

FACTS = json.loads(gzip.open(Path(__file__).parent / "data" / "reference_state_dict_keys.json.gz", "rt").read())
MODELS = timm.list_models("lrds_*")


def _reference_names(arch: str) -> dict[str, str]:
    """Our name -> the reference name, for every tensor of `arch` (the map applied to the recorded keys)."""
    keys = FACTS[arch]["keys"]
    return reference_to_kd_zoo(arch, {key: key for key in keys})


def _randomised(arch: str, num_classes: int = 100) -> torch.nn.Module:
    model = timm.create_model(arch, num_classes=num_classes).eval()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2, generator=generator)
                m.running_var.uniform_(0.5, 1.5, generator=generator)
                m.weight.uniform_(0.5, 1.5, generator=generator)
                m.num_batches_tracked.fill_(97)
    return model


def _save_reference_checkpoint(model: torch.nn.Module, arch: str, path: Path, **kwargs) -> Path:
    """As CRD's train_teacher.py writes `ckpt_epoch_240.pth`: epoch, the state dict under 'model', the test accuracy
    (a 0-dim tensor) and the SGD state."""
    names = _reference_names(arch)
    state = {names[k]: v for k, v in model.state_dict().items()}
    trained = copy.deepcopy(model)  # the optimizer's state comes from a step that leaves `model` untouched
    optimizer = torch.optim.SGD(trained.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    trained(torch.randn(2, 3, 32, 32)).logsumexp(1).sum().backward()
    optimizer.step()  # momentum buffers in the optimizer state, as in a real file
    path.parent.mkdir(parents=True, exist_ok=True)
    checkpoint = {"epoch": 240, "model": state, "accuracy": torch.tensor(79.42), "optimizer": optimizer.state_dict()}
    torch.save(checkpoint, path, **kwargs)
    return path


def test_every_model_has_reference_facts_and_a_name_map():
    assert sorted(FACTS) == sorted(MODELS) == sorted(REFERENCE_ARCHS)
    assert sorted(REFERENCE_NAMES.values()) == sorted(MODELS)
    assert {FACTS[a]["model_dict_key"] for a in MODELS} == set(REFERENCE_NAMES)  # the reference's own names


@pytest.mark.parametrize("arch", MODELS)
def test_the_name_map_covers_the_reference_state_dict(arch):
    keys = FACTS[arch]["keys"]
    renamed = reference_to_kd_zoo(arch, {key: torch.empty(shape) for key, shape in keys.items()})
    assert len(renamed) == len(keys)  # no key dropped, none merged
    expected = timm.create_model(arch, num_classes=100).state_dict()
    assert list(renamed) == [k for k in renamed if k in expected] and set(renamed) == set(expected)
    wrong = [k for k, v in renamed.items() if tuple(v.shape) != tuple(expected[k].shape)]
    assert not wrong, f"shape differs for {wrong[:5]}"


@pytest.mark.parametrize("arch", MODELS)
def test_our_names_map_back_to_the_reference_names(arch):
    """`kd_zoo_to_reference` gives exactly the reference state dict's names, in its order (zoo weights then run in
    the reference code with `load_state_dict(strict=True)`)."""
    state = timm.create_model(arch, num_classes=100).state_dict()
    reference = kd_zoo_to_reference(arch, state)
    assert list(reference) == list(FACTS[arch]["keys"])
    assert all(reference[ref] is state[ours] for ours, ref in _reference_names(arch).items())
    with pytest.raises(ReferenceKeyError, match="no name in the reference code"):
        kd_zoo_to_reference(arch, {**state, "stages.9.blocks.0.conv1.weight": torch.zeros(1)})


# The rules of each family on hand-picked names (the reference's attribute names, ours from the model files).
GOLDEN = {
    "lrds_resnet8": {
        "conv1.weight": "stages.0.blocks.0.weight",
        "bn1.running_var": "stages.0.blocks.1.running_var",
        "layer2.0.downsample.1.num_batches_tracked": "stages.2.blocks.0.downsample.1.num_batches_tracked",
        "layer3.0.conv2.weight": "stages.3.blocks.0.conv2.weight",
        "fc.bias": "fc.bias",
    },
    "lrds_resnet50": {
        "layer4.2.bn3.weight": "stages.4.blocks.2.bn3.weight",
        "layer1.0.shortcut.0.weight": "stages.1.blocks.0.downsample.0.weight",
        "linear.weight": "fc.weight",
    },
    "lrds_wrn_40_2": {
        "conv1.weight": "stages.0.blocks.0.weight",
        "block2.layer.5.bn2.running_mean": "stages.2.blocks.5.bn2.running_mean",
        "block1.layer.0.convShortcut.weight": "stages.1.blocks.0.shortcut.weight",
        "bn1.weight": "final_norm.0.weight",
    },
    "lrds_vgg13": {
        "block0.0.weight": "stages.0.blocks.0.weight",
        "block0.4.running_var": "stages.0.blocks.4.running_var",
        "block1.3.bias": "stages.1.blocks.4.bias",
        "block4.4.weight": "stages.4.blocks.4.weight",
        "classifier.weight": "fc.weight",
    },
    "lrds_mobilenetv2": {
        "conv1.0.weight": "stages.0.blocks.0.weight",
        "blocks.1.1.conv.7.bias": "stages.1.blocks.2.conv.7.bias",
        "blocks.4.2.conv.3.weight": "stages.3.blocks.6.conv.3.weight",
        "blocks.6.0.conv.0.weight": "stages.4.blocks.3.conv.0.weight",
        "conv2.1.running_mean": "head_conv.1.running_mean",
        "classifier.0.weight": "fc.weight",
    },
    "lrds_shufflenetv1": {
        "layer2.7.bn3.bias": "stages.2.blocks.7.bn3.bias",
        "linear.bias": "fc.bias",
    },
    "lrds_shufflenetv2": {
        "layer1.0.conv5.weight": "stages.1.blocks.0.conv5.weight",
        "layer2.7.bn3.weight": "stages.2.blocks.7.bn3.weight",
        "conv2.weight": "head_conv.0.weight",
        "bn2.bias": "head_conv.1.bias",
    },
}


@pytest.mark.parametrize("arch", sorted(GOLDEN))
def test_family_rules_on_hand_picked_names(arch):
    renamed = _reference_names(arch)
    by_reference = {ref: ours for ours, ref in renamed.items()}
    for ref, ours in GOLDEN[arch].items():
        assert by_reference[ref] == ours
    assert {REFERENCE_ARCHS[a].family for a in GOLDEN} == {spec.family for spec in REFERENCE_ARCHS.values()}


@pytest.mark.parametrize(
    ("arch", "key"),
    [
        ("lrds_resnet8", "layer1.1.conv1.weight"),  # a block resnet8 does not have (resnet14's)
        ("lrds_vgg8", "block0.2.weight"),  # a ReLU index holds no tensor
        ("lrds_vgg8", "block2.3.weight"),  # a second conv that vgg8's group does not have
        ("lrds_mobilenetv2", "blocks.6.1.conv.0.weight"),  # beyond the group's block count
        ("lrds_shufflenetv2", "layer1.1.conv5.weight"),  # conv5 exists in the down block only
        ("lrds_wrn_16_1", "block4.layer.0.conv1.weight"),  # no fourth group
    ],
)
def test_names_outside_the_architecture_are_reported(arch, key):
    good = {ref: torch.zeros(1) for ref in _reference_names(arch).values()}
    assert len(reference_to_kd_zoo(arch, good)) == len(good)  # the architecture's own names pass
    with pytest.raises(ReferenceKeyError, match=re.escape(key)):
        reference_to_kd_zoo(arch, {**good, key: torch.zeros(1)})


def test_architecture_names():
    assert reference_arch("resnet32x4") == reference_arch("lrds_resnet32x4") == "lrds_resnet32x4"
    assert reference_arch("ResNet50") == "lrds_resnet50" and reference_arch("MobileNetV2") == "lrds_mobilenetv2"
    assert reference_arch("ShuffleV2") == "lrds_shufflenetv2" and reference_arch("wrn_40_2") == "lrds_wrn_40_2"
    with pytest.raises(ValueError, match=r"Unknown architecture 'resnet33'.*Did you mean 'resnet32'"):
        reference_arch("resnet33")


def _families_smallest() -> set[str]:
    """The smallest architecture of each family: round trips in the default run, every architecture under -m slow."""
    by_family: dict[str, list[tuple[int, str]]] = {}
    for arch in MODELS:
        size = sum(torch.Size(s).numel() for s in FACTS[arch]["keys"].values())
        by_family.setdefault(REFERENCE_ARCHS[arch].family, []).append((size, arch))
    return {min(members)[1] for members in by_family.values()}


_FAST = _families_smallest()


@pytest.mark.parametrize("arch", [pytest.param(a, marks=() if a in _FAST else pytest.mark.slow) for a in MODELS])
def test_a_reference_checkpoint_loads_with_every_tensor(arch, tmp_path):
    source = _randomised(arch)
    short = FACTS[arch]["model_dict_key"]
    path = _save_reference_checkpoint(source, arch, tmp_path / f"{short}_vanilla" / "ckpt_epoch_240.pth")
    model = load_reference_checkpoint(short, path)
    assert model.num_classes == 100 and not model.training
    assert model.pretrained_cfg["architecture"] == arch and model.pretrained_cfg["tag"] == "cifar100"
    want = source.state_dict()
    for key, value in model.state_dict().items():
        assert torch.equal(value, want[key]), key
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), source.eval()(x))


# -- the reader ------------------------------------------------------------------------------------------------
def test_reader_records_the_file_and_its_entries(tmp_path):
    path = _save_reference_checkpoint(_randomised("lrds_resnet8"), "lrds_resnet8", tmp_path / "ckpt_epoch_240.pth")
    ckpt = read_reference_checkpoint(path)
    assert ckpt.entries == ["epoch", "model", "accuracy", "optimizer"]
    assert ckpt.info["epoch"] == 240 and ckpt.info["accuracy"] == pytest.approx(79.42)
    assert ckpt.num_classes == 100 and len(ckpt.sha256) == 64
    assert "conv1.weight" in ckpt.state_dict


@pytest.mark.parametrize(
    "variant", ["bare", "legacy_format", "best", "dataparallel", "mdistiller_student", "no_num_batches_tracked"]
)
def test_reader_accepts_the_layouts_in_use(variant, tmp_path):
    source = _randomised("lrds_resnet8")
    names = _reference_names("lrds_resnet8")
    state = {names[k]: v for k, v in source.state_dict().items()}
    path = tmp_path / "ckpt.pth"
    prefix = None
    if variant == "bare":
        torch.save(state, path)
    elif variant == "legacy_format":  # what torch < 1.6 wrote (the CRD README names PyTorch 0.4)
        torch.save({"epoch": 240, "model": state}, path, _use_new_zipfile_serialization=False)
    elif variant == "best":
        torch.save({"epoch": 200, "model": state, "best_acc": 73.1}, path)
    elif variant == "dataparallel":
        torch.save({"model": {f"module.{k}": v for k, v in state.items()}}, path)
    elif variant == "mdistiller_student":  # mdistiller's distiller checkpoint: student and teacher side by side
        teacher = {f"module.teacher.{k}": torch.zeros_like(v) for k, v in state.items()}
        torch.save({"model": {**{f"module.student.{k}": v for k, v in state.items()}, **teacher}}, path)
        prefix = "module.student."
    elif variant == "no_num_batches_tracked":  # BatchNorm as torch 0.4 saved it
        torch.save({"model": {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}}, path)
    model = load_reference_checkpoint("resnet8", path, prefix=prefix)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), source(x))


def test_a_distiller_checkpoint_without_a_prefix_says_which_to_take(tmp_path):
    state = {f"module.student.{k}": v for k, v in _randomised("lrds_resnet8").state_dict().items()}
    path = tmp_path / "latest"
    torch.save({"model": state}, path)
    with pytest.raises(ReferenceKeyError, match="prefix='module.student.'"):
        load_reference_checkpoint("resnet8", path)
    with pytest.raises(ReferenceCheckpointError, match=r"no tensors under the prefix 'module.teacher.'"):
        read_reference_checkpoint(path, prefix="module.teacher.")


# -- what is refused, each next to what passes ------------------------------------------------------------------
@pytest.fixture
def resnet8_file(tmp_path):
    return _save_reference_checkpoint(_randomised("lrds_resnet8"), "lrds_resnet8", tmp_path / "ckpt_epoch_240.pth")


def test_another_architecture_names_the_tensors_and_the_one_that_fits(resnet8_file):
    assert load_reference_checkpoint("resnet8", resnet8_file).num_classes == 100
    with pytest.raises(CheckpointMismatchError) as err:  # same names, other shapes
        load_reference_checkpoint("resnet8x4", resnet8_file)
    message = str(err.value)
    assert "ckpt_epoch_240.pth" in message and "it fits lrds_resnet8, not lrds_resnet8x4" in message
    assert "stages.0.blocks.0.weight: checkpoint (16, 3, 3, 3) vs model (32, 3, 3, 3)" in message
    with pytest.raises(
        CheckpointMismatchError, match=r"it fits lrds_resnet8.*missing from checkpoint: stages\.1\.blocks\.1"
    ):
        load_reference_checkpoint("resnet14", resnet8_file)
    with pytest.raises(ReferenceKeyError, match=r"it fits lrds_resnet8.*layer1\.0\.conv1\.weight"):
        load_reference_checkpoint("wrn_16_1", resnet8_file)


def test_another_class_count_is_refused(tmp_path):
    path = _save_reference_checkpoint(_randomised("lrds_resnet8", 10), "lrds_resnet8", tmp_path / "ten.pth")
    assert load_reference_checkpoint("resnet8", path).num_classes == 10  # the file's own count by default
    assert load_reference_checkpoint("resnet8", path, num_classes=10).num_classes == 10
    with pytest.raises(CheckpointMismatchError, match=r"10 classes, not the 100 asked for.*--num-classes 10"):
        load_reference_checkpoint("resnet8", path, num_classes=100)


def test_a_pickle_that_needs_code_is_refused_with_the_file_that_works(tmp_path, resnet8_file):
    state = torch.load(resnet8_file, weights_only=True)["model"]
    last = tmp_path / "resnet8_last.pth"
    torch.save({"opt": argparse.Namespace(lr=0.05), "model": state}, last)  # CRD's <model>_last.pth
    with pytest.raises(ReferenceCheckpointError) as err:
        read_reference_checkpoint(last)
    message = str(err.value)
    assert "resnet8_last.pth" in message and "argparse.Namespace" in message and "weights_only=True" in message
    assert "ckpt_epoch_<N>.pth" in message
    assert read_reference_checkpoint(resnet8_file).info["epoch"] == 240


@pytest.mark.parametrize("kind", ["text", "empty", "truncated", "safetensors", "no_state_dict", "a_list"])
def test_files_that_are_not_checkpoints_are_refused(kind, tmp_path, resnet8_file):
    path = tmp_path / "ckpt.pth"
    if kind == "text":
        path.write_text("<html>404 Not Found</html>\n")  # what a dead download link leaves behind
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated":
        path.write_bytes(resnet8_file.read_bytes()[:5000])
    elif kind == "safetensors":
        save_file({"a": torch.zeros(2)}, str(path))
    elif kind == "no_state_dict":
        torch.save({"epoch": 240, "accuracy": 71.0}, path)
    elif kind == "a_list":
        torch.save([torch.zeros(2)], path)
    expected = {
        "text": "not a readable PyTorch checkpoint",
        "empty": "is empty",
        "truncated": "not a readable PyTorch checkpoint",
        "safetensors": "is a safetensors file.*load_model",
        "no_state_dict": "holds no state dict: its entries are epoch, accuracy",
        "a_list": "holds a list",
    }[kind]
    with pytest.raises(ReferenceCheckpointError, match=expected):
        read_reference_checkpoint(path)
    with pytest.raises(FileNotFoundError, match="not found"):
        read_reference_checkpoint(tmp_path / "missing.pth")
    assert read_reference_checkpoint(resnet8_file).num_classes == 100


def test_fitting_architectures_finds_the_one_whose_shapes_fit():
    keys = FACTS["lrds_resnet8x4"]["keys"]
    assert fitting_architectures({k: torch.empty(s) for k, s in keys.items()}) == ["lrds_resnet8x4"]
    assert fitting_architectures({"conv1.weight": torch.empty(1)}) == []
