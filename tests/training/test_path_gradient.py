"""Path-gradient reverse KL: the standard gradient in expectation, a smaller variance near convergence."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from bgflow_sci import BoltzmannGenerator
from bgflow_sci.distributions import Normal
from bgflow_sci.energies import FunctionEnergy
from bgflow_sci.flows import neural_spline_flow, real_nvp
from bgflow_sci.training import ReverseKL, Trainer

MEAN, STD = torch.tensor([0.5, -1.0], dtype=torch.float64), torch.tensor([0.7, 1.3], dtype=torch.float64)


def _target():
    return FunctionEnergy(lambda x: 0.5 * (((x - MEAN) / STD) ** 2).sum(-1), dim=2)


def _generator(kind: str, perturbation: float, seed: int = 0) -> BoltzmannGenerator:
    torch.manual_seed(seed)
    flow = real_nvp(2, 4, hidden=(16,)) if kind == "real_nvp" else neural_spline_flow(2, 2, hidden=(16,))
    bg = BoltzmannGenerator(Normal(2), flow, _target()).double()
    with torch.no_grad():
        for p in bg.parameters():
            p.add_(perturbation * torch.randn_like(p))
    return bg


def _gradients(bg, gradient: str, batches: int, batch_size: int = 64) -> torch.Tensor:
    """``(batches, n_params)``: one gradient per batch, batch ``b`` drawn with seed ``b`` (paired across estimators)."""
    loss = ReverseKL(bg, batch_size, gradient=gradient)
    params = [p for p in bg.parameters() if p.requires_grad]
    out = []
    for b in range(batches):
        torch.manual_seed(1000 + b)
        grads = torch.autograd.grad(loss(), params)
        out.append(torch.cat([g.reshape(-1) for g in grads]))
    return torch.stack(out)


@pytest.mark.parametrize("kind", ["real_nvp", "spline"])
def test_path_gradient_equals_the_standard_gradient_in_expectation(kind):
    bg = _generator(kind, 0.3)
    total, path = _gradients(bg, "total", 300), _gradients(bg, "path", 300)
    diff = total - path  # paired: the score term, zero in expectation
    z = diff.mean(0) / (diff.std(0) / len(diff) ** 0.5).clamp_min(1e-12)
    assert z.abs().max() < 5.0, z.abs().max()  # ~100-300 components: a max |z| of 5 has probability < 1e-4
    assert (diff.std(0) > 0).any()  # the two estimators do differ batch by batch
    torch.manual_seed(5)  # and the value returned is the reverse KL itself
    standard = ReverseKL(bg, 64)().detach()
    torch.manual_seed(5)
    assert float(ReverseKL(bg, 64, gradient="path")().detach()) == pytest.approx(float(standard), abs=1e-12)


def test_path_gradient_variance_vanishes_near_convergence():
    bg = _generator("real_nvp", 0.0)
    trainer = Trainer(bg, {"kl": ReverseKL(bg, 256, gradient="path")}, lr=5e-3, progress=False)
    trainer.train(300)  # an affine target: a RealNVP represents it exactly
    total, path = _gradients(bg, "total", 100), _gradients(bg, "path", 100)
    ratio = float(path.var(0).sum() / total.var(0).sum())
    assert ratio < 0.2, ratio
    assert float(trainer.history[-1]["loss/kl"]) < float(trainer.history[0]["loss/kl"])


def test_path_gradient_drops_non_finite_samples_and_rejects_unknown_estimators():
    bg = _generator("real_nvp", 0.1)
    bg.target = FunctionEnergy(lambda x: torch.where(x[:, 0] > 1.0, torch.inf, 0.5 * (x**2).sum(-1)), dim=2)
    loss = ReverseKL(bg, 256, gradient="path")
    value = loss()
    value.backward()
    assert torch.isfinite(value) and all(torch.isfinite(p.grad).all() for p in bg.parameters())
    assert loss.n_dropped > 0
    with pytest.raises(ValueError, match="'total' or 'path'"):
        ReverseKL(bg, 8, gradient="score")


def test_train_method_selects_the_path_gradient(tmp_path):
    from bgflow_sci.training import read_metrics
    from bgflow_sci.workflows.train import train

    toy = Path(__file__).parents[1] / "workflows" / "toy_system"
    settings = {"train": {"ml_steps": 20, "kl_steps": 20, "method": "path_kl"}}
    results = train(toy, tmp_path / "path", overrides=settings, progress=False, evaluate=False)
    assert results["steps"] == 40 and results["config"]["train"]["method"] == "path_kl"
    assert read_metrics(tmp_path / "path" / "metrics.jsonl")[-1]["loss/kl"] is not None
    with pytest.raises(ValueError, match=r"train.method must be one of \['ml_kl', 'path_kl'\]"):
        train(toy, tmp_path / "bad", overrides={"train": {"method": "fab"}}, progress=False, evaluate=False)
