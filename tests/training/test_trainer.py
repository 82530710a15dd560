"""Trainer: exact resume, NaN-safe steps, step-dependent weights, metrics log and plots, clipping, dtypes."""

from __future__ import annotations

import json
import random
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from bgflow_sci.plotting import plot_metrics
from bgflow_sci.training import Trainer
from bgflow_sci.training.trainer import EqualityConstraint, read_metrics, seed_everything


class Regression:
    """Noisy minibatch regression loss: random rows (torch.randint), input noise (torch.randn), numpy/python jitter."""

    def __init__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 16):
        self.model, self.x, self.y, self.batch = model, x, y, batch
        self.calls = 0

    def __call__(self) -> torch.Tensor:
        self.calls += 1
        idx = torch.randint(0, self.x.shape[0], (self.batch,), device=self.x.device)
        noise = 0.1 * torch.randn(self.batch, self.x.shape[1], device=self.x.device, dtype=self.x.dtype)
        scale = 1.0 + 0.1 * float(np.random.rand()) + 0.1 * random.random()
        return scale * ((self.model(self.x[idx] + noise) - self.y[idx]) ** 2).mean()


def make_problem(seed: int, dtype=torch.float32, device="cpu", **kwargs) -> tuple[nn.Module, Trainer, Regression]:
    gen = torch.Generator().manual_seed(1234)  # data fixed, independent of the global RNG
    x = torch.randn(64, 3, generator=gen).to(device, dtype)
    y = (x.sin().sum(-1, keepdim=True) + 0.05 * torch.randn(64, 1, generator=gen).to(device, dtype)).to(dtype)
    seed_everything(seed)
    model = nn.Sequential(nn.Linear(3, 16), nn.Tanh(), nn.Linear(16, 1)).to(device, dtype)
    loss = Regression(model, x, y)
    defaults = dict(lr=1e-2, progress=False, seed=seed)
    defaults.update(kwargs)
    return model, Trainer(model, {"mse": loss}, **defaults), loss


