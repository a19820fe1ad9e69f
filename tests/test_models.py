"""The model zoo: every registered `lrds_*` model against the reference table and the timm contract.

Parametrised over `timm.list_models('lrds_*')` and `timm.list_pretrained('lrds_*')`, so a new model or weight tag
cannot skip these tests; `REFERENCE` must list every model.
"""

import copy
import logging
import re

import pytest
import timm
import torch
from accelerate import Accelerator
from safetensors.torch import load_file, save_file
from timm.models import save_for_hf
from timm.models._features_fx import create_feature_extractor, get_graph_node_names

import kd_zoo
from kd_zoo.constants import HF_ORG
from kd_zoo.engine import Distiller
from kd_zoo.engine.checkpoint import CheckpointManager
from kd_zoo.methods import create_method
from kd_zoo.models import CheckpointMismatchError, PretrainedWeightsError, Stage, WideResNet

MODELS = timm.list_models("lrds_*")
TAGGED = timm.list_pretrained("lrds_*")

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
        # Pre-activation outputs have the stage shapes (their values: test_preact_is_the_reference_preact).
        pre = model.forward_intermediates(x, intermediates_only=True, preact=True)
        assert [p.shape for p in pre] == [o.shape for o in inter]
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


def test_an_explicit_other_class_count_reinitialises_the_classifier_with_a_warning(tmp_path, caplog):
    source = _model("lrds_resnet8")
    path = tmp_path / "model.safetensors"
    save_file(source.state_dict(), str(path))
    with caplog.at_level(logging.WARNING):
        model = timm.create_model(
            "lrds_resnet8", pretrained=True, num_classes=10, pretrained_cfg_overlay=dict(file=str(path))
        )
    assert model.fc.out_features == 10
    assert "fc.weight (100, 64)" in caplog.text
    assert torch.equal(model.stages[1].blocks[0].conv1.weight, source.stages[1].blocks[0].conv1.weight)


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
    source = _model("lrds_wrn_16_1").eval()
    save_for_hf(source, str(tmp_path), safe_serialization=True)
    loaded = timm.create_model(f"local-dir:{tmp_path}", pretrained=True).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(source(x), loaded(x))
    assert set(load_file(str(tmp_path / "model.safetensors"))) == set(source.state_dict())


# -- weight tags ------------------------------------------------------------------------------------------------
def test_every_architecture_has_tags():
    assert {name.split(".", 1)[0] for name in TAGGED} == set(MODELS)
    assert all(f"{name}.cifar100" in TAGGED for name in MODELS)


@pytest.mark.parametrize("name", TAGGED)
def test_every_tagged_name_builds_and_resolves_to_its_hub_repo(name, tmp_path):
    arch, tag = name.split(".", 1)
    model = timm.create_model(name)
    cfg = model.pretrained_cfg
    assert (cfg["architecture"], cfg["tag"], cfg["hf_hub_id"]) == (arch, tag, f"{HF_ORG}/{name}")
    # With pretrained=True the load goes to that repo (offline here, so it fails naming it).
    for build in (
        lambda: timm.create_model(name, pretrained=True, cache_dir=str(tmp_path)),
        lambda: kd_zoo.load_model(arch, name, cache_dir=str(tmp_path)),
        lambda: kd_zoo.load_model(arch, tag, cache_dir=str(tmp_path)),
    ):
        with pytest.raises(PretrainedWeightsError, match=re.escape(f"'{HF_ORG}/{name}'")):
            build()


def test_tagged_names_load_from_the_hub_cache(tmp_path):
    source = _model("lrds_resnet8").eval()
    _randomise_bn(source)
    _populate_hf_cache(
        tmp_path, f"{HF_ORG}/lrds_resnet8.cifar100", {"model.safetensors": lambda p: save_file(source.state_dict(), p)}
    )
    x = torch.randn(2, 3, 32, 32)
    cache = dict(cache_dir=str(tmp_path))
    for model in (
        timm.create_model("lrds_resnet8.cifar100", pretrained=True, **cache),
        kd_zoo.load_model("lrds_resnet8", "lrds_resnet8.cifar100", **cache),
        kd_zoo.load_model("lrds_resnet8", "cifar100", **cache),
        kd_zoo.load_model("lrds_resnet8.cifar100", **cache),
    ):
        with torch.no_grad():
            assert torch.equal(model.eval()(x), source(x))


def test_a_tag_of_another_architecture_is_refused_naming_both(tmp_path):
    with pytest.raises(ValueError, match=r"lrds_resnet8\b.*lrds_resnet14|lrds_resnet14.*lrds_resnet8\b"):
        kd_zoo.load_model("lrds_resnet14", "lrds_resnet8.cifar100", cache_dir=str(tmp_path))


