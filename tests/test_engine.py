"""The training loop: fit, evaluation, atomic checkpoints, bit-identical resume, NaN stop, guards, config."""

import json

import pytest
import timm
import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState

import kd_zoo  # noqa: F401
from kd_zoo.config import ConfigError, load_config
from kd_zoo.data import TensorBatchLoader, load_tensor_split
from kd_zoo.engine import Distiller, FitOptions, Supervised, freeze, sgd
from kd_zoo.engine.checkpoint import CheckpointManager, check_writable
from kd_zoo.engine.loop import (
    TrainingDivergedError,
    check_num_processes,
    evaluate_accuracy,
    fit,
    scaled_milestones,
    step_lr,
)
from kd_zoo.engine.tracking import JsonlTracker, read_jsonl
from kd_zoo.loading import weights_fingerprint
from kd_zoo.methods import create_method


@pytest.fixture(scope="module")
def demo():
    return load_tensor_split(None, "train"), load_tensor_split(None, "test")


@pytest.fixture
def accelerator(tmp_path):
    AcceleratorState._reset_state(reset_partial_state=True)
    acc = Accelerator(cpu=True, log_with=[JsonlTracker("test", tmp_path / "run")], project_dir=str(tmp_path / "run"))
    acc.init_trackers("test")
    yield acc
    acc.end_training()
    AcceleratorState._reset_state(reset_partial_state=True)


def _loaders(demo, batch_size=64, seed=0):
    train, test = demo
    return (
        TensorBatchLoader(train, batch_size, train=True, seed=seed),
        TensorBatchLoader(test, 128, train=False, seed=seed),
    )


def _run(accelerator, demo, run_dir, epochs, seed=0, **options):
    torch.manual_seed(seed)
    model = Supervised(timm.create_model("lrds_resnet8", num_classes=10))
    optimizer = sgd(model, 0.05)
    model, optimizer = accelerator.prepare(model, optimizer)
    train_loader, eval_loader = _loaders(demo, seed=seed)
    options = FitOptions(epochs, step_lr(0.05, [2]), progress=False, log_every=5, **options)
    result = fit(accelerator, model, optimizer, train_loader, eval_loader, options, run_dir=run_dir)
    return accelerator.unwrap_model(model).student, result


def test_step_lr_is_crd_schedule():
    lr = step_lr(0.05, (150, 180, 210))
    assert [lr(e) for e in (0, 149, 150, 179, 180, 210, 239)] == pytest.approx(
        [0.05, 0.05, 0.005, 0.005, 0.0005, 0.00005, 0.00005]
    )


def test_scaled_milestones():
    assert scaled_milestones(240) == [150, 180, 210]
    assert scaled_milestones(8) == [5, 6, 7] and scaled_milestones(2) == [1] and scaled_milestones(1) == []


def test_bf16_autocast_and_channels_last_on_cpu(demo, tmp_path):
    """The mixed-precision and memory-format options run end to end (on the CPU: bf16 autocast)."""
    AcceleratorState._reset_state(reset_partial_state=True)
    acc = Accelerator(cpu=True, mixed_precision="bf16")
    student = timm.create_model("lrds_resnet8", num_classes=10).to(memory_format=torch.channels_last)
    teacher = freeze(timm.create_model("lrds_resnet14", num_classes=10))
    distiller = Distiller(student, create_method("kd", student, teacher))
    optimizer = sgd(distiller, 0.05)
    distiller, optimizer = acc.prepare(distiller, optimizer)
    train_loader, eval_loader = _loaders(demo)
    options = FitOptions(1, step_lr(0.05, []), progress=False, channels_last=True)
    result = fit(
        acc, distiller, optimizer, train_loader, eval_loader, options, run_dir=tmp_path / "run", teacher=teacher
    )
    assert result.history[0]["eval_count"] == 360 and 0 <= result.last_top1 <= 100
    assert all(torch.isfinite(p).all() and p.dtype == torch.float32 for p in distiller.parameters())
    AcceleratorState._reset_state(reset_partial_state=True)


