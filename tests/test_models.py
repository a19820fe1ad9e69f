"""The model zoo: every registered `lrds_*` model against the reference table and the timm contract.

Parametrised over `timm.list_models('lrds_*')`, so a new model cannot skip these tests; `REFERENCE` must list it.
"""

import pytest
import timm
import torch
from safetensors.torch import load_file, save_file

import kd_zoo

MODELS = timm.list_models("lrds_*")

# shared/reference/architectures.md: parameters (num_classes=100), classifier parameters, stage outputs (C, H, W).
_R = [(16, 32, 32), (16, 32, 32), (32, 16, 16), (64, 8, 8)]
_RX4 = [(32, 32, 32), (64, 32, 32), (128, 16, 16), (256, 8, 8)]
_W2 = [(16, 32, 32), (32, 32, 32), (64, 16, 16), (128, 8, 8)]
_VGG = [(64, 32, 32), (128, 16, 16), (256, 8, 8), (512, 4, 4), (512, 4, 4)]
REFERENCE = {
    "lrds_resnet8": (83_892, 6_500, _R),
    "lrds_resnet14": (181_108, 6_500, _R),
    "lrds_resnet20": (278_324, 6_500, _R),
    "lrds_resnet32": (472_756, 6_500, _R),
    "lrds_resnet44": (667_188, 6_500, _R),
    "lrds_resnet56": (861_620, 6_500, _R),
    "lrds_resnet110": (1_736_564, 6_500, _R),
    "lrds_resnet8x4": (1_233_540, 25_700, _RX4),
    "lrds_resnet32x4": (7_433_860, 25_700, _RX4),
    "lrds_wrn_16_1": (180_916, 6_500, _R),
    "lrds_wrn_16_2": (703_284, 12_900, _W2),
    "lrds_wrn_40_1": (569_780, 6_500, _R),
    "lrds_wrn_40_2": (2_255_156, 12_900, _W2),
    "lrds_vgg8": (3_965_028, 51_300, _VGG),
    "lrds_vgg11": (9_277_284, 51_300, _VGG),
    "lrds_vgg13": (9_462_180, 51_300, _VGG),
    "lrds_vgg16": (14_774_436, 51_300, _VGG),
    "lrds_vgg19": (20_086_692, 51_300, _VGG),
    "lrds_mobilenetv2": (812_836, 128_100, [(16, 16, 16), (12, 16, 16), (16, 8, 8), (48, 4, 4), (160, 2, 2)]),
    "lrds_shufflenetv1": (949_258, 96_100, [(24, 32, 32), (240, 16, 16), (480, 8, 8), (960, 4, 4)]),
    "lrds_shufflenetv2": (1_355_528, 102_500, [(24, 32, 32), (116, 16, 16), (232, 8, 8), (464, 4, 4)]),
    "lrds_resnet50": (23_705_252, 204_900, [(64, 32, 32), (256, 32, 32), (512, 16, 16), (1024, 8, 8), (2048, 4, 4)]),
}
POOLED = {name: cls // 100 - 1 for name, (_, cls, _) in REFERENCE.items()}  # classifier = (dim + 1) x 100


def _model(name, **kwargs):
    return timm.create_model(name, num_classes=100, **kwargs)


def test_registry_matches_reference():
    assert sorted(MODELS) == sorted(REFERENCE), "every lrds_* model needs a reference row, and vice versa"
    assert len(MODELS) == 22


@pytest.mark.parametrize("name", MODELS)
def test_parameter_count_and_stages(name):
    params, cls_params, stages = REFERENCE[name]
    model = _model(name).eval()
    assert sum(p.numel() for p in model.parameters()) == params
    assert sum(p.numel() for p in model.get_classifier().parameters()) == cls_params
    assert model.num_features == POOLED[name]
    assert model.num_classes == 100 and model.in_chans == 3
    feats = model.forward_intermediates(torch.randn(2, 3, 32, 32), intermediates_only=True)
    assert [tuple(f.shape[1:]) for f in feats] == stages


@pytest.mark.parametrize("name", MODELS)
def test_forward_backward_every_parameter_gets_a_gradient(name):
    model = _model(name).train()
    logits = model(torch.randn(2, 3, 32, 32))
    assert logits.shape == (2, 100)
    logits.logsumexp(1).sum().backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not no_grad, f"parameters without gradient: {no_grad}"


@pytest.mark.parametrize("name", MODELS)
def test_timm_contract(name):
    model = _model(name).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        logits = model(x)
        features = model.forward_features(x)
        pooled = model.forward_head(features, pre_logits=True)
        assert pooled.shape == (2, model.num_features)
        torch.testing.assert_close(model.forward_head(features), logits)
        final, inter = model.forward_intermediates(x)
        torch.testing.assert_close(final, features)
        # feature_info describes the actual intermediates.
        assert len(model.feature_info) == len(inter)
        for info, feat in zip(model.feature_info, inter, strict=True):
            assert info["num_chs"] == feat.shape[1]
            assert info["reduction"] == 32 // feat.shape[-1]
        # Indices select, negative indices count from the end, stop_early still returns them.
        last_two = model.forward_intermediates(x, indices=[-2, -1], intermediates_only=True)
        for a, b in zip(last_two, inter[-2:], strict=True):
            torch.testing.assert_close(a, b)
        _, early = model.forward_intermediates(x, indices=[1], stop_early=True)
        torch.testing.assert_close(early[0], inter[1])
        # Pre-activation outputs: same shapes, and the stage activation maps them onto the outputs.
        pre = model.forward_intermediates(x, intermediates_only=True, preact=True)
        for stage, p, o in zip(model.stages, pre, inter, strict=True):
            assert p.shape == o.shape
            torch.testing.assert_close(stage.act(p.clone()), o)
    cfg = model.pretrained_cfg
    assert cfg["input_size"] == (3, 32, 32)
    assert cfg["mean"] == kd_zoo.constants.CIFAR100_MEAN and cfg["std"] == kd_zoo.constants.CIFAR100_STD
    assert cfg["classifier"] == "fc" and model.get_classifier() is model.fc
    assert isinstance(model.get_submodule(cfg["first_conv"]), torch.nn.Conv2d)
    assert tuple(cfg["pool_size"]) == tuple(features.shape[-2:])


@pytest.mark.parametrize("name", MODELS)
def test_reset_classifier_gives_pooled_features(name):
    model = _model(name).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        pooled = model.forward_head(model.forward_features(x), pre_logits=True)
        model.reset_classifier(0)
        assert model.num_classes == 0
        torch.testing.assert_close(model(x), pooled)
        model.reset_classifier(7)
        assert model(x).shape == (2, 7)


@pytest.mark.parametrize("name", MODELS)
def test_features_only(name):
    stages = REFERENCE[name][2]
    model = timm.create_model(name, features_only=True).eval()
    with torch.no_grad():
        feats = model(torch.randn(1, 3, 32, 32))
    assert [tuple(f.shape[1:]) for f in feats] == stages
    assert model.feature_info.channels() == [s[0] for s in stages]
    picked = timm.create_model(name, features_only=True, out_indices=(1, -1)).eval()
    assert [f.shape[1] for f in picked(torch.randn(1, 3, 32, 32))] == [stages[1][0], stages[-1][0]]


@pytest.mark.parametrize("name", MODELS)
def test_safetensors_round_trip(name, tmp_path):
    model = _model(name).eval()
    for m in model.modules():  # non-trivial BN statistics, so buffers are checked too
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    path = tmp_path / "model.safetensors"
    save_file(model.state_dict(), str(path))
    loaded = timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=str(path))).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))


