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
