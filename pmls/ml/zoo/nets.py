"""What the torch families share: input encoding, seeded layers, the training loop, persistence.

Determinism without global state: every random draw (weight init, shuffling, dropout) comes from one
local ``torch.Generator`` seeded by ``seed``, so two fits in two threads of one worker cannot disturb
each other. Threads: ``torch.set_num_threads`` is process-wide, so ``num_threads`` is NOT applied
here; the worker process sets torch's thread count once at start-up.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from pmls.contracts import Task
from pmls.ml.zoo.base import Callback, FitData, ZooModel, settings

WEIGHTS_FILE = "model.safetensors"
PREDICT_CHUNK = 8192


def embedding_dim(cardinality: int) -> int:
    return min(16, (cardinality + 1) // 2 + 1)


class InputEncoder:
    """Standardises numeric columns, flags their NaNs, maps categorical codes (last axis of X).

    NaN becomes 0 after standardising (the training mean); columns that had NaN in training get a
    missing-indicator input. Categorical codes outside 0..card-1 (NaN, unseen) map to index ``card``.
    """

    def __init__(self, numeric, means, stds, flagged, categorical: dict[int, int]) -> None:
        self.numeric = list(numeric)
        self.means = np.asarray(means, dtype=np.float64)
        self.stds = np.asarray(stds, dtype=np.float64)
        self.flagged = list(flagged)  # numeric columns that get a missing indicator
        self.categorical = dict(categorical)

    @classmethod
    def fit(cls, rows: np.ndarray, categorical: dict[int, int]) -> InputEncoder:
        """``rows``: 2-D training rows (padding steps already removed)."""
        numeric = [j for j in range(rows.shape[1]) if j not in categorical]
        values = rows[:, numeric].astype(np.float64)
        values[~np.isfinite(values)] = np.nan
        seen = ~np.isnan(values).all(axis=0)
        means = np.zeros(len(numeric))
        stds = np.ones(len(numeric))
        if seen.any():  # an all-missing column keeps mean 0 / std 1
            means[seen] = np.nanmean(values[:, seen], axis=0)
            spread = np.nanstd(values[:, seen], axis=0)
            stds[seen] = np.where(spread > 0, spread, 1.0)
        flagged = [numeric[i] for i in np.flatnonzero(np.isnan(values).any(axis=0))]
        return cls(numeric, means, stds, flagged, categorical)

    @property
    def n_numeric(self) -> int:
        return len(self.numeric) + len(self.flagged)

    def numeric_inputs(self, X: np.ndarray) -> torch.Tensor:
        z = (X[..., self.numeric].astype(np.float64) - self.means) / self.stds
        z[~np.isfinite(z)] = 0.0
        missing = ~np.isfinite(X[..., self.flagged])
        return torch.from_numpy(np.concatenate([z, missing], axis=-1).astype(np.float32))

    def codes(self, X: np.ndarray) -> torch.Tensor:
        cols = list(self.categorical)
        cards = np.array([self.categorical[j] for j in cols], dtype=np.float64)
        raw = X[..., cols].astype(np.float64)
        with np.errstate(invalid="ignore"):
            valid = np.isfinite(raw) & (raw >= 0) & (raw < cards)
        return torch.from_numpy(np.where(valid, np.nan_to_num(raw), cards).astype(np.int64))

    def to_dict(self) -> dict:
        return {
            "numeric": self.numeric,
            "means": self.means.tolist(),
            "stds": self.stds.tolist(),
            "flagged": self.flagged,
            "categorical": {str(k): v for k, v in self.categorical.items()},
        }

    @classmethod
    def from_dict(cls, data: dict) -> InputEncoder:
        cats = {int(k): int(v) for k, v in data["categorical"].items()}
        return cls(data["numeric"], data["means"], data["stds"], data["flagged"], cats)


class SeededDropout(nn.Module):
    """Dropout drawing its mask from the model's own generator instead of torch's global one."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = float(p)
        self.generator: torch.Generator | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p <= 0:
            return x
        keep = torch.rand(x.shape, generator=self.generator) >= self.p
        return x * keep / (1.0 - self.p)


