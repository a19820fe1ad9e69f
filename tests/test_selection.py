"""kd_zoo.selection: the influence math against oracles, the scorers, the selector, score sets and sharding.

The ranking and sharding tests use a real ResNet-8 teacher trained in this module for 3 epochs on the demo digits
(~92 % train accuracy); the 2-process test runs `recipes/score.py` under `accelerate launch` on the CPU.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import datasets
import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from scipy.stats import spearmanr

import kd_zoo  # noqa: F401  (registers the lrds_* models)
from kd_zoo.data import FingerprintMismatchError, TensorBatchLoader, load_split, load_tensor_split
from kd_zoo.hub import export_scores
from kd_zoo.loading import load_model, weights_fingerprint
from kd_zoo.registry import UnknownNameError
from kd_zoo.selection import (
    SCORERS,
    STRATEGIES,
    ScoreSet,
    ScoreSetIndexError,
    SplitInfo,
    TeacherMismatchError,
    classifier_hvp,
    hessian_sum,
    make_scorer,
    mask_by_index,
    mistakes_report,
    num_selected,
    score_batches,
    score_dataset,
    score_dataset_multi,
    score_head_inputs,
    select,
)
from kd_zoo.selection.influence_math import append_bias, ekfac_eigenvalue_sums, kfac_sums, residual

REPO = Path(__file__).resolve().parents[1]
ALL_SCORERS = ["influence", "influence_exact", "influence_val", "loss", "el2n", "grad_norm", "random"]


# -- fixtures ---------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def train():
    return load_tensor_split(None, "train")


@pytest.fixture(scope="module")
def teacher_file(train, tmp_path_factory):
    """A ResNet-8 trained on the demo digits (Adam, 3 epochs, then BatchNorm statistics re-estimated), saved as
    safetensors and loaded back through `load_model`, the way users and the recipe load a teacher."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small convs: one thread is faster on a shared 2-core machine
    try:
        torch.manual_seed(0)
        model = timm.create_model("lrds_resnet8", num_classes=train.num_classes)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
        loader = TensorBatchLoader(train, 64, train=True, seed=0, pad=0)
        for epoch in range(3):
            loader.set_epoch(epoch)
            model.train()
            for batch in loader:
                loss = F.cross_entropy(model(batch["image"]), batch["label"])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
        # A few hundred steps leave the running BatchNorm statistics behind the weights: re-estimate them.
        for module in model.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.reset_running_stats()
                module.momentum = None
        with torch.no_grad():
            for batch in TensorBatchLoader(train, 256, train=False):
                model(batch["image"])
    finally:
        torch.set_num_threads(threads)
    path = tmp_path_factory.mktemp("teacher") / "teacher.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


@pytest.fixture(scope="module")
def teacher(teacher_file):
    return load_model("lrds_resnet8", teacher_file).eval()


@pytest.fixture(scope="module")
def scored(teacher, train):
    """Every scorer from one pass of the trained teacher, in one process."""
    return score_dataset_multi(teacher, train, ALL_SCORERS, batch_size=128, teacher_name="lrds_resnet8", weights="test")


def _random_head(n=60, d=5, c=4, seed=0, shared_probs=False):
    g = torch.Generator().manual_seed(seed)
    features = torch.randn(n, d, generator=g)
    logits = torch.randn(1 if shared_probs else n, c, generator=g).expand(n, c)
    labels = torch.randint(0, c, (n,), generator=g)
    return features, F.log_softmax(logits.double(), dim=1).float(), labels


def _select(score_set, fraction=0.8, strategy="highest"):
    return select(score_set.scores, score_set.sample_idx, fraction, strategy)


