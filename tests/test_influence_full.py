"""`influence_full` (kronfluence EK-FAC over every Linear and Conv2d): against the classifier-layer closed form, through
the score-set format, sharded like the other scorers, the teacher untouched, and clear errors.

Tiny models on the embedded digits keep it fast: a model whose only layer is its classifier (where `influence_full`
must rank like the closed-form `influence`), and a two-layer CNN for the sharding and format checks. The run on real
teachers is benchmarks/influence_full.py.
"""

from __future__ import annotations

import sys
import threading

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.stats import spearmanr
from torch import nn

from kd_zoo.data import TensorBatchLoader, TensorImageSet, load_tensor_split
from kd_zoo.hub import export_scores
from kd_zoo.loading import weights_fingerprint
from kd_zoo.selection import (
    SCORERS,
    ScoreSet,
    ScoringPass,
    SplitInfo,
    TeacherInfo,
    make_scorer,
    score_batches,
    score_dataset_multi,
)

pytest.importorskip("kronfluence", reason="the optional extra: pip install 'kd-zoo[influence]'")

MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


class PooledLinear(nn.Module):
    """A timm-style model whose only layer is its classifier, on 4x4 average-pooled pixels."""

    def __init__(self, num_classes: int):
        super().__init__()
        self.fc = nn.Linear(48, num_classes)
        self.pretrained_cfg = {"mean": MEAN, "std": STD}

    def forward_features(self, x):
        return F.adaptive_avg_pool2d(x, 4).flatten(1)

    def forward_head(self, x, pre_logits=False):
        return x if pre_logits else self.fc(x)

    def get_classifier(self):
        return self.fc

    def forward(self, x):
        return self.forward_head(self.forward_features(x))


class TinyCNN(PooledLinear):
    """A strided convolution on 2x2-pooled pixels, then the classifier: two modules for kronfluence."""

    def __init__(self, num_classes: int, conv: type[nn.Conv2d] = nn.Conv2d):
        super().__init__(num_classes)
        self.conv = conv(3, 12, 3, stride=2, padding=1)
        self.fc = nn.Linear(48, num_classes)

    def forward_features(self, x):
        return F.adaptive_avg_pool2d(F.relu(self.conv(F.avg_pool2d(x, 2))), 2).flatten(1)


def _trained(model: nn.Module, data: TensorImageSet, epochs: int) -> nn.Module:
    torch.manual_seed(0)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-2)
    for _ in range(epochs):
        for batch in TensorBatchLoader(data, 128, train=False, mean=MEAN, std=STD):
            loss = F.cross_entropy(model(batch["image"]), batch["label"])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return model.eval()


@pytest.fixture(scope="module")
def train():
    return load_tensor_split(None, "train")


@pytest.fixture(scope="module")
def small(train):
    n = 256
    return TensorImageSet(
        train.images[:n], train.labels[:n], train.sample_idx[:n], train.class_names, {**train.fingerprint, "rows": n}
    )


@pytest.fixture(scope="module")
def cnn(small):
    return _trained(TinyCNN(small.num_classes), small, 6)


def test_on_a_classifier_only_model_it_ranks_like_the_closed_form(train):
    """With the classifier as the only layer, kronfluence's EK-FAC (sampled Fisher) and the closed-form EK-FAC
    (expected Fisher) approximate the same Hessian: the same ranking, the same damping rule."""
    model = _trained(PooledLinear(train.num_classes), train, 20)
    scored = score_dataset_multi(model, train, ["influence", "influence_exact", "influence_full"], batch_size=256)
    full, closed, exact = (scored[n].scores for n in ("influence_full", "influence", "influence_exact"))
    assert spearmanr(full, closed)[0] >= 0.998
    assert spearmanr(full, exact)[0] >= 0.995
    settings = scored["influence_full"].metadata["settings"]
    assert settings["modules"] == 1 and settings["parameters"] == 49 * train.num_classes
    assert settings["damping_min"] == settings["damping_max"]
    assert settings["damping_min"] == pytest.approx(scored["influence"].metadata["settings"]["damping"], rel=0.15)


