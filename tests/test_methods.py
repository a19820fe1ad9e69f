"""Logit-based methods: golden values from direct formulas, schedules, learnable parts."""

import math

import pytest
import timm
import torch
import torch.nn.functional as F

import kd_zoo  # noqa: F401
from kd_zoo.methods import METHODS, ModelOutputs, StepContext, create_method
from kd_zoo.methods.ctkd import reversal_strength
from kd_zoo.methods.dkd import dkd_loss
from kd_zoo.methods.dtd_la import dynamic_temperature, label_adjustment
from kd_zoo.methods.kd import kd_loss, kd_mse_loss


@pytest.fixture(scope="module")
def pair():
    return timm.create_model("lrds_resnet8", num_classes=10), timm.create_model("lrds_resnet14", num_classes=10)


def test_kd_loss_is_the_textbook_t2_batchmean_kl():
    s, t = torch.randn(5, 10, dtype=torch.float64), torch.randn(5, 10, dtype=torch.float64)
    want = F.kl_div(F.log_softmax(s / 4, 1), F.softmax(t / 4, 1), reduction="batchmean") * 16
    torch.testing.assert_close(kd_loss(s, t, 4.0), want)
    # A hand-checkable case: two classes, T = 1.
    p_t, p_s = torch.tensor([0.75, 0.25]), torch.tensor([0.5, 0.5])
    manual = (p_t * (p_t / p_s).log()).sum()
    torch.testing.assert_close(kd_loss(p_s.log()[None], p_t.log()[None], 1.0), manual)


def test_kd_loss_per_sample_temperature():
    s, t = torch.randn(3, 6, dtype=torch.float64), torch.randn(3, 6, dtype=torch.float64)
    temps = torch.tensor([2.0, 4.0, 8.0], dtype=torch.float64)
    manual = torch.stack([kd_loss(s[i : i + 1], t[i : i + 1], float(temps[i])) for i in range(3)]).mean()
    torch.testing.assert_close(kd_loss(s, t, temps), manual)


def test_kd_method_terms(pair):
    method = create_method("kd", *pair)
    s, t, y = torch.randn(4, 10), torch.randn(4, 10), torch.randint(0, 10, (4,))
    terms = method(ModelOutputs(s), ModelOutputs(t), y, StepContext())
    torch.testing.assert_close(terms["loss_ce"], 0.1 * F.cross_entropy(s, y))
    torch.testing.assert_close(terms["loss_kd"], 0.9 * kd_loss(s, t, 4.0))


def _dkd_reference(s, t, y, alpha, beta, temperature):
    """DKD written out directly from the paper's definitions (masking the target logit by -1000)."""
    gt = F.one_hot(y, s.shape[1]).bool()
    p_s, p_t = F.softmax(s / temperature, 1), F.softmax(t / temperature, 1)
    b_s = torch.stack([p_s[gt], p_s.masked_fill(gt, 0).sum(1)], 1)
    b_t = torch.stack([p_t[gt], p_t.masked_fill(gt, 0).sum(1)], 1)
    tckd = (b_t * (b_t.log() - b_s.log())).sum() / s.shape[0] * temperature**2
    n_s = F.log_softmax(s / temperature - 1000.0 * gt, 1)
    n_t = F.softmax(t / temperature - 1000.0 * gt, 1)
    nckd = (n_t * (n_t.clamp_min(1e-300).log() - n_s)).sum() / s.shape[0] * temperature**2
    return alpha * tckd + beta * nckd


def test_dkd_golden_value():
    s, t = torch.randn(6, 5, dtype=torch.float64), torch.randn(6, 5, dtype=torch.float64)
    y = torch.randint(0, 5, (6,))
    torch.testing.assert_close(dkd_loss(s, t, y, 1.0, 8.0, 4.0), _dkd_reference(s, t, y, 1.0, 8.0, 4.0))


def test_dkd_is_stable_for_a_confident_teacher():
    s = torch.zeros(1, 3, requires_grad=True)
    t = torch.tensor([[200.0, 0.0, 0.0]])
    loss = dkd_loss(s, t, torch.tensor([0]), temperature=1.0)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(s.grad).all()


def test_dkd_warmup_follows_the_epoch(pair):
    method = create_method("dkd", *pair, warmup=20)
    s, t, y = torch.randn(4, 10), torch.randn(4, 10), torch.randint(0, 10, (4,))
    full = dkd_loss(s, t, y, 1.0, 8.0, 4.0)
    for epoch, ramp in ((0, 1 / 20), (9, 10 / 20), (19, 1.0), (100, 1.0)):
        terms = method(ModelOutputs(s), ModelOutputs(t), y, StepContext(epoch=epoch, num_epochs=240))
        torch.testing.assert_close(terms["loss_dkd"], ramp * full)


def test_ctkd_schedule_and_temperature(pair):
    assert reversal_strength(0, 10) == pytest.approx((1 - math.cos(math.pi / 10)) / 2)
    assert reversal_strength(9, 10) == pytest.approx(1.0) and reversal_strength(50, 10) == 1.0
    method = create_method("ctkd", *pair)
    assert method.diagnostics()["ctkd_temperature"] == pytest.approx(1 + 20 * torch.sigmoid(torch.tensor(1.0)).item())


