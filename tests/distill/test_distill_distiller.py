"""The Distiller: taps by module name, hook lifetime, teacher isolation, adapters, GraphModule students."""

import warnings

import pytest
import torch
import torch.fx
from torch import nn

import compress
from compress.models import MnistCNN
from distill import AttentionTransferLoss, Distiller, DistillError, FeatureTaps, HintLoss, KDLoss, RKDLoss


def batch(n: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randn(n, 1, 28, 28), torch.randint(0, 10, (n,))


def hooks(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) for m in model.modules())


@pytest.fixture
def pair() -> tuple[nn.Module, nn.Module]:
    return MnistCNN(16), MnistCNN(4)


def full_distiller(teacher: nn.Module, student: nn.Module) -> Distiller:
    return Distiller(
        teacher,
        student,
        logit_loss=KDLoss(),
        feature_losses={
            ("conv3", "conv3"): HintLoss(student_channels=8, teacher_channels=32),
            ("bn4", "bn4"): AttentionTransferLoss(),
            ("gap", "gap"): RKDLoss(),
        },
    )


def test_combined_loss_is_the_sum_of_named_parts(pair):
    x, y = batch()
    out = full_distiller(*pair)(x, y)
    assert list(out.parts) == [
        "KDLoss",
        "HintLoss[conv3 -> conv3]",
        "AttentionTransferLoss[bn4 -> bn4]",
        "RKDLoss[gap -> gap]",
    ]
    torch.testing.assert_close(out.loss, sum(out.parts.values()))
    assert out.student_logits.shape == out.teacher_logits.shape == (8, 10)


def test_teacher_gets_no_grads_and_stays_in_eval(pair):
    teacher, student = pair
    teacher.train()
    bn_mean = teacher.bn1.running_mean.clone()
    distiller = full_distiller(teacher, student)
    teacher.train()  # a loop calling .train() on everything must not unfreeze the teacher
    x, y = batch()
    out = distiller(x, y)
    out.loss.backward()
    assert not teacher.training
    assert all(p.grad is None for p in teacher.parameters())
    assert not out.teacher_logits.requires_grad
    torch.testing.assert_close(teacher.bn1.running_mean, bn_mean)  # BN statistics untouched
    assert all(p.grad is not None for p in student.parameters())
    assert student.training  # the student's mode is the caller's
    distiller.remove()
    assert teacher.training  # original mode restored


def test_hooks_are_removed_by_remove_and_by_the_context_manager(pair):
    teacher, student = pair
    before = hooks(teacher), hooks(student)
    distiller = full_distiller(teacher, student)
    assert (hooks(teacher), hooks(student)) == (before[0] + 3, before[1] + 3)
    distiller.remove()
    distiller.remove()  # idempotent
    assert (hooks(teacher), hooks(student)) == before
    with pytest.raises(DistillError, match="taps were removed"):
        distiller(*batch())
    with full_distiller(teacher, student):
        assert hooks(student) == before[1] + 3
    assert (hooks(teacher), hooks(student)) == before


def test_unknown_module_name_is_named_with_suggestions_and_leaves_no_hooks(pair):
    teacher, student = pair
    with pytest.raises(DistillError, match=r"student has no module named 'conv9'.*did you mean 'conv4'"):
        Distiller(teacher, student, feature_losses={("conv3", "conv9"): HintLoss()})
    assert hooks(teacher) == hooks(student) == 0
    with pytest.raises(DistillError, match="teacher has no module named 'layer1'"):
        Distiller(teacher, student, feature_losses={("layer1", "conv3"): HintLoss()})


def test_bad_configurations(pair):
    teacher, student = pair
    with pytest.raises(DistillError, match="same module"):
        Distiller(student, student)
    with pytest.raises(DistillError, match="pairs"):
        Distiller(teacher, student, feature_losses={"conv3": HintLoss()})
    with pytest.raises(DistillError, match="HintLoss: student feature"):
        Distiller(teacher, student, feature_losses={("conv3", "conv3"): HintLoss()})(*batch())


def test_taps_record_only_during_a_distiller_call(pair):
    """Ordinary forwards (evaluation, export) keep no activations alive and raise nothing."""
    teacher, student = pair
    taps = FeatureTaps(student, ["conv3"], role="student")
    student(batch()[0])
    with taps.recording() as features:
        student(batch()[0])
    assert set(features) == {"conv3"} and features["conv3"].shape == (8, 8, 14, 14)
    student(batch()[0])
    assert set(features) == {"conv3"}  # the dict of the last recording is not refilled
    taps.remove()


