"""The multilayer perceptron that every client trains and the server aggregates."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn


class MLP(nn.Module):
    """Fully connected classifier with ReLU hidden layers and logits out.

    The METALS setting is two hidden layers of 90 units. ``forward`` returns
    logits; ``predict_proba`` in :mod:`metals.common.training` applies the
    softmax.

    Parameters
    ----------
    num_features : int
        Width of the input layer (columns of the preprocessed records).
    num_classes : int
        Width of the output layer.
    hidden_layers : Sequence[int], default=(90, 90)
        Width of each hidden layer, input side first.
    """

    def __init__(
        self, num_features: int, num_classes: int, hidden_layers: Sequence[int] = (90, 90)
    ) -> None:
        super().__init__()
        if num_features < 1:
            raise ValueError(f"invalid num_features {num_features}: must be >= 1")
        if num_classes < 2:
            raise ValueError(f"invalid num_classes {num_classes}: a classifier needs >= 2")
        if any(width < 1 for width in hidden_layers):
            raise ValueError(f"invalid hidden_layers {list(hidden_layers)}: widths must be >= 1")

        layers: list[nn.Module] = []
        width_in = num_features
        for width in hidden_layers:
            layers.append(nn.Linear(width_in, width))
            layers.append(nn.ReLU())
            width_in = width
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(width_in, num_classes)
        self.num_features = num_features
        self.num_classes = num_classes

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Return the last hidden layer's activations, shape (n, hidden_layers[-1])."""
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return logits of shape (n, num_classes) for inputs of shape (n, num_features)."""
        return self.head(self.body(x))


def build_model(
    num_features: int, num_classes: int, hidden_layers: Sequence[int], *, seed: int
) -> MLP:
    """Create an :class:`MLP` whose initial weights depend only on ``seed``."""
    generator_state = torch.random.get_rng_state()
    # Only the CPU generator: torch.manual_seed also queues a seed for CUDA,
    # recording a stack trace each time, which took 80 ms on first use.
    torch.default_generator.manual_seed(seed)
    try:
        model = MLP(num_features, num_classes, hidden_layers)
    finally:
        torch.random.set_rng_state(generator_state)
    return model


def state_to_numpy(model: nn.Module) -> dict[str, np.ndarray]:
    """Copy the model's state_dict into float arrays keyed by parameter name."""
    return {
        name: tensor.detach().cpu().numpy().copy() for name, tensor in model.state_dict().items()
    }


def load_numpy_state(model: nn.Module, arrays: dict[str, np.ndarray]) -> None:
    """Load arrays keyed by parameter name into ``model``.

    Raises
    ------
    ValueError
        When a key is missing or extra or an array's shape differs from the
        model's, naming the key and both shapes.
    """
    expected = model.state_dict()
    missing = sorted(set(expected) - set(arrays))
    extra = sorted(set(arrays) - set(expected))
    if missing or extra:
        raise ValueError(
            f"weights do not fit the model: missing keys {missing}, unexpected keys {extra}"
        )
    for name, tensor in expected.items():
        if tuple(arrays[name].shape) != tuple(tensor.shape):
            raise ValueError(
                f"weights do not fit the model: '{name}' has shape "
                f"{tuple(arrays[name].shape)}, the model expects {tuple(tensor.shape)}"
            )
    state = {name: torch.as_tensor(np.asarray(value)) for name, value in arrays.items()}
    model.load_state_dict(state)