def params(model: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


def test_resume_is_bit_for_bit(tmp_path, device):
    opts = dict(schedule="cosine", total_steps=25, warmup_steps=3, final_lr_factor=0.1, clip_grad_norm=1.0)
    opts["device"] = device
    ref_model, ref, _ = make_problem(0, **opts)
    ref.train(25)

    model, trainer, _ = make_problem(0, **opts)
    trainer.train(15)
    ckpt = tmp_path / "ckpt.pt"
    trainer.save_checkpoint(ckpt)

    # fresh objects built the same way; scramble every RNG so only the checkpoint can restore them
    model2, trainer2, _ = make_problem(0, **opts)
    seed_everything(999)
    trainer2.load_checkpoint(ckpt)
    assert trainer2.step == 15 and len(trainer2.history) == 15
    trainer2.train(10)
    assert trainer2.step == 25
    for p, q in zip(model2.parameters(), ref_model.parameters()):
        assert torch.equal(p, q)
    steps = lambda t: [s["step"].item() for s in t.optimizer.state_dict()["state"].values()]  # noqa: E731
    assert steps(trainer2) == steps(ref) == [25.0] * 4
    assert trainer2.optimizer.param_groups[0]["lr"] == ref.optimizer.param_groups[0]["lr"]
    assert [h["loss/mse"] for h in trainer2.history] == [h["loss/mse"] for h in ref.history]

    # negative control: without the saved RNG states the continuation differs
    model3, trainer3, _ = make_problem(0, **opts)
    trainer3.load_checkpoint(ckpt)
    seed_everything(999)
    trainer3.train(10)
    assert not all(torch.equal(p, q) for p, q in zip(model3.parameters(), ref_model.parameters()))


def test_periodic_checkpoint(tmp_path):
    ckpt = tmp_path / "sub" / "run.pt"
    _, trainer, _ = make_problem(0, checkpoint_path=ckpt, checkpoint_every=4)
    trainer.train(6)
    state = torch.load(ckpt, weights_only=False)
    assert state["step"] == 6 and state["config"] == {}
    assert not (tmp_path / "sub" / "run.pt.tmp").exists()


def test_cosine_schedule_with_warmup():
    _, trainer, _ = make_problem(0, lr=1.0, schedule="cosine", total_steps=12, warmup_steps=2, final_lr_factor=0.1)
    lrs = [h["lr"] for h in trainer.train(14)]
    assert lrs[:3] == pytest.approx([0.5, 1.0, 1.0])
    assert lrs[7] == pytest.approx(0.1 + 0.9 * 0.5)  # half-way through the cosine part
    assert lrs[12:] == pytest.approx([0.1, 0.1])
    with pytest.raises(ValueError, match="total_steps"):
        make_problem(0, schedule="cosine")


class NanAt:
    def __init__(self, loss, bad_call: int, kind: str = "nan"):
        self.loss, self.bad_call, self.kind, self.calls = loss, bad_call, kind, 0

    def __call__(self) -> torch.Tensor:
        value = self.loss()
        self.calls += 1
        if self.calls - 1 != self.bad_call:
            return value
        if self.kind == "nan":
            return value * float("nan")
        return _InfGrad.apply(value)


class _InfGrad(torch.autograd.Function):
    """Identity forward (finite loss), infinite gradient backward."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, g):
        return g * float("inf")


@pytest.mark.parametrize("kind", ["nan", "inf_grad"])
def test_non_finite_step_is_skipped(kind):
    model, trainer, loss = make_problem(0)
    trainer.losses["mse"] = NanAt(loss, 3, kind)
    trainer.train(3)
    before = params(model)
    adam_before = {k: {n: v.clone() for n, v in s.items()} for k, s in trainer.optimizer.state_dict()["state"].items()}
    with pytest.warns(RuntimeWarning, match="skipped"):
        trainer.train(1)
    assert trainer.n_skipped == 1 and trainer.step == 4
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), before))
    for k, s in trainer.optimizer.state_dict()["state"].items():
        assert all(torch.equal(v, adam_before[k][n]) for n, v in s.items())
    assert trainer.history[-1]["skipped"] and trainer.history[-1]["n_skipped"] == 1
    assert all(p.grad is None for p in model.parameters())
    trainer.train(3)
    assert trainer.n_skipped == 1
    assert not any(torch.equal(p, q) for p, q in zip(model.parameters(), before))
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_max_consecutive_skips_raises():
    _, trainer, _ = make_problem(0, max_consecutive_skips=3)
    trainer.losses["mse"] = lambda: torch.tensor(float("nan"), requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        with pytest.raises(RuntimeError, match="3 consecutive non-finite"):
            trainer.train(10)
    assert trainer.step == 3 and trainer.n_skipped == 3


def test_step_dependent_weights_skip_zero_terms():
    model, trainer, loss_a = make_problem(0)
    _, _, loss_b = make_problem(1)
    loss_b.model = model
    trainer = Trainer(
        model,
        {"ml": loss_a, "kl": loss_b},
        weights={"ml": lambda s: 1.0 if s < 4 else 0.0, "kl": lambda s: 0.0 if s < 4 else 0.5},
        progress=False,
    )
    history = trainer.train(10)
    assert loss_a.calls == 4 and loss_b.calls == 6
    assert [h["loss/kl"] is None for h in history] == [True] * 4 + [False] * 6
    assert [h["weight/kl"] for h in history] == [0.0] * 4 + [0.5] * 6
    assert history[5]["total"] == pytest.approx(0.5 * history[5]["loss/kl"])
    with pytest.raises(ValueError, match="unknown"):
        Trainer(model, {"ml": loss_a}, weights={"kl": 1.0})


def test_jsonl_log_and_plot(tmp_path):
    log = tmp_path / "logs" / "metrics.jsonl"
    _, trainer, _ = make_problem(0, log_path=log, log_every=3, config={"name": "toy", "lr": 1e-2})
    history = trainer.train(8)
    assert [h["step"] for h in history] == [0, 3, 6, 7]
    lines = log.read_text().splitlines()
    assert len(lines) == 4
    records = read_metrics(log)
    assert records == [json.loads(line) for line in lines]
    expected = {"step", "loss/mse", "weight/mse", "total", "lr", "grad_norm", "skipped", "n_skipped", "time", "elapsed"}
    assert set(records[0]) == expected
    assert records[-1]["total"] == pytest.approx(history[-1]["total"])
    assert all(isinstance(r["grad_norm"], float) and not r["skipped"] for r in records)

    out = tmp_path / "plots" / "curves.png"
    plot_metrics(log, out, log_scale=True)
    assert out.stat().st_size > 1000 and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    out2 = tmp_path / "curves_hist.png"
    plot_metrics(history, out2)
    assert out2.stat().st_size > 1000


def test_read_metrics_last_record_wins(tmp_path):
    log = tmp_path / "m.jsonl"
    log.write_text('{"step": 0, "total": 1.0}\n{"step": 1, "total": 2.0}\n{"step": 1, "total": 3.0}\n\n')
    assert read_metrics(log) == [{"step": 0, "total": 1.0}, {"step": 1, "total": 3.0}]


def test_gradient_clipping():
    model, trainer, _ = make_problem(0, clip_grad_norm=0.05, lr=1e-3)
    seen = []

    def hook(opt, args, kwargs):
        grads = [p.grad for g in opt.param_groups for p in g["params"] if p.grad is not None]
        seen.append(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])).item())

    trainer.optimizer.register_step_pre_hook(hook)
    history = trainer.train(5)
    assert len(seen) == 5
    assert all(h["grad_norm"] > 0.05 for h in history)  # clipping was active ...
    assert all(n <= 0.05 * (1 + 1e-5) for n in seen)  # ... and effective
    assert seen == pytest.approx([0.05] * 5, rel=1e-4)

    # without clipping the logged norm is the norm the optimizer sees
    model, trainer, _ = make_problem(0, clip_grad_norm=None)
    seen.clear()
    trainer.optimizer.register_step_pre_hook(hook)
    history = trainer.train(3)
    assert seen == pytest.approx([h["grad_norm"] for h in history], rel=1e-5)


def test_dtype_and_device(device, dtype):
    model, trainer, loss = make_problem(0, dtype=dtype, device=device, lr=3e-2, schedule="cosine", total_steps=60)
    history = trainer.train(60)
    assert all(p.dtype == dtype and p.device.type == device.type for p in model.parameters())
    first, last = np.mean([h["loss/mse"] for h in history[:5]]), np.mean([h["loss/mse"] for h in history[-5:]])
    assert last < 0.5 * first


def test_user_optimizer_and_equality_constraint():
    # minimise (x - 3)^2 subject to x - 1 = 0: x -> 1, multiplier -> 4 (stationarity 2(x - 3) + λ = 0)
    model = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(0.0)
    x = lambda: model.weight.squeeze()  # noqa: E731
    con = EqualityConstraint(lambda: x() - 1.0, damping=1.0, lr=0.1)
    trainer = Trainer(
        model,
        {"f": lambda: (x() - 3.0) ** 2},
        optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
        constraints={"eq": con},
        progress=False,
    )
    history = trainer.train(400)
    assert x().item() == pytest.approx(1.0, abs=1e-3)
    assert con.multiplier.item() == pytest.approx(4.0, abs=1e-2)
    assert {"constraint/eq", "eq/g", "eq/lambda"} <= set(history[-1])
    assert history[-1]["eq/lambda"] == pytest.approx(4.0, abs=1e-2)