# -- the math against oracles -----------------------------------------------------------------------------------
def test_hessian_matches_autograd():
    """H = (1/N) sum F_i kron phi phi^T is the Hessian of the mean cross-entropy in the classifier's [W | b]."""
    features, log_probs, labels = _random_head(n=30, d=3, c=4)
    phi = append_bias(features)
    c, d1 = 4, 4

    def mean_ce(w):  # logits = the fixed log-probs + the classifier perturbation, so softmax = p at w = 0
        return F.cross_entropy(log_probs.double() + phi @ w.view(c, d1).T, labels)

    w0 = torch.zeros(c * d1, dtype=torch.float64)
    reference = torch.autograd.functional.hessian(mean_ce, w0)
    probs = torch.softmax(log_probs.double(), dim=1)
    ours = hessian_sum(phi, probs) / len(labels)
    torch.testing.assert_close(ours, reference, rtol=1e-10, atol=1e-12)
    v = torch.randn(c, d1, dtype=torch.float64)
    torch.testing.assert_close(classifier_hvp(phi, probs, v).reshape(-1), reference @ v.reshape(-1))

    # the gradient of one sample is r kron phi
    def one_ce(w):
        return F.cross_entropy(log_probs[:1].double() + phi[:1] @ w.view(c, d1).T, labels[:1])

    grad = torch.autograd.functional.jacobian(one_ce, w0)
    torch.testing.assert_close(grad, torch.kron(residual(probs[:1], labels[:1])[0], phi[0]))


def test_exact_self_influence_matches_a_dense_solve():
    features, log_probs, labels = _random_head(n=40, d=4, c=3, seed=1)
    damping = 0.05
    scores = score_head_inputs(features, log_probs, labels, scorer=make_scorer("influence_exact", damping=damping))
    phi = append_bias(features)
    probs = log_probs.double().exp()
    h = hessian_sum(phi, probs) / len(labels) + damping * torch.eye(phi.shape[1] * 3, dtype=torch.float64)
    g = (residual(probs, labels)[:, :, None] * phi[:, None, :]).reshape(len(labels), -1)
    reference = (g * torch.linalg.solve(h, g.T).T).sum(1)
    torch.testing.assert_close(scores, reference, rtol=1e-10, atol=0)


def test_ekfac_equals_exact_when_the_kronecker_structure_is_exact():
    """One softmax output for every sample (labels differ): H = F kron A exactly, and EK-FAC is exact."""
    features, log_probs, labels = _random_head(n=200, d=7, c=5, shared_probs=True)
    ekfac = score_head_inputs(features, log_probs, labels, scorer="influence")
    exact = score_head_inputs(features, log_probs, labels, scorer="influence_exact")
    assert float(((ekfac - exact).abs() / exact.abs().max()).max()) < 1e-6
    # ... and only then: with per-sample outputs it is an approximation (the test above can tell them apart).
    features, log_probs, labels = _random_head(n=200, d=7, c=5, shared_probs=False)
    ekfac = score_head_inputs(features, log_probs, labels, scorer="influence")
    exact = score_head_inputs(features, log_probs, labels, scorer="influence_exact")
    assert float(((ekfac - exact).abs() / exact.abs().max()).max()) > 1e-3


def test_ekfac_eigenvalues_are_the_diagonal_of_h_in_the_kronecker_basis():
    features, log_probs, labels = _random_head(n=50, d=4, c=3, seed=2)
    phi, probs = append_bias(features), log_probs.double().exp()
    a, g, trace = kfac_sums(phi, probs)
    q_a, q_g = torch.linalg.eigh(a).eigenvectors, torch.linalg.eigh(g).eigenvectors
    eig = ekfac_eigenvalue_sums(phi, probs, q_a, q_g)
    basis = torch.kron(q_g, q_a)
    reference = torch.diagonal(basis.T @ hessian_sum(phi, probs) @ basis).reshape(eig.shape)
    torch.testing.assert_close(eig, reference)
    torch.testing.assert_close(eig.sum(), trace)  # tr(H), which sets the damping