def test_grad_checkpointing_matches():
    model = _model("lrds_resnet8").train()
    x = torch.randn(4, 3, 32, 32)
    ref = model(x)
    model.set_grad_checkpointing(True)
    torch.manual_seed(0)
    torch.testing.assert_close(model(x), ref)


def test_prune_intermediate_layers():
    model = _model("lrds_wrn_16_2").eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        want = model.forward_intermediates(x, indices=[1], intermediates_only=True)[0]
        kept = model.prune_intermediate_layers([1])
        assert kept == [1] and len(model.stages) == 2 and model.num_classes == 0
        torch.testing.assert_close(model.forward_intermediates(x, indices=[1], intermediates_only=True)[0], want)


def test_default_tags_follow_the_zoo_pairs():
    assert timm.get_pretrained_cfg("lrds_resnet8x4").tag == "lrds_resnet32x4_cifar100"
    assert timm.get_pretrained_cfg("lrds_resnet32x4").tag == "cifar100"
    tags = timm.list_pretrained("lrds_shufflenetv1.*")
    assert {
        "lrds_shufflenetv1.lrds_resnet32x4_cifar100",
        "lrds_shufflenetv1.lrds_wrn_40_2_cifar100",
        "lrds_shufflenetv1.kd_resnet32x4_cifar100",
        "lrds_shufflenetv1.cifar100",
    } <= set(tags)
    for name in timm.list_pretrained("lrds_*"):
        cfg = timm.get_pretrained_cfg(name)
        assert cfg.hf_hub_id == f"{kd_zoo.constants.HF_ORG}/{name}", name


def test_unknown_tag_lists_close_matches():
    with pytest.raises(ValueError, match=r"lrds_resnet32x4_cifar100"):
        timm.create_model("lrds_resnet8x4.lrds_resnet32x4_cifar10")


def test_unknown_architecture_lists_close_matches():
    with pytest.raises(ValueError, match=r"lrds_resnet8x4"):
        kd_zoo.create_model("lrds_resnet8x5")
    assert kd_zoo.create_model("lrds_resnet8", num_classes=10).num_classes == 10
    assert "lrds_resnet8x4" in kd_zoo.list_models()


