"""The distillation step: every registered method x {LR off, on} x {DS off, on}, the teacher only on Dt rows,
gradients to the student and the method's extras and never to the teacher, and the partial-batch rule."""

import pytest
import timm
import torch
import torch.nn.functional as F

import kd_zoo  # noqa: F401
from kd_zoo.engine import Distiller, TeacherInput, freeze
from kd_zoo.methods import METHODS, StepContext, create_method
from kd_zoo.revision import LabelRevision

CTX = StepContext(epoch=12, num_epochs=240, step=3, steps_per_epoch=10)


class RecordingTeacher(torch.nn.Module):
    """Wraps a teacher and records every batch it sees."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.feature_info = model.feature_info
        self.seen = []
        self.eval()

    def _record(self, x):
        self.seen.append(x.detach().clone())

    def forward_intermediates(self, x, **kwargs):
        self._record(x)
        return self.model.forward_intermediates(x, **kwargs)

    def forward_features(self, x):
        self._record(x)
        return self.model.forward_features(x)

    def forward_head(self, x, pre_logits=False):
        return self.model.forward_head(x, pre_logits=pre_logits)


def _pair(num_classes=10):
    student = timm.create_model("lrds_resnet8", num_classes=num_classes)
    teacher = freeze(timm.create_model("lrds_wrn_16_2", num_classes=num_classes))
    return student, teacher


def _batch(n=12, num_classes=10, distilled=8):
    images = torch.randn(n, 3, 32, 32)
    labels = torch.arange(n) % num_classes
    mask = torch.zeros(n, dtype=torch.bool)
    mask[torch.randperm(n)[:distilled]] = True
    return images, labels, mask


@pytest.mark.parametrize("ds", [False, True], ids=["ds_off", "ds_on"])
@pytest.mark.parametrize("lr", [False, True], ids=["lr_off", "lr_on"])
@pytest.mark.parametrize("name", METHODS.names())
def test_every_method_with_lr_and_ds(name, lr, ds):
    student, teacher = _pair()
    distiller = Distiller(student, create_method(name, student, teacher), LabelRevision() if lr else None).train()
    recording = RecordingTeacher(teacher)
    images, labels, mask = _batch()
    out = distiller(images, labels, mask if ds else None, teacher=recording, ctx=CTX)
    assert torch.isfinite(out.loss) and all(k.startswith("loss_") for k in out.terms)
    assert out.num_distilled == (int(mask.sum()) if ds else len(labels))
    assert ("loss_ce_ds" in out.terms) == ds
    out.loss.backward()
    # The teacher saw exactly the Dt rows, once.
    assert len(recording.seen) == 1
    torch.testing.assert_close(recording.seen[0], images[mask] if ds else images, rtol=0, atol=0)
    assert all(p.grad is None for p in teacher.parameters())
    assert all(p.grad is not None for p in distiller.parameters())
    assert any(p.grad.abs().sum() > 0 for p in student.parameters())
    extras = [p for p in distiller.method.parameters()]
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in extras)
    if extras:
        assert any(p.grad.abs().sum() > 0 for p in extras), "the method's own parameters must learn"
    if lr and distiller.method.label_revision == "loss":
        assert {"loss_lr_ce", "loss_lr_right", "loss_lr_wrong"} <= set(out.terms)
        assert not set(distiller.method.lr_replaces) & set(out.terms)


def test_ds_off_equals_the_method_loss():
    student, teacher = _pair()
    method = create_method("kd", student, teacher)
    distiller = Distiller(student, method).eval()
    images, labels, _ = _batch()
    out = distiller(images, labels, teacher=teacher, ctx=CTX)
    with torch.no_grad():
        s, t = student(images), teacher(images)
    want = 0.1 * F.cross_entropy(s, labels) + 0.9 * kd_zoo.methods.kd.kd_loss(s, t, 4.0)
    torch.testing.assert_close(out.loss, want)


@pytest.mark.parametrize("weighting", ["share", "sum"])
def test_partial_batch_weighting(weighting):
    student, teacher = _pair()
    distiller = Distiller(student, create_method("kd", student, teacher), ds_weighting=weighting).eval()
    images, labels, mask = _batch(n=10, distilled=6)
    out = distiller(images, labels, mask, teacher=teacher, ctx=CTX)
    with torch.no_grad():
        s, t = student(images), teacher(images[mask])
    dt = 0.1 * F.cross_entropy(s[mask], labels[mask]) + 0.9 * kd_zoo.methods.kd.kd_loss(s[mask], t, 4.0)
    ds = F.cross_entropy(s[~mask], labels[~mask])
    want = 0.6 * dt + 0.4 * ds if weighting == "share" else dt + ds
    torch.testing.assert_close(out.loss, want)
    if weighting == "share":  # every sample weighs the same: the CE part equals a per-sample sum / batch
        per_sample = F.cross_entropy(s[~mask], labels[~mask], reduction="sum") / 10
        torch.testing.assert_close(out.terms["loss_ce_ds"], per_sample)


def test_batch_without_distilled_rows_skips_the_teacher():
    student, teacher = _pair()
    distiller = Distiller(student, create_method("ctkd", student, teacher))
    recording = RecordingTeacher(teacher)
    images, labels, _ = _batch()
    out = distiller(images, labels, torch.zeros(12, dtype=torch.bool), teacher=recording, ctx=CTX)
    assert recording.seen == [] and set(out.terms) == {"loss_ce_ds"}
    out.loss.backward()
    assert distiller.method.theta.grad is not None  # kept in the graph with a zero gradient
    with torch.no_grad():
        torch.testing.assert_close(out.loss, F.cross_entropy(student(images), labels))


def test_lr_on_kd_is_equation_11():
    student, teacher = _pair()
    lr = LabelRevision(eta=0.8, lambda1=4.0, lambda2=1.0)
    distiller = Distiller(student, create_method("kd", student, teacher), lr).eval()
    images, labels, _ = _batch()
    out = distiller(images, labels, teacher=teacher, ctx=CTX)
    with torch.no_grad():
        want = lr.loss(student(images), teacher(images), labels)
    assert set(out.terms) == set(want)
    for k in want:
        torch.testing.assert_close(out.terms[k], want[k])


def test_bad_inputs_are_named():
    student, teacher = _pair()
    distiller = Distiller(student, create_method("kd", student, teacher))
    images, labels, mask = _batch()
    with pytest.raises(ValueError, match=r"distill_mask must be a bool tensor of shape \(12,\)"):
        distiller(images, labels, mask[:5], teacher=teacher, ctx=CTX)
    with pytest.raises(ValueError, match="distill_mask"):
        distiller(images, labels, mask.float(), teacher=teacher, ctx=CTX)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 10\)"):
        distiller(images, labels + 5, mask, teacher=teacher, ctx=CTX)
    with pytest.raises(ValueError, match="labels must have shape"):
        distiller(images, labels[:3], mask, teacher=teacher, ctx=CTX)
    with pytest.raises(RuntimeError, match="freeze"):
        distiller(images, labels, mask, teacher=teacher.train(), ctx=CTX)
    other = freeze(timm.create_model("lrds_resnet8", num_classes=7))
    with pytest.raises(ValueError, match="same classes"):
        distiller(images, labels % 7, mask, teacher=other, ctx=CTX)
    with pytest.raises(ValueError, match="ds_weighting"):
        Distiller(student, create_method("kd", student, teacher), ds_weighting="mean")


# -- a teacher that expects other preprocessing than the student --------------------------------------------------
STUDENT_MEAN, STUDENT_STD = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)


def _teacher_with(mean, std, **cfg):
    teacher = freeze(timm.create_model("lrds_resnet8", num_classes=10))
    teacher.pretrained_cfg = {**teacher.pretrained_cfg, "mean": mean, "std": std, **cfg}
    return teacher


def test_a_teacher_with_its_own_normalisation_is_fed_as_it_expects():
    torch.manual_seed(0)
    pixels = torch.rand(6, 3, 32, 32)  # 0-1 scale
    as_student = (pixels - torch.tensor(STUDENT_MEAN).view(1, 3, 1, 1)) / torch.tensor(STUDENT_STD).view(1, 3, 1, 1)
    as_teacher = (pixels - 0.5) / 0.25  # computed from the pixels, independently of TeacherInput
    teacher = _teacher_with((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    recorder = RecordingTeacher(teacher)
    conversion = TeacherInput.between(STUDENT_MEAN, STUDENT_STD, (3, 32, 32), teacher)
    assert conversion is not None and conversion.teacher_size is None  # CIFAR nets pool globally: no resize
    assert "0.5" in conversion.describe() and not conversion.state_dict()  # nothing of it in a checkpoint
    torch.testing.assert_close(conversion(as_student), as_teacher, rtol=1e-5, atol=1e-5)

    student = timm.create_model("lrds_resnet8", num_classes=10)
    distiller = Distiller(student, create_method("kd", student, teacher), teacher_input=conversion)
    labels = torch.arange(6) % 10
    mask = torch.tensor([True, False, True, True, False, True])
    distiller(as_student, labels, mask, teacher=recorder, ctx=CTX)
    (seen,) = recorder.seen
    torch.testing.assert_close(seen, as_teacher[mask], rtol=1e-5, atol=1e-5)
    assert set(distiller.state_dict()) == set(Distiller(student, distiller.method).state_dict())


def test_a_teacher_expecting_the_students_inputs_is_fed_them_unchanged():
    teacher = _teacher_with(STUDENT_MEAN, STUDENT_STD)
    assert TeacherInput.between(STUDENT_MEAN, STUDENT_STD, (3, 32, 32), teacher) is None
    assert TeacherInput.between(STUDENT_MEAN, STUDENT_STD, (3, 64, 64), teacher) is None  # trained at any size
    plain = freeze(torch.nn.Linear(2, 2))  # no pretrained_cfg: nothing to convert to
    assert TeacherInput.between(STUDENT_MEAN, STUDENT_STD, (3, 32, 32), plain) is None


def test_a_teacher_of_fixed_input_size_gets_its_size():
    teacher = _teacher_with(STUDENT_MEAN, STUDENT_STD, input_size=(3, 48, 48), fixed_input_size=True)
    conversion = TeacherInput.between(STUDENT_MEAN, STUDENT_STD, (3, 32, 32), teacher)
    assert conversion.teacher_size == (48, 48) and "resized to 48x48" in conversion.describe()
    assert conversion(torch.zeros(2, 3, 32, 32)).shape == (2, 3, 48, 48)
