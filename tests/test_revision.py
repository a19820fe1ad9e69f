"""Label Revision (Eq. 7-11): the paper's worked example, hand-computed cases, bad input."""

import pytest
import torch
import torch.nn.functional as F

from kd_zoo.revision import LabelRevision, label_revision_loss, revise_soft_labels, revised_teacher_logits


def test_paper_worked_example():
    revised = revise_soft_labels(torch.tensor([[0.1, 0.1, 0.5, 0.3]], dtype=torch.float64), torch.tensor([3]), 0.9)
    torch.testing.assert_close(
        revised, torch.tensor([[0.075, 0.075, 0.375, 0.475]], dtype=torch.float64), atol=1e-6, rtol=0
    )
    assert revised.argmax() == 3 and revised.sum().item() == pytest.approx(1.0)


def test_right_rows_are_unchanged_and_wrong_rows_follow_eq_7_to_9():
    probs = torch.tensor([[0.7, 0.2, 0.1], [0.2, 0.5, 0.3], [0.6, 0.1, 0.3]], dtype=torch.float64)
    labels = torch.tensor([0, 2, 1])
    revised = revise_soft_labels(probs, labels, eta=0.8)
    torch.testing.assert_close(revised[0], probs[0], rtol=0, atol=0)
    # Row 1: p_max 0.5, p_y 0.3 -> beta = 0.8 / 1.2; row 2: p_max 0.6, p_y 0.1 -> beta = 0.8 / 1.5.
    for row, beta in ((1, 0.8 / 1.2), (2, 0.8 / 1.5)):
        want = beta * probs[row] + (1 - beta) * F.one_hot(labels[row], 3).double()
        torch.testing.assert_close(revised[row], want)
        assert revised[row].argmax() == labels[row]


@pytest.mark.parametrize("rule", ["pt_max", "pt_target"])
def test_per_sample_eta_variants(rule):
    probs = torch.tensor([[0.1, 0.6, 0.3]], dtype=torch.float64)
    labels = torch.tensor([2])
    eta = 0.6 if rule == "pt_max" else 0.3
    torch.testing.assert_close(revise_soft_labels(probs, labels, rule), revise_soft_labels(probs, labels, eta))


@pytest.mark.parametrize("eta", [0.0, -0.1, 1.5, "median", True])
def test_eta_outside_range_is_refused(eta):
    with pytest.raises(ValueError, match="eta"):
        revise_soft_labels(torch.tensor([[0.5, 0.5]]), torch.tensor([0]), eta)
    with pytest.raises(ValueError, match="eta"):
        LabelRevision(eta=eta)


def test_bad_shapes_and_labels():
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\)"):
        revise_soft_labels(torch.full((2, 3), 1 / 3), torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="labels must be"):
        revise_soft_labels(torch.full((2, 3), 1 / 3), torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="same shape"):
        label_revision_loss(torch.zeros(2, 3), torch.zeros(2, 4), torch.tensor([0, 1]))


def test_lr_loss_hand_computed():
    student = torch.tensor([[1.0, 0.0, 0.0], [0.0, 2.0, 1.0], [0.5, 0.5, 0.0]], requires_grad=True)
    teacher = torch.tensor([[3.0, 1.0, 0.0], [0.0, 3.0, 1.0], [2.0, 0.0, 1.0]])
    labels = torch.tensor([0, 1, 2])  # teacher right, right, wrong
    terms = label_revision_loss(student, teacher, labels, eta=0.8, lambda1=4.0, lambda2=2.0)
    ce = (F.cross_entropy(student[:1], labels[:1]) + F.cross_entropy(student[1:2], labels[1:2])) / 2
    mse_right = ((student[:2] - teacher[:2]) ** 2).mean()
    p_t = teacher[2].softmax(0)
    beta = 0.8 / (p_t.max() - p_t[2] + 1)
    target = beta * p_t + (1 - beta) * torch.tensor([0.0, 0.0, 1.0])
    mse_wrong = ((student[2].softmax(0) - target) ** 2).mean()
    torch.testing.assert_close(terms["loss_lr_ce"], ce)
    torch.testing.assert_close(terms["loss_lr_right"], 4.0 * mse_right)
    torch.testing.assert_close(terms["loss_lr_wrong"], 2.0 * mse_wrong)
    sum(terms.values()).backward()
    assert student.grad.abs().sum() > 0


