"""A PyTorch MLP for tabular rows: standardised numerics, missing flags, categorical embeddings."""

from __future__ import annotations

from torch import nn

from pmls.contracts import ModelType
from pmls.ml.zoo.base import choice, float_range, int_range
from pmls.ml.zoo.nets import InputLayer, SeededDropout, TorchModel

DEFAULTS: dict = {
    "hidden_size": 128,
    "num_layers": 2,
    "dropout": 0.1,
    "learning_rate": 1e-3,
    "weight_decay": 1e-5,
    "batch_size": 128,
    "max_epochs": 200,
    "early_stopping_rounds": 10,  # epochs without validation improvement
}
DEFAULT_SPACE = {
    "hidden_size": int_range(32, 512, log=True),
    "num_layers": int_range(1, 4),
    "dropout": float_range(0.0, 0.5),
    "learning_rate": float_range(1e-4, 1e-2, log=True),
    "weight_decay": float_range(1e-6, 1e-2, log=True),
    "batch_size": choice(64, 128, 256, 512),
}
KNOWN_PARAMS = frozenset(DEFAULTS)


class MLPNet(nn.Module):
    def __init__(
        self, n_numeric: int, cards: list[int], hidden_size: int, num_layers: int, dropout: float, n_out: int
    ):
        super().__init__()
        self.inputs = InputLayer(n_numeric, cards)
        layers: list[nn.Module] = []
        width = self.inputs.out_dim
        for _ in range(num_layers):
            layers += [nn.Linear(width, hidden_size), nn.ReLU(), SeededDropout(dropout)]
            width = hidden_size
        layers.append(nn.Linear(width, n_out))
        self.body = nn.Sequential(*layers)

    def forward(self, numeric, codes):
        return self.body(self.inputs(numeric, codes))


class MLPModel(TorchModel):
    model_type = ModelType.NEURAL_NETWORK
    DEFAULTS = DEFAULTS

    def _build_net(self, config: dict, n_out: int) -> nn.Module:
        return MLPNet(
            self.encoder_.n_numeric,
            list(self.encoder_.categorical.values()),
            int(config["hidden_size"]),
            int(config["num_layers"]),
            float(config["dropout"]),
            n_out,
        )
