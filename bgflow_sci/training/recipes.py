"""Standard training recipes built from the one :class:`Trainer`."""

from __future__ import annotations

from typing import Any

from ..energies import Energy
from .batches import BatchData
from .losses import MaximumLikelihood, ReverseKL
from .trainer import Trainer


def ml_then_kl(
    bg,
    data: BatchData,
    ml_steps: int,
    kl_steps: int,
    batch_size: int = 256,
    kl_batch_size: int | None = None,
    ml_anchor: float = 0.2,
    energy_cutoff: float | None = None,
    lr: float = 1e-3,
    schedule: str = "cosine",
    kl_target: Energy | None = None,
    kl_gradient: str = "total",
    **trainer_kwargs: Any,
) -> Trainer:
    """Boltzmann-generator training of Noé et al. 2019: maximum likelihood on data, then reverse KL.

    Steps ``[0, ml_steps)`` minimise ``-log q(x_data)``; steps ``[ml_steps, ml_steps + kl_steps)`` minimise
    ``E_q[u(x) + log q(x)] + ml_anchor * (-log q(x_data))`` (the anchor keeps the flow from dropping
    metastable states that reverse KL alone would lose).  ``kl_target`` replaces ``u`` in the KL term (e.g. a
    :class:`~bgflow_sci.energies.BiasedEnergy` that lifts a rare basin; the generator's exact target still gives the
    importance weights).  ``data`` is a tensor of samples or any batch source of
    :func:`~bgflow_sci.training.batches.as_batch_source` (as :class:`MaximumLikelihood` takes it).  Returns the
    :class:`Trainer` (call ``train``). ``kl_gradient``: the reverse-KL gradient estimator, ``"total"`` or ``"path"``
    (:class:`ReverseKL`).
    """
    losses = {"ml": MaximumLikelihood(bg, data, batch_size)}
    if kl_steps > 0:
        losses["kl"] = ReverseKL(
            bg, kl_batch_size or batch_size, energy_cutoff=energy_cutoff, target=kl_target, gradient=kl_gradient
        )
    weights = {"ml": lambda step: 1.0 if step < ml_steps else ml_anchor}
    if kl_steps > 0:
        weights["kl"] = lambda step: 0.0 if step < ml_steps else 1.0
    return Trainer(
        bg, losses=losses, weights=weights, lr=lr, total_steps=ml_steps + kl_steps, schedule=schedule, **trainer_kwargs
    )