def test_ekfac_ranks_like_exact_on_a_trained_teacher(scored):
    exact, ekfac = scored["influence_exact"], scored["influence"]
    assert exact.metadata["teacher"]["accuracy"] > 0.8, "the fixture teacher did not train"
    rho = spearmanr(ekfac.scores, exact.scores)[0]
    assert rho >= 0.99, f"Spearman {rho:.4f}"
    agreement = float((_select(ekfac).numpy() == _select(exact).numpy()).mean())
    assert agreement >= 0.97, f"the 80/20 splits agree on {agreement:.3f}"
    # the same damping rule, recorded: 0.1 x tr(H) / (C (d + 1))
    assert ekfac.metadata["settings"]["damping"] == pytest.approx(exact.metadata["settings"]["damping"], rel=1e-9)
    assert ekfac.metadata["settings"]["damping"] == pytest.approx(
        0.1 * ekfac.metadata["settings"]["mean_eigenvalue"], rel=1e-12
    )


def test_damping_rule_and_overrides():
    features, log_probs, labels = _random_head(n=80, d=6, c=4, seed=3)
    phi, probs = append_bias(features), log_probs.double().exp()
    trace = float(torch.diagonal(hessian_sum(phi, probs)).sum()) / 80
    for name in ("influence", "influence_exact"):
        scorer = make_scorer(name)
        score_head_inputs(features, log_probs, labels, scorer=scorer)
        assert scorer.settings()["damping"] == pytest.approx(0.1 * trace / (4 * 7), rel=1e-10)
        scorer = make_scorer(name, damping_ratio=0.01)
        score_head_inputs(features, log_probs, labels, scorer=scorer)
        assert scorer.settings()["damping"] == pytest.approx(0.01 * trace / (4 * 7), rel=1e-10)
        scorer = make_scorer(name, damping=0.5)
        small = score_head_inputs(features, log_probs, labels, scorer=scorer)
        assert scorer.settings()["damping"] == 0.5 and scorer.settings()["damping_rule"] == "absolute"
        large = score_head_inputs(features, log_probs, labels, scorer=make_scorer(name, damping=5.0))
        assert bool((large < small).all())  # more damping, smaller (H + lambda I)^-1
        with pytest.raises(ValueError, match="damping must be > 0"):
            make_scorer(name, damping=0.0)


def test_baseline_formulas_on_a_hand_case():
    probs = torch.tensor([[0.7, 0.2, 0.1], [0.25, 0.25, 0.5]])
    log_probs = probs.log()
    labels = torch.tensor([0, 1])
    features = torch.tensor([[3.0, 0.0], [1.0, 2.0]])
    loss = score_head_inputs(features, log_probs, labels, scorer="loss")
    el2n = score_head_inputs(features, log_probs, labels, scorer="el2n")
    grad = score_head_inputs(features, log_probs, labels, scorer="grad_norm")
    torch.testing.assert_close(loss, torch.tensor([-math.log(0.7), -math.log(0.25)], dtype=torch.float64))
    e0, e1 = math.sqrt(0.3**2 + 0.2**2 + 0.1**2), math.sqrt(0.25**2 + 0.75**2 + 0.5**2)
    torch.testing.assert_close(el2n, torch.tensor([e0, e1], dtype=torch.float64))
    # |g| = |p - y| |[h; 1]|: |[3, 0, 1]| = sqrt(10), |[1, 2, 1]| = sqrt(6)
    torch.testing.assert_close(grad, torch.tensor([e0 * math.sqrt(10), e1 * math.sqrt(6)], dtype=torch.float64))


def test_random_scorer_is_seeded_and_keyed_by_sample_idx():
    features, log_probs, labels = _random_head(n=50)
    idx = torch.arange(100, 150)
    a = score_head_inputs(features, log_probs, labels, idx, scorer=make_scorer("random", seed=3))
    b = score_head_inputs(features, log_probs, labels, idx, scorer=make_scorer("random", seed=3))
    c = score_head_inputs(features, log_probs, labels, idx, scorer=make_scorer("random", seed=4))
    assert torch.equal(a, b) and not torch.equal(a, c)
    perm = torch.randperm(50)
    shuffled = score_head_inputs(
        features[perm], log_probs[perm], labels[perm], idx[perm], make_scorer("random", seed=3)
    )
    assert torch.equal(shuffled, a[perm])  # a sample's value follows its index, not its position


