"""A PyTorch LSTM over windows of past rows (see ``pmls.ml.sequences.build_sequences``).

X is (n, seq_len, features), left-padded: a time step whose features are all NaN is padding. Each
window is shifted to start at its first real step and packed with its length, so padding never
enters the recurrence; the prediction comes from the last layer's hidden state at the last real
step (row i itself). An all-NaN step after the first real one is kept, as a step with every value
missing. Numeric standardisation, missing flags and embeddings work per step, as in the MLP.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from pmls.contracts import ModelType
from pmls.ml.zoo.base import choice, float_range, int_range
from pmls.ml.zoo.nets import InputLayer, SeededDropout, TorchModel

DEFAULTS: dict = {
    "hidden_size": 64,
    "num_layers": 1,
    "dropout": 0.0,  # between stacked layers and before the output layer
    "learning_rate": 3e-3,
    "weight_decay": 0.0,
    "batch_size": 128,
    "max_epochs": 100,
    "early_stopping_rounds": 10,
}
DEFAULT_SPACE = {
    "hidden_size": int_range(16, 256, log=True),
    "num_layers": int_range(1, 3),
    "dropout": float_range(0.0, 0.5),
    "learning_rate": float_range(1e-4, 1e-2, log=True),
    "batch_size": choice(64, 128, 256, 512),
}
KNOWN_PARAMS = frozenset(DEFAULTS)


def right_align(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Left-padded windows -> (windows starting at their first real step, lengths >= 1)."""
    n, steps, _ = X.shape
    real = ~np.isnan(X).all(axis=2)
    # A window with no real step (row i itself all NaN) keeps one step, read as all-missing.
    first = np.where(real.any(axis=1), real.argmax(axis=1), steps - 1)
    lengths = steps - first
    idx = np.arange(steps)[None, :] + first[:, None]
    inside = idx < steps
    shifted = np.take_along_axis(X, np.minimum(idx, steps - 1)[:, :, None], axis=1)
    shifted[~inside] = 0.0  # beyond the length: never read by the packed LSTM
    return shifted, lengths


class LSTMNet(nn.Module):
    def __init__(
        self, n_numeric: int, cards: list[int], hidden_size: int, num_layers: int, dropout: float, n_out: int
    ):
        super().__init__()
        self.inputs = InputLayer(n_numeric, cards)
        # Single-layer LSTMs stacked by hand, so the dropout between them uses our seeded generator.
        widths = [self.inputs.out_dim] + [hidden_size] * (num_layers - 1)
        self.layers = nn.ModuleList(nn.LSTM(width, hidden_size, batch_first=True) for width in widths)
        self.dropout = SeededDropout(dropout)
        self.head = nn.Linear(hidden_size, n_out)

    def forward(self, numeric, codes, lengths):
        x = self.inputs(numeric, codes)
        packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        for i, layer in enumerate(self.layers):
            if i:
                packed = packed._replace(data=self.dropout(packed.data))
            packed, (hidden, _) = layer(packed)
        return self.head(self.dropout(hidden[-1]))  # hidden is back in batch order


class LSTMModel(TorchModel):
    model_type = ModelType.LSTM
    sequential = True
    DEFAULTS = DEFAULTS

    def _encoder_rows(self, X: np.ndarray) -> np.ndarray:
        rows = X.reshape(-1, X.shape[-1])
        return rows[~np.isnan(rows).all(axis=1)]  # statistics over real steps, never padding

    def _inputs(self, X: np.ndarray) -> tuple[torch.Tensor, ...]:
        shifted, lengths = right_align(X)
        return self.encoder_.numeric_inputs(shifted), self.encoder_.codes(shifted), torch.from_numpy(lengths)

    def _build_net(self, config: dict, n_out: int) -> nn.Module:
        return LSTMNet(
            self.encoder_.n_numeric,
            list(self.encoder_.categorical.values()),
            int(config["hidden_size"]),
            max(1, int(config["num_layers"])),
            float(config["dropout"]),
            n_out,
        )