def test_fit_trains_evaluates_logs_and_checkpoints(accelerator, demo, tmp_path):
    run_dir = tmp_path / "run"
    student, result = _run(accelerator, demo, run_dir, epochs=2, checkpoint_every=1)
    assert result.epochs == 2 and len(result.history) == 2
    assert result.best_top1 >= result.history[0]["top1"] and 0 <= result.last_top1 <= 100
    assert all(h["eval_count"] == 360 for h in result.history)
    ckpts = CheckpointManager(run_dir / "checkpoints", accelerator).complete()
    assert [p.name for p in ckpts] == ["epoch_0001", "epoch_0002"]  # numbered as the log counts epochs
    assert (ckpts[-1] / "model.safetensors").is_file()
    state = json.loads((ckpts[-1] / "trainer_state.json").read_text())
    assert state["epochs_done"] == 2 and len(state["history"]) == 2
    records = read_jsonl(run_dir / "metrics.jsonl")
    assert any("train/loss" in r for r in records) and sum("eval/top1" in r for r in records) == 2


def test_evaluation_counts_every_sample_once(accelerator, demo):
    model = timm.create_model("lrds_resnet8", num_classes=10)
    scores = evaluate_accuracy(accelerator, model, _loaders(demo)[1])
    assert scores["count"] == scores["unique"] == 360
    assert 0 <= scores["top1"] <= scores["top5"] <= 100


def test_resume_is_bit_identical(demo, tmp_path):
    """A run interrupted after one epoch and resumed ends with exactly the weights of an uninterrupted run."""
    AcceleratorState._reset_state(reset_partial_state=True)
    full, _ = _run(Accelerator(cpu=True), demo, tmp_path / "full", epochs=3)
    AcceleratorState._reset_state(reset_partial_state=True)
    _run(Accelerator(cpu=True), demo, tmp_path / "split", epochs=3, stop_after_epochs=1)
    assert [p.name for p in (tmp_path / "split" / "checkpoints").glob("epoch_*")] == ["epoch_0001"]
    AcceleratorState._reset_state(reset_partial_state=True)
    torch.manual_seed(123)  # a different initialisation: everything must come from the checkpoint
    resumed, result = _run(Accelerator(cpu=True), demo, tmp_path / "split", epochs=3, resume=True, seed=0)
    assert result.epochs == 3 and result.epochs_trained == 2
    assert weights_fingerprint(resumed) == weights_fingerprint(full)
    assert result.train_seconds >= result.history[-1]["elapsed_s"] > result.history[0]["elapsed_s"]  # the whole run's
    # run.resume may name a checkpoint: the run continues from exactly there (epoch 3 of 3 again)
    AcceleratorState._reset_state(reset_partial_state=True)
    named = tmp_path / "split" / "checkpoints" / "epoch_0002"
    again, result = _run(Accelerator(cpu=True), demo, tmp_path / "split", epochs=3, resume=named)
    assert result.epochs_trained == 1 and weights_fingerprint(again) == weights_fingerprint(full)
    AcceleratorState._reset_state(reset_partial_state=True)
    with pytest.raises(FileNotFoundError, match="not a complete kd_zoo checkpoint"):
        _run(Accelerator(cpu=True), demo, tmp_path / "split", epochs=3, resume=tmp_path / "nowhere")
    AcceleratorState._reset_state(reset_partial_state=True)