@pytest.fixture(scope="module")
def scored(cnn, small):
    """`loss` and `influence_full` (seed 3) from one pass, and the teacher's fingerprint before it."""
    before = weights_fingerprint(cnn)
    return before, score_dataset_multi(cnn, small, ["loss", make_scorer("influence_full", seed=3)], batch_size=64)


def test_scores_are_a_score_set_with_the_fingerprints_and_settings(scored, cnn, small, tmp_path):
    _, results = scored
    full = results["influence_full"]
    assert isinstance(full, ScoreSet) and np.array_equal(full.sample_idx, small.sample_idx.numpy())
    assert np.isfinite(full.scores).all() and (full.scores > 0).all()
    meta, loss_meta = full.metadata, results["loss"].metadata
    assert meta["scorer"] == "influence_full" and meta["teacher"] == loss_meta["teacher"]
    assert meta["data_fingerprint"] == loss_meta["data_fingerprint"]
    assert meta["settings"]["modules"] == 2 and meta["settings"]["kronfluence_version"]
    assert meta["settings"]["fisher"].startswith("true") and meta["settings"]["seed"] == 3
    assert meta["seconds"]["teacher_pass"] > 0
    folder = export_scores(full, tmp_path / "scores")
    loaded = ScoreSet.load(folder)
    np.testing.assert_array_equal(loaded.scores, full.scores)
    mask = loaded.join(small, cnn).distill_mask(0.8)
    assert int(mask.sum()) == round(0.8 * len(small))
    assert spearmanr(full.scores, results["loss"].scores)[0] > 0.5  # harder samples score higher, as `influence`


def test_the_teacher_is_left_as_it_was(scored, cnn):
    before, _ = scored
    assert weights_fingerprint(cnn) == before
    assert [type(m) for m in cnn.modules()] == [TinyCNN, nn.Linear, nn.Conv2d]  # no kronfluence wrapper left
    assert all(p.requires_grad for p in cnn.parameters()) and not cnn.training


def test_the_draws_are_seeded_by_sample_not_by_batch(scored, cnn, small):
    _, results = scored
    again = score_dataset_multi(cnn, small, [make_scorer("influence_full", seed=3)], batch_size=40)
    np.testing.assert_allclose(again["influence_full"].scores, results["influence_full"].scores, rtol=1e-4)
    other = score_dataset_multi(cnn, small, [make_scorer("influence_full", seed=4, damping=1e-3)], batch_size=64)
    settings = other["influence_full"].metadata["settings"]
    assert settings["damping_min"] == settings["damping_max"] == 1e-3 and settings["damping_rule"] == "absolute"
    assert not np.allclose(other["influence_full"].scores, results["influence_full"].scores, rtol=1e-2)


class _Hub:
    """The collectives of N processes, played by N threads (a barrier around each exchange)."""

    def __init__(self, n: int):
        self.n, self.slots, self.barrier = n, [None] * n, threading.Barrier(n, timeout=300)

    def exchange(self, rank, value, reduce):
        self.slots[rank] = value
        self.barrier.wait()
        out = reduce(list(self.slots))
        self.barrier.wait()
        return out


class _ThreadComm:
    def __init__(self, hub: _Hub, rank: int):
        self.hub, self.accelerator, self.device = hub, None, torch.device("cpu")
        self.num_processes, self.process_index = hub.n, rank

    @property
    def is_main(self) -> bool:
        return self.process_index == 0

    def sum(self, tensor):
        return self.hub.exchange(self.process_index, tensor, lambda xs: sum(x.clone() for x in xs))

    def broadcast(self, tensor):
        return self.hub.exchange(self.process_index, tensor, lambda xs: xs[0].clone())

    def gather_object(self, obj):
        return self.hub.exchange(self.process_index, obj, list)