def test_influence_val_points_at_the_held_out_slice():
    features, log_probs, labels = _random_head(n=100, d=4, c=3, seed=5)
    scorer = make_scorer("influence_val", val_fraction=0.2, seed=1)
    scores = score_head_inputs(features, log_probs, labels, scorer=scorer)
    assert scorer.settings()["val_size"] == 20 and torch.isfinite(scores).all()
    # s_i = g_val^T M^-1 g_i with M the EK-FAC Hessian + damping, written out densely
    phi, probs = append_bias(features), log_probs.double().exp()
    g = (residual(probs, labels)[:, :, None] * phi[:, None, :]).reshape(100, -1)
    members = torch.isin(torch.arange(100), scorer._val_idx)
    basis = torch.kron(scorer.q_g, scorer.q_a)
    m_inv = basis @ torch.diag(scorer.inv_eigenvalues.reshape(-1)) @ basis.T
    torch.testing.assert_close(scores, g @ m_inv @ g[members].mean(0))
    # so the slice's own members help their own loss on average: their mean is g_val^T M^-1 g_val > 0
    assert float(scores[members].mean()) > 0


def test_exact_refuses_a_large_head_and_unknown_scorers():
    features, log_probs, labels = _random_head(n=10, d=30, c=5)
    with pytest.raises(ValueError, match="use the scorer 'influence'|Use the scorer 'influence'"):
        score_head_inputs(features, log_probs, labels, scorer=make_scorer("influence_exact", max_params=100))
    with pytest.raises(UnknownNameError, match="influence"):
        make_scorer("influense")
    assert set(ALL_SCORERS) | {"influence_full"} == set(SCORERS.names())  # influence_full: test_influence_full.py


# -- the teacher pass -------------------------------------------------------------------------------------------
def test_spilling_to_disk_gives_the_same_scores(teacher, train, scored, tmp_path):
    spilled = score_dataset_multi(
        teacher, train, ["influence", "influence_exact"], batch_size=128, memory_limit_bytes=0, spill_dir=tmp_path
    )
    assert spilled["influence"].metadata["head_inputs"]["spilled_to_disk"]
    assert not scored["influence"].metadata["head_inputs"]["spilled_to_disk"]
    for name in ("influence", "influence_exact"):
        np.testing.assert_allclose(spilled[name].scores, scored[name].scores, rtol=1e-9, atol=0)
    assert list(tmp_path.iterdir()) == []  # the chunks are deleted afterwards


def test_teacher_checks(train):
    headless = timm.create_model("lrds_resnet8", num_classes=0)
    with pytest.raises(TypeError, match="not an nn.Linear"):
        score_dataset(headless, train)
    with pytest.raises(ValueError, match="100 outputs but the data has 10 classes"):
        score_dataset(timm.create_model("lrds_resnet8", num_classes=100), train)


def test_a_padded_loader_is_refused(teacher, train):
    loader = list(TensorBatchLoader(train, 256, train=False))
    padded = loader + loader[:1]  # what a prepared DataLoader does to the last batch: repeat samples
    with pytest.raises(RuntimeError, match="256 indices twice"):
        score_batches(teacher, padded, SplitInfo.of(train), "loss")


def test_teacher_mistakes_under_the_default_selection(scored):
    meta = scored["influence"].metadata
    report = meta["teacher_mistakes"]
    assert report == mistakes_report(
        scored["influence"].scores, scored["influence"].sample_idx, scored["influence"].teacher_correct
    )
    assert report["count"] == int((~scored["influence"].teacher_correct).sum()) > 0
    assert sum(report["by_score_decile"]) == report["count"]
    # The trained teacher's mistakes are its hardest samples: the default (highest) keeps them all with the teacher
    # (measured: 114 of 114, all in the top two deciles), 'lowest' sends them all to CE only.
    assert report["in_distilled"]["highest"] == report["count"]
    assert report["in_distilled"]["lowest"] == 0