def test_lr_loss_with_an_empty_part_is_finite_and_connected():
    student = torch.randn(4, 5, requires_grad=True)
    teacher = torch.randn(4, 5)
    labels = teacher.argmax(1)  # all right: the wrong part is empty
    terms = label_revision_loss(student, teacher, labels)
    assert terms["loss_lr_wrong"].item() == 0.0
    sum(terms.values()).backward()
    assert torch.isfinite(student.grad).all()


def test_revised_logits_reproduce_the_revised_distribution():
    teacher = torch.randn(6, 7, dtype=torch.float64)
    labels = torch.randint(0, 7, (6,))
    logits = revised_teacher_logits(teacher, labels, 0.8)
    torch.testing.assert_close(logits.softmax(1), revise_soft_labels(teacher.softmax(1), labels, 0.8))
    assert (logits.argmax(1) == labels).all()


# -- eta in (0, 1): Eq. 9's "a coefficient that is smaller than 1" ------------------------------------------------
def test_eta_of_one_is_refused_with_the_reason():
    with pytest.raises(ValueError, match=r"eta must lie in \(0, 1\), got 1\.0.*smaller than 1.*ties"):
        revise_soft_labels(torch.tensor([[0.2, 0.8]]), torch.tensor([0]), 1.0)
    with pytest.raises(ValueError, match=r"\(0, 1\)"):
        LabelRevision(eta=1)
    LabelRevision(eta=0.999999)  # the good input next to it passes


@pytest.mark.parametrize("eta", [0.5, 0.95, 0.999, 1 - 1e-6, 1 - 1e-9, 1 - 1e-12])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_eta_close_to_one_keeps_the_true_class_strictly_on_top(eta, dtype):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(512, 10, generator=g, dtype=torch.float64) * 6
    labels = (logits.argmax(1) + torch.randint(1, 10, (512,), generator=g)) % 10  # the teacher is always wrong
    probs = logits.softmax(1).to(dtype)
    revised = revise_soft_labels(probs, labels, eta)
    assert revised.dtype == dtype
    target = revised.gather(1, labels[:, None]).squeeze(1)
    others = revised.scatter(1, labels[:, None], -1.0).amax(1)
    assert (target > others).all()
    assert (revised.argmax(1) == labels).all()
    if dtype == torch.float64 and eta <= 1 - 1e-9:  # Eq. 9's margin over the wrong argmax is exactly 1 - eta
        torch.testing.assert_close(target - others, torch.full_like(target, 1 - eta), rtol=1e-5, atol=1e-13)


def test_pt_max_of_one_ties_and_the_true_class_is_raised_by_one_step():
    """A saturated wrong teacher: pt_max is 1.0 in float32, so eta_i = pt_max = 1 and Eq. 7 gives a tie."""
    probs = torch.tensor([[30.0, 0.0, 0.0]]).softmax(1)
    assert probs[0, 0].item() == 1.0
    revised = revise_soft_labels(probs, torch.tensor([2]), "pt_max")
    assert revised.argmax().item() == 2
    assert revised[0, 2] == torch.nextafter(revised[0, 0], torch.tensor(1.0))  # one float step, no more
    assert revised.sum().item() == pytest.approx(1.0, abs=1e-6)
    # Rows the rule leaves strict are not touched: the same teacher at pt_max < 1 follows Eq. 7 exactly.
    soft = torch.tensor([[0.6, 0.3, 0.1]], dtype=torch.float64)
    beta = 0.6 / (0.6 - 0.1 + 1)
    want = beta * soft + (1 - beta) * torch.tensor([[0.0, 0.0, 1.0]], dtype=torch.float64)
    torch.testing.assert_close(revise_soft_labels(soft, torch.tensor([2]), "pt_max"), want, rtol=0, atol=1e-15)


def test_pt_target_of_zero_gives_the_one_hot_label():
    probs = torch.tensor([[1.0, 0.0, 0.0]])
    revised = revise_soft_labels(probs, torch.tensor([1]), "pt_target")
    torch.testing.assert_close(revised, torch.tensor([[0.0, 1.0, 0.0]]), rtol=0, atol=0)


@pytest.mark.parametrize("eta", ["pt_max", 1 - 1e-9])
def test_revised_logits_keep_the_true_class_on_top_for_a_saturated_teacher(eta):
    logits = torch.tensor([[40.0, 0.0, -3.0], [0.0, 25.0, 1.0]])
    labels = torch.tensor([2, 0])
    revised = revised_teacher_logits(logits, labels, eta)
    assert (revised.argmax(1) == labels).all()
    target = revised.gather(1, labels[:, None]).squeeze(1)
    assert (target > revised.scatter(1, labels[:, None], float("-inf")).amax(1)).all()