@pytest.mark.parametrize("bad", [-1, 2.5, "100", True])
def test_bad_num_classes(bad):
    with pytest.raises(ValueError, match="num_classes"):
        timm.create_model("lrds_resnet8", num_classes=bad)
    model = _model("lrds_resnet8")
    with pytest.raises(ValueError, match="num_classes"):
        model.reset_classifier(bad)


def test_bad_in_chans():
    with pytest.raises(ValueError, match="in_chans"):
        timm.create_model("lrds_resnet8", in_chans=0)


def test_in_chans_adapts_pretrained_stem(tmp_path):
    src = _model("lrds_resnet8")
    path = tmp_path / "model.safetensors"
    save_file(src.state_dict(), str(path))
    gray = timm.create_model("lrds_resnet8", pretrained=True, in_chans=1, pretrained_cfg_overlay=dict(file=str(path)))
    assert gray.stages[0].blocks[0].weight.shape[1] == 1
    assert gray(torch.randn(1, 1, 32, 32)).shape == (1, 100)


def test_checkpoint_mismatch_names_the_tensors(tmp_path):
    state = _model("lrds_resnet8").state_dict()
    state["stages.1.blocks.0.conv1.weight"] = torch.zeros(8, 16, 3, 3)
    state.pop("stages.2.blocks.0.bn1.bias")
    path = tmp_path / "bad.safetensors"
    save_file(state, str(path))
    with pytest.raises(kd_zoo.models.CheckpointMismatchError) as err:
        timm.create_model("lrds_resnet8", pretrained=True, pretrained_cfg_overlay=dict(file=str(path)))
    message = str(err.value)
    assert "stages.1.blocks.0.conv1.weight" in message and "(8, 16, 3, 3)" in message
    assert "stages.2.blocks.0.bn1.bias" in message


def test_different_class_count_reinitialises_classifier(tmp_path):
    path = tmp_path / "model.safetensors"
    save_file(_model("lrds_resnet8").state_dict(), str(path))
    model = timm.create_model(
        "lrds_resnet8", pretrained=True, num_classes=10, pretrained_cfg_overlay=dict(file=str(path))
    )
    assert model.fc.out_features == 10


def test_corrupt_and_foreign_weight_files_are_refused(tmp_path):
    corrupt = tmp_path / "model.safetensors"
    save_file(_model("lrds_resnet8").state_dict(), str(corrupt))
    corrupt.write_bytes(corrupt.read_bytes()[:100])
    with pytest.raises(kd_zoo.models.PretrainedWeightsError, match="corrupt"):
        timm.create_model("lrds_resnet8", pretrained=True, pretrained_cfg_overlay=dict(file=str(corrupt)))
    pickle_file = tmp_path / "model.pth"
    pickle_file.write_bytes(b"not read")
    with pytest.raises(kd_zoo.models.PretrainedWeightsError, match="safetensors"):
        timm.create_model("lrds_resnet8", pretrained=True, pretrained_cfg_overlay=dict(file=str(pickle_file)))


def test_missing_weights_name_the_repo_and_the_local_fix(tmp_path):
    with pytest.raises(kd_zoo.models.PretrainedWeightsError) as err:
        timm.create_model("lrds_resnet8x4", pretrained=True, cache_dir=str(tmp_path))
    message = str(err.value)
    assert f"{kd_zoo.constants.HF_ORG}/lrds_resnet8x4.lrds_resnet32x4_cifar100" in message
    assert "pretrained_cfg_overlay=dict(file=" in message and "local-dir:" in message


def _populate_hf_cache(cache_dir, repo_id, files):
    """Lay out a Hugging Face Hub cache entry by hand, as `hf_hub_download` leaves it."""
    revision = "0123456789abcdef0123456789abcdef01234567"
    repo_dir = cache_dir / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo_dir / "snapshots" / revision
    snapshot.mkdir(parents=True)
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / "main").write_text(revision)
    for name, write in files.items():
        write(snapshot / name)


def test_pretrained_from_offline_hf_cache(tmp_path):
    source = _model("lrds_resnet8x4").eval()
    repo_id = f"{kd_zoo.constants.HF_ORG}/lrds_resnet8x4.lrds_resnet32x4_cifar100"
    _populate_hf_cache(tmp_path, repo_id, {"model.safetensors": lambda p: save_file(source.state_dict(), str(p))})
    loaded = timm.create_model("lrds_resnet8x4", pretrained=True, cache_dir=str(tmp_path)).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(source(x), loaded(x))


def test_local_dir_source(tmp_path):
    from timm.models import save_for_hf

    source = _model("lrds_wrn_16_1").eval()
    save_for_hf(source, str(tmp_path), safe_serialization=True)
    loaded = timm.create_model(f"local-dir:{tmp_path}", pretrained=True).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(source(x), loaded(x))
    assert set(load_file(str(tmp_path / "model.safetensors"))) == set(source.state_dict())