def test_module_that_does_not_run_or_runs_twice_is_an_error():
    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin, self.unused = nn.Linear(4, 4), nn.Linear(4, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.lin(self.lin(x))

    model = Twice()
    with pytest.raises(DistillError, match="'lin' ran more than once"):
        with FeatureTaps(model, ["lin"]).recording():
            model(torch.randn(2, 4))
    with pytest.raises(DistillError, match="'unused'.* did not run"):
        with FeatureTaps(model, ["unused"]).recording():
            model(torch.randn(2, 4))


def test_adapters_are_trained_with_the_student(pair):
    teacher, student = pair
    distiller = Distiller(
        teacher,
        student,
        feature_losses={("conv3", "conv3"): HintLoss(student_channels=8, teacher_channels=32)},
    )
    adapter = distiller.feature_losses[0].adapter.linear.weight
    params = distiller.trainable_parameters()
    assert any(p is adapter for p in params)
    assert len(params) == len(list(student.parameters())) + 2
    before = adapter.detach().clone()
    opt = torch.optim.SGD(params, lr=0.1)
    distiller(*batch()).loss.backward()
    opt.step()
    assert not torch.equal(adapter, before)


def test_without_logit_loss_the_task_term_is_cross_entropy(pair):
    x, y = batch()
    distiller = Distiller(*pair, feature_losses={("bn4", "bn4"): AttentionTransferLoss()})
    out = distiller(x, y)
    torch.testing.assert_close(out.parts["cross_entropy"], nn.functional.cross_entropy(out.student_logits, y))
    with pytest.raises(DistillError, match="target is None"):
        distiller(x)


def test_fx_graph_module_student_is_tapped_by_submodule_name(pair):
    teacher, _ = pair
    student = torch.fx.symbolic_trace(MnistCNN(4))
    with Distiller(
        teacher, student, logit_loss=KDLoss(), feature_losses={("bn4", "bn4"): AttentionTransferLoss()}
    ) as distiller:
        out = distiller(*batch())
        out.loss.backward()
    assert "AttentionTransferLoss[bn4 -> bn4]" in out.parts
    assert student.conv4.weight.grad is not None
    assert hooks(student) == 0


def test_fake_quant_qat_student_with_fused_renamed_modules(pair):
    """An int8 QAT student (torch.ao's fake-quant GraphModule: Conv-BN-ReLU fused into 'convN')
    learns from the fp32 teacher; its BN module names are gone, and the error says so."""
    from torch.ao.quantization import get_default_qat_qconfig_mapping
    from torch.ao.quantization.quantize_fx import prepare_qat_fx

    teacher, _ = pair
    x, y = batch()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        student = prepare_qat_fx(MnistCNN(4).train(), get_default_qat_qconfig_mapping("x86"), (x,))
    assert isinstance(student, torch.fx.GraphModule) and student.training
    with pytest.raises(DistillError, match="student has no module named 'bn4'"):
        Distiller(teacher, student, feature_losses={("bn4", "bn4"): AttentionTransferLoss()})
    distiller = Distiller(
        teacher,
        student,
        logit_loss=KDLoss(),
        feature_losses={("conv4", "conv4"): HintLoss(student_channels=16, teacher_channels=64)},
    )
    opt = torch.optim.Adam(distiller.trainable_parameters(), lr=1e-2)
    losses = []
    for _ in range(15):
        out = distiller(x, y)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        losses.append(out.loss.item())
    assert losses[-1] < 0.6 * losses[0]
    assert student.conv4.weight.grad is not None
    distiller.remove()
    assert hooks(student) == 0


def test_facade_trains_and_translates_errors(pair, mnist_split):
    teacher, student = pair
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(mnist_split.x_train[:64], mnist_split.y_train[:64]), batch_size=32
    )
    with pytest.raises(compress.DistillationError, match="unknown distillation loss 'fitnet'"):
        compress.distill(student, teacher, loader, loss="fitnet")
    with pytest.raises(compress.DistillationError, match="student has no module named 'conv9'"):
        compress.distill(student, teacher, loader, feature_losses={("conv3", "conv9"): HintLoss()})
    with pytest.raises(compress.DistillationError, match="epochs"):
        compress.distill(student, teacher, loader, epochs=0)
    before = student.fc.weight.detach().clone()
    out = compress.distill(
        student,
        teacher,
        loader,
        loss="dkd",
        feature_losses={("conv3", "conv3"): HintLoss(8, 32)},
        epochs=1,
    )
    assert out is student and not student.training
    assert not torch.equal(student.fc.weight, before)
    assert hooks(teacher) == hooks(student) == 0 and teacher.training