# -- the selector -----------------------------------------------------------------------------------------------
def test_selector_count_rounds_halves_up():
    assert num_selected(0.8, 1437) == 1150  # 1149.6
    assert num_selected(0.5, 5) == 3  # 2.5 -> 3 (Python's round would give 2)
    assert num_selected(0.5, 7) == 4  # 3.5 -> 4
    assert num_selected(0.0, 9) == 0 and num_selected(1.0, 9) == 9
    scores = torch.rand(5)
    assert int(select(scores, torch.arange(5), 0.5).sum()) == 3
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        select(scores, torch.arange(5), 1.5)


def test_selector_direction_and_ties():
    scores = torch.tensor([0.1, 0.9, 0.5, 0.9, 0.3, 0.5])
    idx = torch.tensor([10, 11, 12, 13, 14, 15])
    assert select(scores, idx, 0.5, "highest").tolist() == [False, True, True, True, False, False]
    assert select(scores, idx, 0.5, "lowest").tolist() == [True, False, True, False, True, False]
    # ties: the smaller sample_idx first, whatever the row order
    assert select(scores, idx, 1 / 6, "highest").tolist() == [False, True, False, False, False, False]
    reversed_idx = torch.tensor([15, 14, 13, 12, 11, 10])
    assert select(scores, reversed_idx, 1 / 6, "highest").tolist() == [False, False, False, True, False, False]
    # lowest 3: 0.1, 0.3, then of the two 0.5s the one with sample_idx 10 (last row), not 13
    assert select(scores, reversed_idx, 0.5, "lowest").tolist() == [True, False, False, False, True, True]


def test_selector_is_independent_of_row_order_and_random_is_seeded():
    g = torch.Generator().manual_seed(0)
    scores = torch.randint(0, 5, (200,), generator=g).double()  # many ties
    idx = torch.randperm(200, generator=g) + 1000
    perm = torch.randperm(200, generator=g)
    for strategy in STRATEGIES:
        mask = select(scores, idx, 0.8, strategy, seed=7)
        assert int(mask.sum()) == 160
        assert torch.equal(select(scores[perm], idx[perm], 0.8, strategy, seed=7), mask[perm])
    a, b = select(scores, idx, 0.5, "random", seed=1), select(scores, idx, 0.5, "random", seed=2)
    assert not torch.equal(a, b)
    with pytest.raises(UnknownNameError):
        select(scores, idx, 0.5, "middle")
    with pytest.raises(ValueError, match="NaN"):
        select(torch.tensor([0.1, float("nan")]), torch.tensor([0, 1]))


def test_mask_by_index_matches_the_engine_convention():
    mask = torch.tensor([True, False, True])
    idx = torch.tensor([4, 0, 2])
    dense = mask_by_index(mask, idx)
    assert dense.tolist() == [False, False, True, False, True]
    assert torch.equal(dense[idx], mask)  # what kd_zoo.engine.fit does with batch["sample_idx"]


# -- score sets -------------------------------------------------------------------------------------------------
def test_score_set_round_trip(scored, tmp_path):
    original = scored["influence"]
    folder = export_scores(original, tmp_path / "scores")
    assert (folder / "README.md").is_file() and (folder / "data" / "train-00000-of-00001.parquet").is_file()
    ds = datasets.load_dataset(str(folder), split="train")
    assert ds.column_names == ["sample_idx", "score", "teacher_pred", "teacher_correct", "label"]
    np.testing.assert_array_equal(np.asarray(ds["score"]), original.scores)
    np.testing.assert_array_equal(np.asarray(ds["sample_idx"]), original.sample_idx)
    for source in (folder, folder / "data" / "train-00000-of-00001.parquet"):
        loaded = ScoreSet.load(source)
        np.testing.assert_array_equal(loaded.scores, original.scores)
        assert loaded.metadata == json.loads(json.dumps(original.metadata))
    original.dataset.save_to_disk(str(tmp_path / "on_disk"))
    assert ScoreSet.load(tmp_path / "on_disk").metadata["settings"] == original.metadata["settings"]
    card = (folder / "README.md").read_text()
    assert original.metadata["teacher"]["weights_fingerprint"] in card and "configs:" not in card
    with pytest.raises(FileExistsError, match="overwrite=True"):
        export_scores(original, folder)
    export_scores(original, folder, overwrite=True)


