"""Adam for local training, without the import cost of ``torch.optim``.

The first ``torch.optim`` optimizer a process builds imports
``torch._dynamo``: 1 to 2 s on a 2-core machine. Every simulation actor,
every ClientApp process of a deployment (one per message) and every device
paid it once before its first local epoch. The update below is the Adam of
Kingma and Ba (ICLR 2015), with L2 weight decay added to the gradient as
``torch.optim.Adam(weight_decay=...)`` does. tests/common/test_optim.py
checks that both give the same weights step after step.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch


class Adam:
    """Adam over a fixed list of parameters.

    Parameters
    ----------
    params : Iterable[torch.nn.Parameter]
        Parameters to update in place.
    lr : float, default=0.001
        Step size.
    betas : tuple[float, float], default=(0.9, 0.999)
        Decay rates of the first and second moment estimates.
    eps : float, default=1e-8
        Added to the denominator for numerical stability.
    weight_decay : float, default=0.0
        L2 penalty: ``weight_decay * param`` is added to each gradient.
    """

    def __init__(
        self,
        params: Iterable[torch.nn.Parameter],
        *,
        lr: float = 0.001,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ) -> None:
        if lr <= 0 or eps <= 0 or weight_decay < 0:
            raise ValueError(
                f"invalid Adam setting: lr={lr!r} and eps={eps!r} must be > 0, "
                f"weight_decay={weight_decay!r} must be >= 0"
            )
        if not all(0 <= beta < 1 for beta in betas):
            raise ValueError(f"invalid Adam betas {betas!r}: each must be in [0, 1)")
        self.params = [param for param in params if param.requires_grad]
        self.lr = lr
        self.beta1, self.beta2 = betas
        self.eps = eps
        self.weight_decay = weight_decay
        self.steps = 0
        self.exp_avg = [torch.zeros_like(param) for param in self.params]
        self.exp_avg_sq = [torch.zeros_like(param) for param in self.params]

    def zero_grad(self) -> None:
        """Drop the gradients of every parameter."""
        for param in self.params:
            param.grad = None

    @torch.no_grad()
    def step(self) -> None:
        """Update every parameter that has a gradient by one Adam step."""
        self.steps += 1
        step_size = self.lr / (1 - self.beta1**self.steps)
        correction_sqrt = math.sqrt(1 - self.beta2**self.steps)
        for param, exp_avg, exp_avg_sq in zip(
            self.params, self.exp_avg, self.exp_avg_sq, strict=True
        ):
            if param.grad is None:
                continue
            grad = param.grad
            if self.weight_decay:
                grad = grad.add(param, alpha=self.weight_decay)
            exp_avg.lerp_(grad, 1 - self.beta1)
            exp_avg_sq.mul_(self.beta2).addcmul_(grad, grad, value=1 - self.beta2)
            denominator = (exp_avg_sq.sqrt() / correction_sqrt).add_(self.eps)
            param.addcdiv_(exp_avg, denominator, value=-step_size)