def test_two_processes_give_the_scores_of_one(cnn, small):
    """Shards summed in float64, eigenbases from the main process: the scores do not depend on the sharding."""

    def loader(rank: int, processes: int):
        return TensorBatchLoader(
            small, 48, train=False, mean=MEAN, std=STD, process_index=rank, num_processes=processes
        )

    one = score_batches(cnn, loader(0, 1), SplitInfo.of(small), ["influence_full", "influence"])
    hub, results, errors = _Hub(2), [None, None], []

    def run(rank: int) -> None:
        try:
            comm = _ThreadComm(hub, rank)
            results[rank] = score_batches(cnn, loader(rank, 2), SplitInfo.of(small), ["influence_full"], comm=comm)
        except BaseException as err:  # noqa: BLE001  (re-raised below, in the test's thread)
            errors.append(err)
            hub.barrier.abort()

    threads = [threading.Thread(target=run, args=(rank,)) for rank in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    for result in results:
        two = result["influence_full"]
        assert two.metadata["num_processes"] == 2
        np.testing.assert_array_equal(two.sample_idx, one["influence_full"].sample_idx)
        np.testing.assert_allclose(two.scores, one["influence_full"].scores, rtol=1e-4)


def test_missing_kronfluence_says_how_to_install_it(monkeypatch):
    for name in [n for n in sys.modules if n == "kronfluence" or n.startswith("kronfluence.")]:
        monkeypatch.setitem(sys.modules, name, None)  # `import kronfluence...` now fails, as when not installed
    assert "influence_full" in SCORERS.names()  # still listed
    with pytest.raises(ImportError, match=r'needs the kronfluence library.*pip install "kd-zoo\[influence\]"'):
        make_scorer("influence_full")
    monkeypatch.undo()
    assert make_scorer("influence_full").name == "influence_full"  # installed: the same call works


def test_bad_damping_is_refused():
    with pytest.raises(ValueError, match="damping must be > 0"):
        make_scorer("influence_full", damping=0.0)
    with pytest.raises(ValueError, match="damping_ratio must be > 0"):
        make_scorer("influence_full", damping_ratio=-1)
    assert make_scorer("influence_full", damping=1e-3).damping == 1e-3  # a positive one passes (used above)


def test_a_one_shot_iterator_of_batches_is_refused(cnn, small):
    batches = iter(TensorBatchLoader(small, 64, train=False, mean=MEAN, std=STD))
    with pytest.raises(TypeError, match="can be iterated again"):
        score_batches(cnn, batches, SplitInfo.of(small), ["influence_full"])
    ok = score_batches(cnn, iter(TensorBatchLoader(small, 64, train=False, mean=MEAN, std=STD)), SplitInfo.of(small))
    assert len(ok["influence"].scores) == len(small)  # the other scorers still take a one-shot iterator


def test_a_scoring_pass_without_the_model_is_refused(cnn, small):
    def fed_pass() -> ScoringPass:
        scoring = ScoringPass(["influence_full", "loss"], SplitInfo.of(small), TeacherInfo.of(cnn))
        with torch.no_grad():
            for batch in loader:
                features = cnn.forward_features(batch["image"])
                scoring.observe(features, cnn.fc(features), batch["label"], batch["sample_idx"])
        return scoring

    loader = TensorBatchLoader(small, 64, train=False, mean=MEAN, std=STD)
    with pytest.raises(RuntimeError, match=r"need the teacher and the loader.*fit_model_scorers"):
        fed_pass().finish()
    scoring = fed_pass()
    scoring.fit_model_scorers(cnn, loader)
    assert set(scoring.finish()) == {"influence_full", "loss"}


def test_layers_kronfluence_cannot_track_are_named(small):
    class StdConv(nn.Conv2d):
        pass

    model = _trained(TinyCNN(small.num_classes, conv=StdConv), small, 1)
    with pytest.raises(TypeError, match=r"subclasses of them \(\['StdConv'\]\).*'influence'"):
        score_dataset_multi(model, small, ["influence_full"], batch_size=64)