def test_join_aligns_with_the_split(scored, train, teacher):
    # rows in another order than the split's
    shuffled = ScoreSet(scored["influence"].dataset.shuffle(seed=0), scored["influence"].metadata)
    aligned = shuffled.join(train, teacher_fingerprint=teacher)
    assert torch.equal(aligned.sample_idx, train.sample_idx)
    np.testing.assert_array_equal(aligned.scores.numpy(), scored["influence"].scores)
    assert int(aligned.distill_mask().sum()) == 1150
    assert torch.equal(aligned.distill_mask()[train.sample_idx], select(aligned.scores, aligned.sample_idx))
    # a datasets.Dataset split in the kd_zoo schema works too (its content hash is computed)
    from_dataset = scored["influence"].join(load_split(None, "train"))
    assert torch.equal(from_dataset.scores, aligned.scores)


def _tampered(score_set, rows=None, **column_changes):
    ds = score_set.dataset
    if rows is not None:
        ds = ds.select(rows)
    columns = {c: np.asarray(ds[c]) for c in ds.column_names}
    for name, (position, value) in column_changes.items():
        columns[name][position] = value
    return ScoreSet.from_arrays(*(columns[c] for c in ds.column_names[:4]), columns["label"], score_set.metadata)


def test_join_refuses_missing_duplicate_and_foreign_indices(scored, train):
    base = scored["influence"]
    n = len(base)
    with pytest.raises(ScoreSetIndexError, match=r"1 sample_idx of the split have no score, e.g. \[5\]") as e:
        _tampered(base, rows=[i for i in range(n) if i != 5]).join(train)
    assert "recipes/score.py" in str(e.value)
    with pytest.raises(ScoreSetIndexError, match=r"1 sample_idx appear more than once .* e.g. \[7\]"):
        _tampered(base, rows=[*range(n), 7]).join(train)
    with pytest.raises(ScoreSetIndexError, match=r"1 sample_idx of the score set are not in the split, e.g. \[99999\]"):
        _tampered(base, sample_idx=(3, 99999)).join(train)
    # indices that point at other rows (swapped between two samples of different classes)
    labels = base.column("label")
    i, j = 0, int(np.flatnonzero(labels != labels[0])[0])
    idx = base.sample_idx
    swapped = _tampered(base, sample_idx=([i, j], [idx[j], idx[i]]))
    with pytest.raises(ScoreSetIndexError, match="another label"):
        swapped.join(train)


def test_join_refuses_other_data_or_another_teacher(scored, train, teacher):
    base = scored["influence"]
    meta = json.loads(json.dumps(base.metadata))
    meta["data_fingerprint"]["content_sha256"] = "0" * 64
    with pytest.raises(FingerprintMismatchError, match=r"(?s)content_sha256: stored '0000.*recipes/score.py"):
        ScoreSet(base.dataset, meta).join(train)
    other = timm.create_model("lrds_resnet8", num_classes=10)
    with pytest.raises(TeacherMismatchError) as e:
        base.join(train, teacher_fingerprint=other)
    message = str(e.value)
    assert weights_fingerprint(other) in message and base.metadata["teacher"]["weights_fingerprint"] in message
    assert "recipes/score.py" in message
    with pytest.raises(TeacherMismatchError):
        base.join(train, teacher_fingerprint="f" * 64)
    base.join(train, teacher_fingerprint=weights_fingerprint(teacher))  # the right one passes


