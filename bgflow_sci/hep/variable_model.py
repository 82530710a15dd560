"""Conditional flows over named physics variables: the machinery shared by the HEP density and morphing models.

:class:`VariableModel` holds a conditional masked-autoregressive flow (:func:`conditional_autoregressive_flow`: affine
or rational-quadratic spline transformers with permutations in between, identity at initialisation) together with
the :class:`~bgflow_sci.hep.preprocessing.PhysicsPreprocessor` of its variables and context and their names (inputs
are checked against them), and saves/loads the whole.  :class:`~bgflow_sci.hep.morphing.MorphingFlow` and
:class:`~bgflow_sci.hep.quantile_flow.ConditionalDensityFlow` build on it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..flows import Affine, Domain, Flow, MaskedAutoregressive, Permutation, RationalQuadraticSpline, Sequential
from ..io.checkpoints import CheckpointError, load_checkpoint, save_checkpoint
from .preprocessing import PhysicsPreprocessor

__all__ = ["VariableModel", "conditional_autoregressive_flow"]


def conditional_autoregressive_flow(
    dim: int,
    n_layers: int = 4,
    *,
    context_dim: int = 0,
    transformer: str = "affine",
    hidden: Sequence[int] = (64, 64),
    mode: str = "iaf",
    n_bins: int = 8,
    bound: float = 5.0,
    scale_bound: float = 3.0,
    seed: int = 0,
) -> Sequential:
    """Chain ``MaskedAutoregressive → Permutation → … → MaskedAutoregressive → Permutation⁻¹(accumulated)``.

    ``n_layers`` counts the autoregressive transforms (the permutations between them are not counted), the factory
    convention of :mod:`bgflow_sci.flows.realnvp`.

    ``transformer``: ``"affine"`` (the paper's MAF chain) or ``"spline"`` (rational-quadratic, ``n_bins`` bins on
    ``[-bound, bound]``, identity tails).  ``mode="iaf"`` makes ``forward`` one pass (morphing), ``"maf"`` makes
    ``inverse`` one pass (density evaluation).  Starts as the identity map.
    """
    if dim < 1 or n_layers < 1:
        raise ValueError(f"dim and n_layers must be >= 1, got {dim}, {n_layers}")
    if transformer not in ("affine", "spline"):
        raise ValueError(f"transformer must be 'affine' or 'spline', got {transformer!r}")
    layers: list[nn.Module] = []
    total = torch.arange(dim)  # y[:, i] = x[:, total[i]] after the permutations so far
    gen = torch.Generator().manual_seed(seed)
    for i in range(n_layers):
        tau = (
            Affine(scale_bound)
            if transformer == "affine"
            else RationalQuadraticSpline(Domain.real(), n_bins=n_bins, bound=bound)
        )
        layers.append(MaskedAutoregressive(dim, tau, hidden, context_dim, mode=mode))
        if i < n_layers - 1 and dim > 1:
            perm = torch.flip(torch.arange(dim), [0]) if i % 2 == 0 else torch.randperm(dim, generator=gen)
            layers.append(Permutation(dim, perm))
            total = total[perm]
    if dim > 1 and not torch.equal(total, torch.arange(dim)):
        layers.append(Permutation(dim, torch.argsort(total)))
    return Sequential(*layers)


def _to_tensor(x: Any, name: str, dtype: torch.dtype, device: torch.device) -> Tensor:
    t = x if isinstance(x, Tensor) else torch.as_tensor(np.asarray(x, dtype=np.float64))
    return t.to(dtype=dtype, device=device)


def _weights(w: Any, n: int, name: str, like: Tensor) -> Tensor | None:
    if w is None:
        return None
    t = _to_tensor(w, name, like.dtype, like.device)
    if t.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},), got {tuple(t.shape)}")
    if not torch.isfinite(t).all() or not t.sum() > 0:
        raise ValueError(f"{name} must be finite with a positive total")
    return t


class VariableModel(nn.Module):
    """Base of the HEP flow models: named variables and context, their preprocessing, checks, save/load.

    Inputs are either ``{branch: (n,) array}`` mappings (columns picked by name; a missing variable raises a
    ``ValueError`` naming the expected ones) or ``(n, d)`` arrays/tensors, optionally with ``names`` /
    ``context_names`` which must equal the model's.
    """

    def __init__(
        self,
        names: Sequence[str],
        context_names: Sequence[str] = (),
        kinds: Sequence[Any] | None = None,
        context_kinds: Sequence[Any] | None = None,
    ):
        super().__init__()
        self.names = [str(n) for n in names]
        self.context_names = [str(n) for n in context_names]
        if not self.names or len(set(self.names)) != len(self.names):
            raise ValueError(f"names must be distinct and non-empty, got {self.names}")
        if len(set(self.context_names)) != len(self.context_names) or set(self.names) & set(self.context_names):
            raise ValueError(f"context names {self.context_names} must be distinct and differ from {self.names}")
        self.kinds = list(kinds) if kinds is not None else ["identity"] * len(self.names)
        self.context_kinds = list(context_kinds) if context_kinds is not None else ["identity"] * self.context_dim
        if len(self.kinds) != self.dim or len(self.context_kinds) != self.context_dim:
            raise ValueError(
                f"{len(self.kinds)} kinds for {self.dim} variables / {len(self.context_kinds)} for "
                f"{self.context_dim} context variables"
            )
        self.x_pre = PhysicsPreprocessor(self.kinds, self.names)
        self.c_pre = PhysicsPreprocessor(self.context_kinds, self.context_names) if self.context_dim else None

    def _build_flow(
        self,
        mode: str,
        transformer: str,
        n_layers: int,
        hidden: Sequence[int],
        n_bins: int,
        bound: float,
        scale_bound: float,
        seed: int,
    ) -> Flow:
        """Record the constructor settings in ``self._config`` (for save/load) and build the conditional flow."""
        self._config = dict(
            names=list(self.names),
            context_names=list(self.context_names),
            kinds=_kinds_config(self.kinds),
            context_kinds=_kinds_config(self.context_kinds),
            transformer=transformer,
            n_layers=n_layers,
            hidden=list(hidden),
            n_bins=n_bins,
            bound=bound,
            scale_bound=scale_bound,
            seed=seed,
        )
        return conditional_autoregressive_flow(
            self.dim,
            n_layers,
            context_dim=self.context_dim,
            transformer=transformer,
            hidden=hidden,
            mode=mode,
            n_bins=n_bins,
            bound=bound,
            scale_bound=scale_bound,
            seed=seed,
        )

    @property
    def dim(self) -> int:
        return len(self.names)

    @property
    def context_dim(self) -> int:
        return len(self.context_names)

    @property
    def _ref(self) -> Tensor:
        return next(p for p in self.parameters())

    # ------------------------------------------------------------------ inputs
    def _columns(self, x: Any, names: Sequence[str] | None, expected: list[str], what: str) -> Tensor:
        ref = self._ref
        if isinstance(x, Mapping):
            missing = [n for n in expected if n not in x]
            if missing:
                raise ValueError(f"{what}: variables {missing} missing; the model expects {expected}")
            cols = [_to_tensor(x[n], n, ref.dtype, ref.device).reshape(-1) for n in expected]
            return torch.stack(cols, 1) if cols else torch.zeros(0, 0, dtype=ref.dtype, device=ref.device)
        t = _to_tensor(x, what, ref.dtype, ref.device)
        if t.dim() == 1 and len(expected) == 1:
            t = t[:, None]
        if names is not None and list(names) != expected:
            raise ValueError(f"{what}: mismatched variables: the model expects {expected}, got {list(names)}")
        if t.dim() != 2 or t.shape[1] != len(expected):
            raise ValueError(
                f"{what} must have shape (n, {len(expected)}) for variables {expected}, got {tuple(t.shape)}"
            )
        return t

    def inputs(
        self,
        x: Any,
        context: Any = None,
        names: Sequence[str] | None = None,
        context_names: Sequence[str] | None = None,
    ) -> tuple[Tensor, Tensor | None]:
        """Physical ``(x (n, d), c (n, k) or None)`` tensors in the model's dtype/device, checked against the names.

        With a mapping ``x`` and ``context=None`` the context columns are taken from ``x`` too.
        """
        xt = self._columns(x, names, self.names, "x")
        if not self.context_dim:
            if context is not None and not isinstance(x, Mapping):
                raise ValueError("this model takes no context, but a context was given")
            return xt, None
        if context is None:
            if not isinstance(x, Mapping):
                raise ValueError(f"this model needs context variables {self.context_names}")
            context = x
        ct = self._columns(context, context_names, self.context_names, "context")
        if len(ct) != len(xt):
            raise ValueError(f"context has {len(ct)} rows, x has {len(xt)}")
        return xt, ct

    def fit_preprocessing(self, x: Tensor, context: Tensor | None = None, weights: Any = None, seed: int = 0):
        """Fit the variable (and context) preprocessing on physical ``x (n, d)``, ``context (n, k)``."""
        w = None if weights is None else np.asarray(torch.as_tensor(weights).detach().cpu(), dtype=np.float64)
        self.x_pre.fit(x.detach().double().cpu(), w, seed=seed)
        if self.c_pre is not None:
            self.c_pre.fit(context.detach().double().cpu(), w, seed=seed)
        return self

    def copy_preprocessing(self, other: VariableModel) -> None:
        """Use ``other``'s fitted preprocessing (same variables required)."""
        if other.names != self.names or other.context_names != self.context_names:
            raise ValueError(f"mismatched variables: {other.names}|{other.context_names} vs {self.names}")
        self.x_pre.load_state_dict(other.x_pre.state_dict())
        if self.c_pre is not None:
            self.c_pre.load_state_dict(other.c_pre.state_dict())

    def preprocess(self, x: Tensor, context: Tensor | None, generator: torch.Generator | None = None):
        """Physical ``(x, c)`` -> flow coordinates ``(y, c̃)``."""
        y = self.x_pre(x, generator=generator)
        c = None if self.c_pre is None else self.c_pre(context, generator=generator)
        return y, c

    # --------------------------------------------------------------- save/load
    def config(self) -> dict[str, Any]:
        """Constructor arguments (plain Python values) stored with the weights."""
        raise NotImplementedError

    def save(self, path: str | os.PathLike) -> Path:
        """A checkpoint of kind ``"variable_model"`` (:mod:`bgflow_sci.io`): class name, constructor ``config``
        (variable names and preprocessing included) and weights, written atomically."""
        state = {k: v.detach().cpu() for k, v in self.state_dict().items()}
        return save_checkpoint(
            path, "variable_model", {"class": type(self).__name__, "config": self.config(), "state_dict": state}
        )

    @classmethod
    def load(cls, path: str | os.PathLike, map_location: Any = "cpu"):
        """Rebuild a model written by :meth:`save` (``weights_only`` loading: no code is executed); a corrupt or
        foreign file raises :class:`~bgflow_sci.io.CheckpointError` naming it."""
        blob = load_checkpoint(path, "variable_model", map_location=map_location)
        if blob.get("class") != cls.__name__:
            raise CheckpointError(f"{str(path)!r} holds a {blob.get('class')!r}, not a {cls.__name__}")
        model = cls(**blob["config"])
        model.load_state_dict(blob["state_dict"])
        return model


def _kinds_config(kinds: Sequence[Any]) -> list[Any]:
    return [k if isinstance(k, str) else list(k) for k in kinds]


# ------------------------------------------------------------------------------------------------- the model