def test_wrong_tags_are_refused_with_close_matches():
    with pytest.raises(ValueError, match=re.escape("Did you mean 'lrds_resnet32x4.cifar100'")):
        timm.create_model("lrds_resnet32x4.cifar10")
    with pytest.raises(ValueError, match="Unknown pretrained tag 'cifar10'"):
        timm.create_model("lrds_resnet32x4.cifar10", pretrained=True)
    with pytest.raises(FileNotFoundError, match="zoo tag"):
        kd_zoo.load_model("lrds_resnet32x4", "cifar10")
    assert timm.create_model("lrds_resnet32x4.cifar100").pretrained_cfg["tag"] == "cifar100"  # the right one builds


# -- module names -----------------------------------------------------------------------------------------------
def test_registered_under_module_names_of_our_own():
    ours = set(MODELS)
    for module in timm.list_modules():
        names = set(timm.list_models(module=module))
        assert names <= ours or not names & ours, f"timm module {module!r} mixes lrds_* and timm models"
    assert not set(timm.list_models(module="resnet")) & ours
    assert not set(timm.list_models(module="vgg")) & ours
    assert set(timm.list_models(module="cifar_resnet")) == {n for n in ours if n.startswith("lrds_resnet")}
    assert set(timm.list_models(module="cifar_vgg")) == {n for n in ours if n.startswith("lrds_vgg")}


# -- TorchScript and FX ---------------------------------------------------------------------------------------
def _code_paths() -> set[str]:
    """The smallest model of each code path (model class and the module types inside it): these script in the
    default run, every model under `-m slow` (scripting costs 1-9 s a model). Built on the meta device: no memory."""
    groups: dict[tuple, list[tuple[int, str]]] = {}
    for name in MODELS:
        with torch.device("meta"):
            model = timm.create_model(name)
        key = (type(model).__name__, tuple(sorted({type(m).__name__ for m in model.modules()})))
        groups.setdefault(key, []).append((sum(p.numel() for p in model.parameters()), name))
    return {min(members)[1] for members in groups.values()}


_FAST_SCRIPT = _code_paths()
SCRIPT_CASES = [pytest.param(n, marks=() if n in _FAST_SCRIPT else pytest.mark.slow) for n in MODELS]


def _eval_model_with_statistics(name):
    model = _model(name).eval()
    _randomise_bn(model)
    return model


@pytest.mark.parametrize("name", SCRIPT_CASES)
def test_torchscript_matches_eager(name):
    model = _eval_model_with_statistics(name)
    scripted = torch.jit.script(model)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), model(x))
        torch.testing.assert_close(scripted.forward_features(x), model.forward_features(x))


@pytest.mark.parametrize("name", SCRIPT_CASES)
def test_fx_traced_then_scripted_matches_eager(name):
    """As timm's own model tests: FX feature extraction of the output node, then TorchScript."""
    model = _eval_model_with_statistics(name)
    _, eval_nodes = get_graph_node_names(model)
    traced = create_feature_extractor(model, {eval_nodes[-1]: "logits"}).eval()
    scripted = torch.jit.script(traced)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x)["logits"], model(x))
    stages = [info["module"] for info in model.feature_info]
    features = torch.jit.script(create_feature_extractor(model, stages).eval())
    with torch.no_grad():
        got = features(x)
        want = model.forward_intermediates(x, intermediates_only=True)
    for node, expected in zip(stages, want, strict=True):
        torch.testing.assert_close(got[node], expected)