# -- sharding: a real 2-process CPU run -------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_match_one(scored, teacher_file, tmp_path):
    launcher = shutil.which("accelerate", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    if launcher is None:
        pytest.skip("the `accelerate` command line is not installed, so a 2-process launch cannot be tested")
    env = dict(os.environ, ACCELERATE_USE_CPU="1", OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    out = tmp_path / "scores"
    command = [
        launcher, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
        "--dynamo_backend", "no", "--main_process_port", str(_free_port()),
        str(REPO / "recipes" / "score.py"), "teacher.model=lrds_resnet8", f"teacher.weights={teacher_file}",
        "scoring.scorers=[influence,influence_exact,random]", "data.eval_batch_size=128", f"run.output_dir={out}",
    ]  # fmt: skip
    result = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "(2 process(es))" in result.stdout
    for name in ("influence", "influence_exact", "random"):
        two, one = ScoreSet.load(out / name), scored[name]
        assert two.metadata["num_processes"] == 2 and one.metadata["num_processes"] == 1
        assert two.metadata["teacher"]["weights_fingerprint"] == one.metadata["teacher"]["weights_fingerprint"]
        np.testing.assert_array_equal(two.sample_idx, one.sample_idx)
        np.testing.assert_allclose(two.scores, one.scores, rtol=1e-6, atol=1e-9 * float(np.abs(one.scores).max()))
        for strategy in ("highest", "lowest", "random"):
            assert torch.equal(_select(two, 0.8, strategy), _select(one, 0.8, strategy)), (name, strategy)


def test_two_score_set_folders_of_the_same_name_load_their_own_rows(tmp_path):
    """`datasets` caches a local folder by name when its card pins `configs:`; ours must not, or runs mix up."""
    rows = []
    for run, value in (("a", 1.0), ("b", 2.0)):
        meta = {
            "format": "kd_zoo.ScoreSet/1",
            "scorer": "loss",
            "data_fingerprint": {"name": "demo"},
            "teacher": {"weights_fingerprint": "0" * 64},
        }
        n = 5
        scores = ScoreSet.from_arrays(np.arange(n), np.full(n, value), np.zeros(n), np.ones(n, bool), np.zeros(n), meta)
        export_scores(scores, tmp_path / run / "scores")
        rows.append(datasets.load_dataset(str(tmp_path / run / "scores"), split="train")["score"])
    assert rows[0] == [1.0] * 5 and rows[1] == [2.0] * 5


# -- influence_full on the trained teacher (kronfluence; slow: about 35 inference passes each) --------------------
@pytest.mark.slow
def test_influence_full_ranks_like_influence_on_the_trained_teacher(teacher, train, scored):
    pytest.importorskip("kronfluence", reason="the optional extra: pip install 'kd-zoo[influence]'")
    full = score_dataset(teacher, train, "influence_full", batch_size=256)
    fingerprint = full.metadata["teacher"]["weights_fingerprint"]
    assert fingerprint == scored["influence"].metadata["teacher"]["weights_fingerprint"]
    assert spearmanr(full.scores, scored["influence"].scores)[0] >= 0.95
    k = round(0.2 * len(train))
    top = set(np.argsort(-full.scores)[:k]) & set(np.argsort(-scored["influence"].scores)[:k])
    assert len(top) >= 0.8 * k


@pytest.mark.slow
def test_influence_full_two_processes_match_one(teacher_file, teacher, train, tmp_path):
    pytest.importorskip("kronfluence", reason="the optional extra: pip install 'kd-zoo[influence]'")
    launcher = shutil.which("accelerate", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    if launcher is None:
        pytest.skip("the `accelerate` command line is not installed, so a 2-process launch cannot be tested")
    env = dict(os.environ, ACCELERATE_USE_CPU="1", OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    command = [
        launcher, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
        "--dynamo_backend", "no", "--main_process_port", str(_free_port()), str(REPO / "recipes" / "score.py"),
        "teacher.model=lrds_resnet8", f"teacher.weights={teacher_file}", "scoring.scorers=[influence_full]",
        "data.eval_batch_size=128", f"run.output_dir={tmp_path / 'scores'}",
    ]  # fmt: skip
    result = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=1800)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    two = ScoreSet.load(tmp_path / "scores")
    one = score_dataset(teacher, train, "influence_full", batch_size=64)
    assert two.metadata["num_processes"] == 2 and two.metadata["scorer"] == "influence_full"
    np.testing.assert_array_equal(two.sample_idx, one.sample_idx)
    np.testing.assert_allclose(two.scores, one.scores, rtol=1e-4)