def test_ctkd_temperature_ascends_the_kd_loss(pair):
    """theta trains with the student's optimiser, but its gradient is reversed: SGD moves T to raise L_kd."""
    method = create_method("ctkd", *pair)
    s, t, y = torch.randn(8, 10), 3 * torch.randn(8, 10), torch.randint(0, 10, (8,))
    ctx = StepContext(epoch=15, num_epochs=240)
    method(ModelOutputs(s), ModelOutputs(t), y, ctx)["loss_kd"].backward()
    reversed_grad = method.theta.grad.clone()
    theta = method.theta.detach().clone().requires_grad_(True)
    plain = 0.9 * kd_loss(s, t, (1 + 20 * torch.sigmoid(theta)).squeeze(0))
    plain.backward()
    torch.testing.assert_close(reversed_grad, -theta.grad)  # full reversal after the curriculum
    with torch.no_grad():
        method.theta -= 0.5 * method.theta.grad  # one SGD step
    after = 0.9 * kd_loss(s, t, method.temperature().squeeze(0))
    assert after > plain


def test_label_adjustment_swaps_top_and_true_class():
    t = torch.tensor([[1.0, 5.0, 2.0], [4.0, 0.0, 1.0]])
    adjusted = label_adjustment(t, torch.tensor([2, 0]))
    torch.testing.assert_close(adjusted, torch.tensor([[1.0, 2.0, 5.0], [4.0, 0.0, 1.0]]))


def test_dynamic_temperature_formula():
    s = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    t = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]])
    w = torch.tensor([0.0, 1.0, 1 - 1 / math.sqrt(2)])  # 1 - cos(s, t), gamma = 1
    want = 4.0 + (w.mean() - w) * 2.0
    torch.testing.assert_close(dynamic_temperature(s, t, base=4.0, beta=2.0, gamma=1.0), want)
    assert dynamic_temperature(s, t, base=4.0, beta=2.0).mean().item() == pytest.approx(4.0)
    cwsm = dynamic_temperature(s, t, base=4.0, beta=0.5, weight="cwsm")
    w = 1 / s.softmax(1).amax(1)
    torch.testing.assert_close(cwsm, 4.0 + (w.mean() - w) * 0.5)
    assert dynamic_temperature(s, t, base=1.0, beta=100.0, min_temperature=1.0).min() >= 1.0


def test_dtd_la_terms(pair):
    method = create_method("dtd_la", *pair)
    s, t, y = torch.randn(4, 10), torch.randn(4, 10), torch.randint(0, 10, (4,))
    terms = method(ModelOutputs(s), ModelOutputs(t), y, StepContext())
    adjusted = label_adjustment(t, y)
    temps = dynamic_temperature(s, adjusted)
    torch.testing.assert_close(terms["loss_kd"], 0.9 * kd_loss(s, adjusted, temps))


def test_unknown_hyperparameter_names_the_valid_ones(pair):
    with pytest.raises(TypeError, match="temperature"):
        create_method("kd", *pair, temprature=4)


def test_unknown_method_lists_close_matches(pair):
    with pytest.raises(LookupError, match="'dkd'"):
        create_method("dkdd", *pair)


def test_class_count_mismatch_is_refused():
    student = timm.create_model("lrds_resnet8", num_classes=10)
    teacher = timm.create_model("lrds_resnet8", num_classes=100)
    for name in METHODS.names():
        with pytest.raises(ValueError, match="student has 10, teacher has 100"):
            create_method(name, student, teacher)


def test_kd_mse_loss_golden_value():
    """Kim et al. (arXiv 2105.08919), as their code's nn.MSELoss(): the mean over samples and classes."""
    s = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    t = torch.tensor([[0.0, 2.0, 5.0], [1.0, -1.0, 2.0]])
    # squared differences: [1, 0, 4] and [1, 1, 4] -> 11 / 6
    assert kd_mse_loss(s, t).item() == pytest.approx(11 / 6)
    torch.testing.assert_close(kd_mse_loss(s, t), F.mse_loss(s, t))
    assert kd_mse_loss(s[:0], t[:0]).item() == 0.0


def test_kd_method_with_the_mse_loss(pair):
    method = create_method("kd", *pair, loss="mse")
    s, t, y = torch.randn(4, 10), torch.randn(4, 10), torch.randint(0, 10, (4,))
    terms = method(ModelOutputs(s), ModelOutputs(t), y, StepContext())
    torch.testing.assert_close(terms["loss_ce"], 0.1 * F.cross_entropy(s, y))
    torch.testing.assert_close(terms["loss_kd"], 0.9 * ((s - t) ** 2).mean())
    assert create_method("kd", *pair, loss="kl").loss == "kl"  # the default, and the good input, pass


def test_kd_unknown_loss_is_refused(pair):
    with pytest.raises(ValueError, match=r"kd's loss must be one of \['kl', 'mse'\], got 'l2'"):
        create_method("kd", *pair, loss="l2")