# -- pre-activation features ------------------------------------------------------------------------------------
def _randomise_bn(model):
    """Non-trivial BN statistics and affine parameters, so that pre-activation values are not a rescaled input."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2, generator=generator)
                m.running_var.uniform_(0.5, 1.5, generator=generator)
                m.weight.uniform_(0.5, 1.5, generator=generator)
                m.bias.uniform_(-0.2, 0.2, generator=generator)


def _explicit_preact(model, x):
    """Each stage's pre-activation feature, recomputed from what the modules of a plain `model(x)` produce (forward
    hooks, values cloned at once, so no later in-place op can change them), in the reference convention of CRD /
    mdistiller's `preact_feats`: the stem after its activation; every other stage, its block stack's output before
    the stage activation; for WRN (pre-activation blocks), the BN that follows each stage (the next stage's first
    bn1, `final_norm`'s BN for the last) applied to it. Also returns the stage outputs."""
    captured, handles = {}, []

    def keep(key):
        def hook(module, args, output):
            captured[key] = output.detach().clone()

        return hook

    last = len(model.stages) - 1
    for i, stage in enumerate(model.stages):
        handles.append(stage.register_forward_hook(keep(("out", i))))
        handles.append(stage.blocks.register_forward_hook(keep(("blocks", i))))
        if isinstance(model, WideResNet) and i > 0:
            follower = model.stages[i + 1].blocks[0].bn1 if i < last else model.final_norm[0]
            handles.append(follower.register_forward_hook(keep(("next_bn", i))))
    with torch.no_grad():
        model(x)
    for handle in handles:
        handle.remove()
    outs = [captured[("out", i)] for i in range(last + 1)]
    key = "next_bn" if isinstance(model, WideResNet) else "blocks"
    preacts = [outs[0]] + [captured[(key, i)] for i in range(1, last + 1)]
    return preacts, outs


@pytest.mark.parametrize("name", MODELS)
def test_preact_is_the_reference_preact(name):
    model = _eval_model_with_statistics(name)
    x = torch.randn(4, 3, 32, 32)
    expected, outs = _explicit_preact(model, x)
    with torch.no_grad():
        preact = model.forward_intermediates(x, intermediates_only=True, preact=True)
        post = model.forward_intermediates(x, intermediates_only=True)
        picked = model.forward_intermediates(x, indices=[1, -1], intermediates_only=True, preact=True)
    for i, (got, want, out) in enumerate(zip(preact, expected, outs, strict=True)):
        torch.testing.assert_close(got, want, rtol=0, atol=0, msg=f"stage {i}")
        torch.testing.assert_close(post[i], out, rtol=0, atol=0, msg=f"stage {i}")
        if i == 0:
            continue
        # Before the activation means negative values: a ReLU'd tensor (the old in-place bug) has none.
        assert (got < 0).any(), f"stage {i} pre-activation has no negative value"
        if not isinstance(model, WideResNet):
            torch.testing.assert_close(model.stages[i].act(got), out)
    torch.testing.assert_close(picked[0], preact[1], rtol=0, atol=0)
    torch.testing.assert_close(picked[1], preact[-1], rtol=0, atol=0)


@pytest.mark.parametrize("name", MODELS)
def test_feature_requests_update_batch_norm_statistics_once(name):
    """In training mode, asking for (pre-activation or normalised) features changes no BN statistic differently
    from a plain forward: no BN runs twice."""
    model = _model(name).train()
    x = torch.randn(4, 3, 32, 32)
    plain, with_preact, with_norm = model, copy.deepcopy(model), copy.deepcopy(model)
    with torch.no_grad():
        plain(x)
        with_preact.forward_intermediates(x, preact=True)
        with_norm.forward_intermediates(x, norm=True)
    want = plain.state_dict()
    for other in (with_preact, with_norm):
        for key, value in other.state_dict().items():
            torch.testing.assert_close(value, want[key], rtol=0, atol=0, msg=key)


def test_stage_activation_must_not_work_in_place():
    with pytest.raises(ValueError, match="in place"):
        Stage(torch.nn.Identity(), torch.nn.ReLU(inplace=True))
    with pytest.raises(ValueError, match="in place"):
        Stage(torch.nn.Identity(), torch.nn.Sequential(torch.nn.ReLU(inplace=True)))
    assert isinstance(Stage(torch.nn.Identity(), torch.nn.ReLU()).act, torch.nn.ReLU)


def test_wrn_preact_of_a_pruned_model_is_refused_clearly():
    model = _model("lrds_wrn_16_1").eval()
    model.prune_intermediate_layers([2])
    x = torch.randn(1, 3, 32, 32)
    with pytest.raises(ValueError, match="prune_intermediate_layers"):
        model.forward_intermediates(x, indices=[2], intermediates_only=True, preact=True)
    assert model.forward_intermediates(x, indices=[1], intermediates_only=True, preact=True)[0].shape[1] == 16


# -- the classifier is never dropped silently (issue 14.1) -------------------------------------------------------
def _ten_class_export(tmp_path):
    model = timm.create_model("lrds_resnet8", num_classes=10).eval()
    _randomise_bn(model)
    torch.nn.init.normal_(model.fc.weight)  # a classifier unlike any fresh one
    folder = tmp_path / "student"
    save_for_hf(model, str(folder), safe_serialization=True)
    return model, folder


def test_an_exported_10_class_model_reloads_with_its_classifier(tmp_path):
    source, folder = _ten_class_export(tmp_path)
    file = str(folder / "model.safetensors")
    x = torch.randn(4, 3, 32, 32)
    for model in (
        timm.create_model("lrds_resnet8", pretrained=True, num_classes=10, pretrained_cfg_overlay=dict(file=file)),
        timm.create_model(f"local-dir:{folder}", pretrained=True),
        kd_zoo.load_model("lrds_resnet8", file),
        kd_zoo.load_model("lrds_resnet8", folder),
        kd_zoo.load_model(None, folder),
    ):
        assert model.num_classes == 10 and model.pretrained_cfg["num_classes"] == 10
        with torch.no_grad():
            assert torch.equal(model.eval()(x), source(x))


def test_a_classifier_of_another_class_count_needs_an_explicit_num_classes(tmp_path, caplog):
    _, folder = _ten_class_export(tmp_path)
    file = str(folder / "model.safetensors")
    with pytest.raises(CheckpointMismatchError, match=r"10 classes .*pass num_classes=10"):
        timm.create_model("lrds_resnet8", pretrained=True, pretrained_cfg_overlay=dict(file=file))
    with caplog.at_level(logging.WARNING):
        model = timm.create_model(
            "lrds_resnet8", pretrained=True, num_classes=7, pretrained_cfg_overlay=dict(file=file)
        )
    assert model.fc.out_features == 7
    assert "fc.weight (10, 64)" in caplog.text and "newly initialised" in caplog.text
    features = timm.create_model("lrds_resnet8", pretrained=True, num_classes=0, pretrained_cfg_overlay=dict(file=file))
    assert features(torch.randn(1, 3, 32, 32)).shape == (1, 64)


def test_another_architecture_is_named_as_such_even_with_another_class_count(tmp_path):
    path = tmp_path / "resnet8x4_10.safetensors"
    save_file(timm.create_model("lrds_resnet8x4", num_classes=10).state_dict(), str(path))
    with pytest.raises(CheckpointMismatchError) as err:
        timm.create_model("lrds_resnet8", pretrained=True, pretrained_cfg_overlay=dict(file=str(path)))
    message = str(err.value)
    assert "does not fit lrds_resnet8" in message and "stages.0.blocks.0.weight: checkpoint (32, 3, 3, 3)" in message
    assert "pass num_classes" not in message


# -- the weights' own architecture wins or disagrees loudly (issue 14.2) ------------------------------------------
def test_a_folder_of_another_architecture_is_refused_naming_both(tmp_path):
    wrn = _model("lrds_wrn_16_2").eval()
    save_for_hf(wrn, str(tmp_path / "wrn"), safe_serialization=True)
    with pytest.raises(ValueError, match=r"lrds_wrn_16_2.*not lrds_resnet14"):
        kd_zoo.load_model("lrds_resnet14", tmp_path / "wrn")
    with pytest.raises(ValueError, match=r"lrds_wrn_16_2.*not lrds_resnet14"):
        kd_zoo.load_model("lrds_resnet14", f"local-dir:{tmp_path / 'wrn'}")
    with pytest.raises(CheckpointMismatchError, match="lrds_resnet14"):
        kd_zoo.load_model("lrds_resnet14", tmp_path / "wrn" / "model.safetensors")
    x = torch.randn(2, 3, 32, 32)
    for model in (kd_zoo.load_model("lrds_wrn_16_2", tmp_path / "wrn"), kd_zoo.load_model(None, tmp_path / "wrn")):
        with torch.no_grad():
            assert torch.equal(model.eval()(x), wrn(x))


# -- a training checkpoint as teacher weights (issue 14, newcomer) -----------------------------------------------
def test_a_training_checkpoint_folder_loads_its_student(tmp_path):
    student, teacher = _model("lrds_resnet8"), _model("lrds_resnet14")
    _randomise_bn(student)
    trainable = Distiller(student, create_method("fitnet", student, teacher))  # with `method.` tensors
    accelerator = Accelerator(cpu=True)
    prepared = accelerator.prepare(trainable)
    epoch = CheckpointManager(tmp_path / "checkpoints", accelerator).save(1, {})
    keys = load_file(str(epoch / "model.safetensors"))
    assert any(k.startswith("method.") for k in keys) and any(k.startswith("student.") for k in keys)
    x = torch.randn(2, 3, 32, 32)
    want = accelerator.unwrap_model(prepared).student.eval()(x)
    for source in (epoch, tmp_path / "checkpoints", epoch / "model.safetensors"):
        model = kd_zoo.load_model("lrds_resnet8", source)
        with torch.no_grad():
            assert torch.equal(model(x), want), source
    with pytest.raises(CheckpointMismatchError, match=r"student.*does not fit lrds_resnet14"):
        kd_zoo.load_model("lrds_resnet14", epoch)
    with pytest.raises(ValueError, match="architecture"):
        kd_zoo.load_model(None, epoch)


def test_a_reference_pth_is_pointed_to_the_importer(tmp_path):
    path = tmp_path / "ckpt_epoch_240.pth"
    torch.save({"model": _model("lrds_resnet8").state_dict()}, path)
    with pytest.raises(PretrainedWeightsError, match="import_checkpoint.py"):
        kd_zoo.load_model("lrds_resnet8", path)
