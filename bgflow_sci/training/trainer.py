"""The one training loop of the package: any model, any weighted sum of losses, optional MDMM constraints.

A *loss* is any zero-argument callable returning a scalar tensor; it holds its own references to model and data
and draws its minibatches with the global RNGs (torch, numpy, ``random``), whose states the checkpoints save, so a
resumed run is bit-for-bit identical to an uninterrupted one.

Example::

    trainer = Trainer(flow, {"ml": ml_loss, "kl": kl_loss}, weights={"ml": 1.0, "kl": lambda step: float(step >= 300)},
                      lr=1e-3, schedule="cosine", total_steps=600, log_path="run/metrics.jsonl", seed=0)
    trainer.train(600)
    trainer.save_checkpoint("run/ckpt.pt")
"""

from __future__ import annotations

import json
import math
import os
import random
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from ..io.checkpoints import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from . import distributed
from .mdmm import EqualityConstraint

__all__ = [
    "Constraint",
    "EqualityConstraint",
    "Trainer",
    "read_metrics",
    "seed_everything",
]

Weight = float | Callable[[int], float]


def seed_everything(seed: int) -> None:
    """Seed python ``random``, numpy's global RNG and torch (CPU and every CUDA device)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@runtime_checkable
class Constraint(Protocol):
    """Hook for MDMM constraints (Platt & Barr 1988).

    Calling the object returns the scalar term added to the loss, e.g. ``λ g + (c/2) g²`` for ``g = 0``;
    its gradient with respect to the multipliers ``parameters()`` must be ``g``.  The trainer does gradient
    *ascent* on the multipliers, ``λ ← λ + lr g``, with the object's ``lr``.  An optional ``log_values()``
    returning ``{name: scalar tensor}`` is logged as ``"<constraint>/<name>"``.
    """

    lr: float

    def __call__(self) -> Tensor: ...

    def parameters(self) -> Iterator[nn.Parameter]: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> Any: ...


def _schedule_factor(kind: str, warmup: int, total: int | None, final: float) -> Callable[[int], float]:
    if kind not in ("constant", "cosine"):
        raise ValueError(f"schedule must be 'constant' or 'cosine', got {kind!r}")
    if kind == "cosine" and (total is None or total <= warmup):
        raise ValueError("schedule='cosine' needs total_steps > warmup_steps")

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if kind == "constant":
            return 1.0
        progress = min(1.0, (step - warmup) / (total - warmup))
        return final + (1.0 - final) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


class Trainer:
    """Minimise ``Σ_k w_k(step) L_k() (+ Σ constraint terms)`` over a model's parameters.

    Parameters
    ----------
    model: the module whose parameters are trained (checkpointed via its ``state_dict``).
    losses: ``{name: loss}``, each loss a zero-argument callable returning a scalar tensor.
    weights: ``{name: float or step -> float}``; missing names weigh 1.  A term whose weight is 0 at a step is not
        evaluated at that step (e.g. switch from maximum likelihood to reverse KL).
    optimizer: a ready optimizer; default ``Adam(model.parameters(), lr, weight_decay)``.
    schedule: ``"constant"`` or ``"cosine"`` (to ``lr * final_lr_factor`` at ``total_steps``), after a linear warmup of
        ``warmup_steps``; applied to the optimizer's learning rates.  Ignored if ``scheduler`` is given.
    scheduler: a user LR scheduler (anything with ``step()`` / ``state_dict()`` / ``load_state_dict()``), stepped once
        per training step.
    clip_grad_norm: clip the gradient norm of the optimised parameters to this value (``None``: no clipping); the norm
        before clipping is logged as ``grad_norm``.
    constraints: ``{name: Constraint}`` MDMM terms (see :class:`Constraint`), evaluated every step.
    max_consecutive_skips: raise ``RuntimeError`` after this many consecutive non-finite steps (``None``: never).
    log_path, log_every: JSON-lines metrics file (appended to) and logging interval; skipped steps are always logged.
    checkpoint_path, checkpoint_every: save a checkpoint every that many steps and at the end of each ``train`` call.
    progress: show a tqdm progress bar with the live losses.
    seed: if given, :func:`seed_everything` at construction.
    config: JSON-serialisable user configuration stored in checkpoints.
    find_unused_parameters: passed to ``DistributedDataParallel`` (distributed runs only): set it when some of the
        model's parameters get no gradient in some steps.

    Non-finite steps (loss or any gradient NaN/inf) leave parameters, optimizer state and multipliers untouched and
    are counted in ``n_skipped``; the global step, and with it the LR schedule, still advances.

    **Distributed** (a process group is running, e.g. under ``torchrun``; :mod:`~bgflow_sci.training.distributed`):
    the objective runs inside ``DistributedDataParallel`` (gradients averaged across ranks), the batch sizes of
    the losses are global batches split across the ranks, MDMM multiplier gradients are averaged too, a step is
    skipped on every rank if it is non-finite on any, logged values are rank means, and only rank 0 writes the
    log, the progress bar and checkpoints (``save_checkpoint`` must be called on every rank: it gathers the ranks'
    RNG states). The model starts from rank 0's parameters. ``seed`` is then needed (or taken from rank 0).
    """

    def __init__(
        self,
        model: nn.Module,
        losses: Mapping[str, Callable[[], Tensor]],
        weights: Mapping[str, Weight] | None = None,
        *,
        optimizer: torch.optim.Optimizer | None = None,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        schedule: str = "constant",
        total_steps: int | None = None,
        warmup_steps: int = 0,
        final_lr_factor: float = 0.0,
        scheduler: Any | None = None,
        clip_grad_norm: float | None = 100.0,
        constraints: Mapping[str, Constraint] | None = None,
        max_consecutive_skips: int | None = None,
        log_path: str | os.PathLike | None = None,
        log_every: int = 1,
        checkpoint_path: str | os.PathLike | None = None,
        checkpoint_every: int | None = None,
        progress: bool = True,
        seed: int | None = None,
        config: Mapping[str, Any] | None = None,
        find_unused_parameters: bool = False,
    ):
        if not losses:
            raise ValueError("Trainer needs at least one loss")
        weights = dict(weights or {})
        unknown = set(weights) - set(losses)
        if unknown:
            raise ValueError(f"weights given for unknown losses {sorted(unknown)}; losses are {sorted(losses)}")
        if log_every < 1 or (checkpoint_every is not None and checkpoint_every < 1):
            raise ValueError("log_every and checkpoint_every must be >= 1")
        self.config = dict(config or {})
        json.dumps(self.config)  # fail early if not JSON-serialisable
        self.rank, self.world_size = distributed.world()
        self._stream: distributed.SharedStream | None = None
        if self.world_size > 1:
            if seed is None:  # every rank needs the same seed for the shared draws: take rank 0's
                box = [int(torch.randint(2**62, (1,)))]
                torch.distributed.broadcast_object_list(box, src=0)
                seed = box[0]
            seed_everything(seed)
            device = next((p.device for p in model.parameters()), torch.device("cpu"))
            self._stream = distributed.SharedStream(self.rank, self.world_size, device)
            seed_everything(distributed.rank_seed(seed, self.rank))  # the rank's own stream
        elif seed is not None:
            seed_everything(seed)
        self.seed = seed

        self.model = model
        self.losses = dict(losses)
        self.weights: dict[str, Weight] = {name: weights.get(name, 1.0) for name in self.losses}
        self.constraints = dict(constraints or {})
        self._multipliers = [p for c in self.constraints.values() for p in c.parameters()]
        taken = {id(p) for p in self._multipliers}
        if optimizer is None:
            params = [p for p in model.parameters() if p.requires_grad and id(p) not in taken]
            optimizer = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
        self.optimizer = optimizer
        self._params = [p for g in optimizer.param_groups for p in g["params"] if id(p) not in taken]
        if scheduler is None:
            factor = _schedule_factor(schedule, warmup_steps, total_steps, final_lr_factor)
            scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        self.scheduler = scheduler
        self.clip_grad_norm = clip_grad_norm
        self.max_consecutive_skips = max_consecutive_skips
        self.log_path = Path(log_path) if log_path is not None else None
        self.log_every = log_every
        self.checkpoint_path = Path(checkpoint_path) if checkpoint_path is not None else None
        self.checkpoint_every = checkpoint_every
        self.progress = progress and self.rank == 0
        self._ddp: nn.Module | None = None
        self._synced = False
        if self.world_size > 1:
            from torch.nn.parallel import DistributedDataParallel

            device = next((p.device for p in model.parameters()), torch.device("cpu"))
            ids = [device] if device.type == "cuda" else None
            # the objective (all loss terms) is the DDP forward: the gradient hooks sit on the model's parameters
            self._ddp = DistributedDataParallel(
                _Objective(model, self), device_ids=ids, find_unused_parameters=find_unused_parameters
            )

        self.step = 0
        self._saved_at = -1
        self.n_skipped = 0
        self.consecutive_skips = 0
        self.elapsed = 0.0
        self.history: list[dict[str, Any]] = []

    # ------------------------------------------------------------------ training
    def _weight(self, name: str, step: int) -> float:
        w = self.weights[name]
        return float(w(step) if callable(w) else w)

    def _objective(self, weights: dict[str, float]) -> tuple[Tensor, dict[str, Tensor]]:
        """The step's total loss and the values to log (each loss with a non-zero weight, each constraint)."""
        step = self.step
        values: dict[str, Tensor] = {}
        total: Tensor | None = None
        for name, fn in self.losses.items():
            if weights[name] == 0.0:
                continue
            value = fn()
            if not isinstance(value, Tensor) or value.dim() != 0:
                raise ValueError(f"loss {name!r} must return a scalar tensor, got {getattr(value, 'shape', value)}")
            values[f"loss/{name}"] = value.detach()
            total = weights[name] * value if total is None else total + weights[name] * value
        for name, constraint in self.constraints.items():
            term = constraint()
            values[f"constraint/{name}"] = term.detach()
            total = term if total is None else total + term
        if total is None:
            raise ValueError(f"all loss weights are zero at step {step} and there are no constraints")
        return total, values

    def _step(self) -> tuple[bool, dict[str, Tensor], dict[str, float], float]:
        """One optimisation step; returns (ok, tensors to log, weights, lr used)."""
        step = self.step
        lr = float(self.optimizer.param_groups[0]["lr"])
        self.optimizer.zero_grad(set_to_none=True)
        for p in self._multipliers:
            p.grad = None

        weights = {name: self._weight(name, step) for name in self.losses}
        if self._ddp is not None:
            self._weights_now = weights
            total, values = self._ddp()
        else:
            total, values = self._objective(weights)
        total.backward()
        if self._ddp is not None:
            for p in self._multipliers:  # multipliers are not DDP parameters: average their gradients by hand
                if p.grad is not None:
                    torch.distributed.all_reduce(p.grad)
                    p.grad /= self.world_size

        max_norm = float("inf") if self.clip_grad_norm is None else self.clip_grad_norm
        grad_norm = torch.nn.utils.clip_grad_norm_(self._params, max_norm)
        finite = torch.isfinite(total.detach()) & torch.isfinite(grad_norm)
        for p in self._multipliers:
            if p.grad is not None:
                finite = finite & torch.isfinite(p.grad).all()
        if self._ddp is not None:  # skip on every rank if any rank saw a non-finite value
            flag = finite.to(torch.float32).reshape(1)
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MIN)
            finite = flag[0] > 0
        ok = bool(finite)  # the one host sync per step: the skip decision
        if ok:
            self.optimizer.step()
            if self._ddp is not None and not self._synced:
                # data-dependent initialisation (ActNorm) on the first step saw each rank's own slice: from here on
                # every rank holds rank 0's parameters and buffers
                with torch.no_grad():
                    for t in [*self.model.parameters(), *self.model.buffers()]:
                        torch.distributed.broadcast(t.data, src=0)
                self._synced = True
            with torch.no_grad():
                for constraint in self.constraints.values():
                    for p in constraint.parameters():
                        if p.grad is not None:
                            p.add_(p.grad, alpha=float(constraint.lr))  # gradient ascent on the multipliers
        else:
            self.optimizer.zero_grad(set_to_none=True)
        for p in self._multipliers:
            p.grad = None
        with warnings.catch_warnings():
            # the schedule follows the global step, also across skipped (non-stepped) optimizer steps
            warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step")
            self.scheduler.step()

        values["total"] = total.detach()
        values["grad_norm"] = grad_norm.detach()
        # diagnostics of the losses evaluated this step (e.g. batch ESS) and of the constraints
        evaluated = [(name, fn) for name, fn in self.losses.items() if weights[name] != 0.0]
        for name, obj in evaluated + list(self.constraints.items()):
            log_values = getattr(obj, "log_values", None)
            if callable(log_values):
                for key, v in log_values().items():
                    values[f"{name}/{key}"] = v.detach()
        return ok, values, weights, lr

    def _record(self, step: int, ok: bool, values: dict[str, Tensor], weights: dict[str, float], lr: float) -> dict:
        keys = list(values)
        ref = values["total"]
        numbers = torch.stack([values[k].to(device=ref.device, dtype=torch.float64).reshape(()) for k in keys])
        if self.world_size > 1:  # rank means (gloo reduces on CPU, nccl on the device)
            numbers = numbers.cpu() if ref.device.type == "cpu" else numbers
            torch.distributed.all_reduce(numbers)
            numbers = numbers / self.world_size
        record: dict[str, Any] = {"step": step}
        record.update({f"loss/{name}": None for name in self.losses})
        record.update(zip(keys, numbers.tolist()))
        record.update({f"weight/{name}": w for name, w in weights.items()})
        record.update(
            lr=lr, skipped=not ok, n_skipped=self.n_skipped, time=time.time(), elapsed=self.elapsed + self._t_run()
        )
        return record

    def _t_run(self) -> float:
        return time.perf_counter() - self._t0

    def train(self, n_steps: int) -> list[dict[str, Any]]:
        """Run ``n_steps`` more steps from the current global step; return the metrics history."""
        self.model.train()
        self._t0 = time.perf_counter()
        end = self.step + n_steps
        log_file = None
        if self.log_path is not None and self.rank == 0:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            log_file = open(self.log_path, "a", encoding="utf-8")  # noqa: SIM115
        bar = tqdm(total=n_steps, disable=not self.progress, mininterval=0.5, dynamic_ncols=True, desc="train")
        try:
            with distributed.using(self._stream):
                self._loop(end, bar, log_file)
        finally:
            bar.close()
            if log_file is not None:
                log_file.close()
            self.elapsed += self._t_run()
        if self.checkpoint_path is not None and n_steps > 0 and self._saved_at != self.step:
            self.save_checkpoint(self.checkpoint_path)
        return self.history

    def _loop(self, end: int, bar, log_file) -> None:
        self._saved_at = -1
        while self.step < end:
            step = self.step
            ok, values, weights, lr = self._step()
            self.step += 1
            if ok:
                self.consecutive_skips = 0
            else:
                self.n_skipped += 1
                self.consecutive_skips += 1
            if not ok or step % self.log_every == 0 or self.step == end:
                record = self._record(step, ok, values, weights, lr)
                self.history.append(record)
                if log_file is not None:
                    log_file.write(json.dumps(record) + "\n")
                    log_file.flush()
                bar.set_postfix(_postfix(record), refresh=False)
            bar.update(1)
            if not ok:
                bad = [k for k, v in values.items() if not torch.isfinite(v).all()]
                msg = f"step {step}: non-finite {', '.join(bad)}; optimizer step skipped ({self.n_skipped} total)"
                warnings.warn(msg, RuntimeWarning, stacklevel=3)
                if self.max_consecutive_skips is not None and self.consecutive_skips >= self.max_consecutive_skips:
                    raise RuntimeError(
                        f"{self.consecutive_skips} consecutive non-finite steps (last at step {step}: "
                        f"{', '.join(bad)}); stopping. Lower the learning rate, clip gradients or check the losses."
                    )
            if self.checkpoint_path and self.checkpoint_every and self.step % self.checkpoint_every == 0:
                self.save_checkpoint(self.checkpoint_path)
                self._saved_at = self.step

    # --------------------------------------------------------------- checkpoints
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume exactly (model, optimizer, scheduler, multipliers, RNG states, counters, and
        the state of losses that keep one, such as FAB's replay buffer)."""
        return {
            "step": self.step,
            "n_skipped": self.n_skipped,
            "consecutive_skips": self.consecutive_skips,
            "elapsed": self.elapsed,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "constraints": {name: c.state_dict() for name, c in self.constraints.items()},
            "rng": rng_state(),
            "config": self.config,
            "history": list(self.history),
            "losses": self._loss_states(),
            **({"distributed": self._distributed_state()} if self._stream is not None else {}),
        }

    def _loss_states(self) -> dict[str, Any]:
        """The state of every loss that has one (``state_dict``/``load_state_dict``, e.g. FAB's replay buffer)."""
        return {
            name: fn.state_dict()
            for name, fn in self.losses.items()
            if callable(getattr(fn, "state_dict", None)) and callable(getattr(fn, "load_state_dict", None))
        }

    def _distributed_state(self) -> dict[str, Any]:
        """The shared stream and every rank's own RNG states (a collective: all ranks call it)."""
        ranks: list[Any] = [None] * self.world_size
        torch.distributed.all_gather_object(ranks, rng_state())
        losses: list[Any] = [None] * self.world_size  # per-rank loss states (FAB keeps one buffer per rank)
        torch.distributed.all_gather_object(losses, self._loss_states())
        return {"world_size": self.world_size, "seed": self.seed, "shared": self._stream.state_dict(), "ranks": ranks,
                "losses": losses}  # fmt: skip

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a :meth:`state_dict`, including the global RNG states."""
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        for name, c in self.constraints.items():
            c.load_state_dict(state["constraints"][name])
        self.step = int(state["step"])
        self.n_skipped = int(state["n_skipped"])
        self.consecutive_skips = int(state.get("consecutive_skips", 0))
        self.elapsed = float(state.get("elapsed", 0.0))
        self.history = list(state.get("history", []))
        if state.get("config", {}) != self.config:
            warnings.warn("checkpoint config differs from this trainer's config", UserWarning, stacklevel=2)
        losses = state.get("losses", {})
        saved = state.get("distributed")
        if saved is not None and self._stream is not None and saved["world_size"] == self.world_size:
            losses = saved.get("losses", [losses] * self.world_size)[self.rank]
        for name, loss_state in losses.items():
            if name in self.losses and callable(getattr(self.losses[name], "load_state_dict", None)):
                self.losses[name].load_state_dict(loss_state)
        self._load_rng(state)

    def _load_rng(self, state: Mapping[str, Any]) -> None:
        """Restore the RNG states; a checkpoint of another world size continues the shared draws exactly."""
        saved = state.get("distributed")
        if self._stream is None:  # one process: its global stream is what the ranks shared
            set_rng_state(state["rng"])
            if saved is not None:
                torch.set_rng_state(saved["shared"]["cpu"].cpu())
            return
        if saved is not None and saved["world_size"] == self.world_size:
            set_rng_state(saved["ranks"][self.rank])
            self._stream.load_state_dict(saved["shared"])
            return
        if saved is not None:
            shared = saved["shared"]
        else:
            shared = {"cpu": state["rng"]["torch"]}
        self._stream.load_state_dict(shared)
        seed_everything(distributed.rank_seed(self.seed, self.rank) + self.step)
        if self.rank == 0:
            warnings.warn(
                f"resuming a {saved['world_size'] if saved else 1}-process checkpoint on {self.world_size} ranks: "
                "the data and latent draws continue exactly, the ranks' own RNG streams are reseeded",
                UserWarning,
                stacklevel=3,
            )

    def save_checkpoint(self, path: str | os.PathLike) -> None:
        """Write :meth:`state_dict` as a ``"trainer"`` checkpoint (:mod:`bgflow_sci.io.checkpoints`, atomic).

        Distributed: call on every rank; rank 0 writes, the others wait until the file is complete."""
        state = self.state_dict()
        if self.rank == 0:
            save_checkpoint(path, "trainer", state)
        if self.world_size > 1:
            torch.distributed.barrier()

    def load_checkpoint(self, path: str | os.PathLike) -> None:
        """Resume from :meth:`save_checkpoint` output.

        Loaded with ``weights_only=True`` (plain types and tensors only: a foreign file cannot run code; a corrupt
        one raises :class:`~bgflow_sci.io.CheckpointError` naming it). Tensors are mapped to CPU first and copied
        to the model's and optimizer's devices.
        """
        self.load_state_dict(load_checkpoint(path, "trainer"))


class _Objective(nn.Module):
    """The trainer's objective as a module whose ``forward()`` computes the step's loss terms: the one forward
    that ``DistributedDataParallel`` wraps (the model is its submodule, so DDP hooks the model's parameters)."""

    def __init__(self, model: nn.Module, trainer: Trainer):
        super().__init__()
        self.model = model
        self._trainer = [trainer]  # a list: not a submodule, no reference cycle through nn.Module registration

    def forward(self) -> tuple[Tensor, dict[str, Tensor]]:
        trainer = self._trainer[0]
        return trainer._objective(trainer._weights_now)


def _postfix(record: Mapping[str, Any]) -> dict[str, str]:
    keys = [k for k in record if k.startswith(("loss/", "constraint/"))] + ["total"]
    out = {k.split("/", 1)[-1]: f"{record[k]:.4g}" for k in keys if record.get(k) is not None}
    if record.get("skipped"):
        out["skipped"] = str(record["n_skipped"])
    return out


# ------------------------------------------------------------------- metrics
def read_metrics(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Read a JSON-lines metrics log; for steps logged more than once (a resumed run) the last record wins."""
    by_step: dict[int, dict[str, Any]] = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                record = json.loads(line)
                by_step[record["step"]] = record
    return [by_step[s] for s in sorted(by_step)]