def test_killed_save_keeps_the_last_good_checkpoint(accelerator, demo, tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    _run(accelerator, demo, run_dir, epochs=1)
    manager = CheckpointManager(run_dir / "checkpoints", accelerator)
    good = manager.latest()
    real_save = accelerator.save_state

    def dying_save(path, **kwargs):
        real_save(path, **kwargs)
        raise KeyboardInterrupt("killed during the save")

    monkeypatch.setattr(accelerator, "save_state", dying_save)
    with pytest.raises(KeyboardInterrupt):
        manager.save(1, {"best": {}, "history": []})
    assert manager.latest() == good and [p.name for p in manager.complete()] == [good.name]


def test_nan_loss_stops_before_the_update_and_names_the_step(accelerator, demo, tmp_path):
    class Exploding(Supervised):
        calls = 0

        def forward(self, *args, **kwargs):
            out = super().forward(*args, **kwargs)
            Exploding.calls += 1
            if Exploding.calls == 30:  # second epoch, step 8 (22 steps per epoch)
                out.loss = out.loss * float("nan")
            return out

    model = Exploding(timm.create_model("lrds_resnet8", num_classes=10))
    optimizer = sgd(model, 0.05)
    model, optimizer = accelerator.prepare(model, optimizer)
    train_loader, eval_loader = _loaders(demo)
    with pytest.raises(TrainingDivergedError, match=r"epoch 2, step 7 .*epoch_0001"):
        options = FitOptions(3, step_lr(0.05, []), progress=False)
        fit(accelerator, model, optimizer, train_loader, eval_loader, options, run_dir=tmp_path / "run")
    manager = CheckpointManager(tmp_path / "run" / "checkpoints", accelerator)
    assert manager.latest().name == "epoch_0001"
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_unwritable_output_folder_is_refused(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(PermissionError, match="cannot write to the run folder"):
        check_writable(blocker / "run")


def test_process_count_guard(accelerator, monkeypatch):
    check_num_processes(accelerator, 1)
    with pytest.raises(RuntimeError, match="--multi_gpu"):
        check_num_processes(accelerator, 2)
    monkeypatch.setenv("WORLD_SIZE", "4")
    with pytest.raises(RuntimeError, match="WORLD_SIZE=4"):
        check_num_processes(accelerator, None)


def test_distiller_trains_in_the_loop_with_a_mask(accelerator, demo, tmp_path):
    student = timm.create_model("lrds_resnet8", num_classes=10)
    teacher = freeze(timm.create_model("lrds_resnet14", num_classes=10))
    distiller = Distiller(student, create_method("kd", student, teacher))
    mask = torch.zeros(len(demo[0]), dtype=torch.bool)
    mask[::2] = True
    optimizer = sgd(distiller, 0.05)
    distiller, optimizer = accelerator.prepare(distiller, optimizer)
    train_loader, eval_loader = _loaders(demo)
    options = FitOptions(1, step_lr(0.05, []), progress=False, log_every=5)
    result = fit(
        accelerator,
        distiller,
        optimizer,
        train_loader,
        eval_loader,
        options,
        run_dir=tmp_path / "run",
        teacher=teacher,
        distill_mask=mask,
    )
    assert result.epochs == 1
    records = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    assert any("train/loss_ce_ds" in r and "train/loss_kd" in r for r in records)


def test_config_overrides_and_unknown_keys(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  epochs: 5\nmethod:\n  name: dkd\n  args: {beta: 6}\n")
    cfg = load_config(path, ["train.lr=0.01", "method.args.warmup=5", "data.name=null"])
    assert (cfg.train.epochs, cfg.train.lr, cfg.method.name, cfg.method.args) == (
        5,
        0.01,
        "dkd",
        {"beta": 6, "warmup": 5},
    )
    with pytest.raises(ConfigError, match=r"unknown config key 'train.epoch' \(did you mean 'epochs'\?\).*valid keys"):
        load_config(None, ["train.epoch=3"])
    with pytest.raises(ConfigError, match="must be an integer"):
        load_config(None, ["train.epochs=three"])
    with pytest.raises(ConfigError, match="section.key=value"):
        load_config(None, ["train.epochs"])
    cfg.save(tmp_path / "resolved.yaml")
    assert load_config(tmp_path / "resolved.yaml").to_dict() == cfg.to_dict()
