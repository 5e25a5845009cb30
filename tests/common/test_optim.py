"""The metals Adam against torch.optim.Adam, and its setting checks."""

import subprocess
import sys

import pytest
import torch
from torch import nn

from metals.common.optim import Adam


def _model(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))


@pytest.mark.parametrize("weight_decay", [0.0, 1e-4])
def test_adam_matches_torch_adam_over_steps(weight_decay):
    # Prepare: two copies of one model and one stream of batches.
    ours, reference = _model(0), _model(0)
    optimizer = Adam(ours.parameters(), lr=0.01, weight_decay=weight_decay)
    reference_optimizer = torch.optim.Adam(
        reference.parameters(), lr=0.01, weight_decay=weight_decay
    )
    generator = torch.Generator().manual_seed(1)
    criterion = nn.CrossEntropyLoss()

    # Execute: 25 steps on the same batches.
    for _ in range(25):
        x = torch.randn(16, 6, generator=generator)
        y = torch.randint(0, 3, (16,), generator=generator)
        for model, opt in ((ours, optimizer), (reference, reference_optimizer)):
            opt.zero_grad()
            criterion(model(x), y).backward()
            opt.step()

    # Assert
    for mine, theirs in zip(ours.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(mine, theirs, rtol=1e-6, atol=1e-7)


def test_adam_skips_parameters_without_gradient():
    model = _model(0)
    optimizer = Adam(model.parameters())
    before = [param.detach().clone() for param in model.parameters()]

    optimizer.step()

    for param, old in zip(model.parameters(), before, strict=True):
        assert torch.equal(param, old)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"lr": 0.0}, "lr=0.0"),
        ({"weight_decay": -1.0}, "weight_decay=-1.0"),
        ({"betas": (0.9, 1.0)}, "betas"),
    ],
)
def test_adam_rejects_bad_settings(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Adam(_model(0).parameters(), **kwargs)


def test_local_training_leaves_torch_dynamo_unimported():
    # Prepare: a fresh interpreter, so no other test has imported it.
    script = (
        "import sys, numpy as np\n"
        "from metals.common.model import build_model\n"
        "from metals.common.training import train_local\n"
        "model = build_model(4, 2, (8,), seed=0)\n"
        "x = np.random.default_rng(0).random((20, 4), dtype=np.float32)\n"
        "train_local(model, x, np.arange(20) % 2, epochs=2)\n"
        "print('torch._dynamo' in sys.modules)\n"
    )

    # Execute
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=120
    )

    # Assert
    assert result.stdout.strip() == "False"