class InputLayer(nn.Module):
    """Numeric inputs, then one embedding per categorical column (index ``card`` = missing/unseen)."""

    def __init__(self, n_numeric: int, cards: Sequence[int]) -> None:
        super().__init__()
        self.embeddings = nn.ModuleList(nn.Embedding(card + 1, embedding_dim(card)) for card in cards)
        self.out_dim = n_numeric + sum(embedding_dim(card) for card in cards)

    def forward(self, numeric: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        parts = [numeric] + [emb(codes[..., j]) for j, emb in enumerate(self.embeddings)]
        return torch.cat(parts, dim=-1)


@torch.no_grad()
def seed_net(net: nn.Module, generator: torch.Generator) -> None:
    """Re-draw every parameter (torch's default ranges) and hand the generator to the dropouts."""
    for module in net.modules():
        if isinstance(module, nn.Linear):
            bound = 1.0 / math.sqrt(module.in_features)
            for param in module.parameters():
                param.uniform_(-bound, bound, generator=generator)
        elif isinstance(module, nn.LSTM):
            bound = 1.0 / math.sqrt(module.hidden_size)
            for param in module.parameters():
                param.uniform_(-bound, bound, generator=generator)
        elif isinstance(module, nn.Embedding):
            module.weight.normal_(0.0, 1.0, generator=generator)
        elif isinstance(module, SeededDropout):
            module.generator = generator


def weighted_loss(task: Task, out: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None):
    """Cross-entropy (classification) or MSE on the standardised target, weighted per row."""
    if task is Task.REGRESSION:
        losses = (out.squeeze(-1) - target) ** 2
    else:
        losses = F.cross_entropy(out, target, reduction="none")
    if weight is None:
        return losses.mean()
    return (losses * weight).sum() / weight.sum().clamp_min(1e-12)


@dataclass
class Split:
    """One split as tensors: the net's inputs, the target (standardised for regression), weights."""

    inputs: tuple[torch.Tensor, ...]
    target: torch.Tensor
    weight: torch.Tensor | None = None


@dataclass
class Loop:
    learning_rate: float
    weight_decay: float
    batch_size: int
    max_epochs: int
    patience: int


@torch.no_grad()
def forward_in_chunks(net: nn.Module, inputs: Sequence[torch.Tensor]) -> torch.Tensor:
    net.eval()
    n = len(inputs[0])
    outs = [net(*(t[i : i + PREDICT_CHUNK] for t in inputs)) for i in range(0, n, PREDICT_CHUNK)]
    return torch.cat(outs)


def _epoch(net, task, train: Split, loop: Loop, optimiser, generator) -> None:
    net.train()
    for idx in torch.randperm(len(train.target), generator=generator).split(loop.batch_size):
        optimiser.zero_grad()
        weight = None if train.weight is None else train.weight[idx]
        out = net(*(t[idx] for t in train.inputs))
        weighted_loss(task, out, train.target[idx], weight).backward()
        optimiser.step()


def train_net(
    net, task: Task, train: Split, valid: Split | None, loop: Loop, callbacks: Sequence[Callback], generator
) -> int:
    """Adam for up to max_epochs; with a validation split, stop after ``patience`` epochs without
    improvement and restore the best weights. Returns the epochs the final weights had."""
    optimiser = torch.optim.Adam(net.parameters(), lr=loop.learning_rate, weight_decay=loop.weight_decay)
    best_loss, best_state, best_epoch, stale = math.inf, None, loop.max_epochs, 0
    for epoch in range(1, loop.max_epochs + 1):
        _epoch(net, task, train, loop, optimiser, generator)
        loss = None
        if valid is not None:
            loss = float(weighted_loss(task, forward_in_chunks(net, valid.inputs), valid.target, None))
        for hook in callbacks:  # never caught: cancellation and pruning stop the loop here
            hook(epoch, loop.max_epochs, loss)
        if loss is None:
            continue
        if loss < best_loss:
            best_loss, best_epoch, stale = loss, epoch, 0
            best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
        else:
            stale += 1
            if stale >= loop.patience:
                break
    if best_state is not None:
        net.load_state_dict(best_state)
    net.eval()
    return best_epoch


class TorchModel(ZooModel):
    """The fit / predict / save logic of the torch families; subclasses build the net and its inputs."""

    DEFAULTS: dict = {}

    def fit(self, X, y, *, X_valid=None, y_valid=None, sample_weight=None, categorical=None, callbacks=()):
        data = self._fit_data(X, y, X_valid, y_valid, sample_weight, categorical)
        config = settings(self.params, self.DEFAULTS, self.model_type)
        self.encoder_ = InputEncoder.fit(self._encoder_rows(data.X), data.categorical)
        self.target_scale_ = _target_scale(data) if self.task is Task.REGRESSION else (0.0, 1.0)
        generator = torch.Generator().manual_seed(int(self.seed))
        self.net_ = self._build_net(config, self._n_out(data.n_classes))
        seed_net(self.net_, generator)
        train = self._split(data.X, data.y, data.weight)
        valid = None if data.X_valid is None else self._split(data.X_valid, data.y_valid, None)
        best = train_net(self.net_, self.task, train, valid, _loop(config), callbacks, generator)
        self._finish_fit(data, None, best)
        return self

    def _n_out(self, n_classes: int | None) -> int:
        return 1 if n_classes is None else n_classes

    def _split(self, X: np.ndarray, y: np.ndarray, weight: np.ndarray | None) -> Split:
        mean, std = self.target_scale_
        target = (
            torch.from_numpy((y - mean) / std).float()
            if self.task is Task.REGRESSION
            else torch.from_numpy(y)
        )
        return Split(self._inputs(X), target, None if weight is None else torch.from_numpy(weight).float())

    def _raw(self, X: np.ndarray) -> np.ndarray:
        out = forward_in_chunks(self.net_, self._inputs(X)).double()
        if self.task is Task.REGRESSION:
            mean, std = self.target_scale_
            return (out.squeeze(-1) * std + mean).numpy()
        return torch.softmax(out, dim=-1).numpy()

    def _state(self) -> dict:
        return {"encoder": self.encoder_.to_dict(), "target_scale": list(self.target_scale_)}

    def _save_state(self, directory: Path) -> None:
        save_file({k: v.contiguous() for k, v in self.net_.state_dict().items()}, directory / WEIGHTS_FILE)

    def _load_state(self, directory: Path, state: dict) -> None:
        self.encoder_ = InputEncoder.from_dict(state["encoder"])
        self.target_scale_ = tuple(state["target_scale"])
        config = settings(self.params, self.DEFAULTS, self.model_type)
        self.net_ = self._build_net(config, self._n_out(self.n_classes_))
        self.net_.load_state_dict(load_file(directory / WEIGHTS_FILE))
        self.net_.eval()

    # --- family hooks ---

    def _encoder_rows(self, X: np.ndarray) -> np.ndarray:
        return X

    def _inputs(self, X: np.ndarray) -> tuple[torch.Tensor, ...]:
        return self.encoder_.numeric_inputs(X), self.encoder_.codes(X)

    def _build_net(self, config: dict, n_out: int) -> nn.Module:
        raise NotImplementedError


def _target_scale(data: FitData) -> tuple[float, float]:
    std = float(np.std(data.y))
    return float(np.mean(data.y)), std if std > 0 else 1.0


def _loop(config: dict) -> Loop:
    return Loop(
        learning_rate=float(config["learning_rate"]),
        weight_decay=float(config["weight_decay"]),
        batch_size=max(1, int(config["batch_size"])),
        max_epochs=max(1, int(config["max_epochs"])),
        patience=max(1, int(config["early_stopping_rounds"])),
    )
