"""AdamW and LambdaLR as torch.optim computes them, without torch.optim (fixed: the agent cannot edit this file).

Why: in torch 2.x every ``torch.optim.Optimizer`` imports ``torch._dynamo`` on first use (its methods are
wrapped to keep the compiler out), which costs about as much as importing torch itself, once per fold, in
every experiment. These two classes do the same arithmetic with the same ``torch._foreach_*`` kernels
(``torch._fused_adamw_`` when ``fused=True``), and are tested against torch.optim step by step.

Semantics kept from torch.optim: decoupled weight decay ``p *= 1 - lr * weight_decay``; bias-corrected
moments; a parameter whose ``.grad`` is None on a step is skipped entirely (no decay, no step count), as
the heatmap processor's are on steps without the expert batch. ``param_groups`` are dicts that may carry
their own ``lr``/``weight_decay``/``betas``/``eps``. ``LambdaLR`` sets each group's lr to its initial lr
times ``lr_lambda(k)`` after k calls of ``step()``.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Iterable

import torch


class AdamW:
    def __init__(self, params: Iterable[Any], lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 1e-2, fused: bool = False) -> None:
        groups = list(params)
        if groups and not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        self.param_groups: list[dict[str, Any]] = []
        for group in groups:
            group = {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay, **group}
            group["params"] = list(group["params"])
            self.param_groups.append(group)
        self.fused = fused
        self.state: dict[torch.Tensor, dict[str, Any]] = {}

    def zero_grad(self, set_to_none: bool = True) -> None:
        for group in self.param_groups:
            for p in group["params"]:
                if set_to_none:
                    p.grad = None
                elif p.grad is not None:
                    p.grad.zero_()

    def _state(self, p: torch.Tensor) -> dict[str, Any]:
        state = self.state.get(p)
        if state is None:
            # The fused kernel keeps the step count on the device (no host round trip); foreach keeps an int.
            step = torch.zeros((), dtype=torch.float32, device=p.device) if self.fused else 0
            state = self.state[p] = {"exp_avg": torch.zeros_like(p), "exp_avg_sq": torch.zeros_like(p), "step": step}
        return state

    @torch.no_grad()
    def step(self) -> None:
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            states = [self._state(p) for p in params]
            grads = [p.grad for p in params]
            exp_avgs = [s["exp_avg"] for s in states]
            exp_avg_sqs = [s["exp_avg_sq"] for s in states]
            lr, (beta1, beta2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
            if self.fused:
                steps = [s["step"] for s in states]
                torch._foreach_add_(steps, 1)
                torch._fused_adamw_(params, grads, exp_avgs, exp_avg_sqs, [], steps, amsgrad=False, lr=lr,
                                    beta1=beta1, beta2=beta2, weight_decay=wd, eps=eps, maximize=False)
                continue
            for s in states:
                s["step"] += 1
            if wd != 0:
                torch._foreach_mul_(params, 1 - lr * wd)
            torch._foreach_lerp_(exp_avgs, grads, 1 - beta1)
            torch._foreach_mul_(exp_avg_sqs, beta2)
            torch._foreach_addcmul_(exp_avg_sqs, grads, grads, 1 - beta2)
            step_size = [-lr / (1 - beta1 ** s["step"]) for s in states]
            denom = torch._foreach_sqrt(exp_avg_sqs)
            torch._foreach_div_(denom, [math.sqrt(1 - beta2 ** s["step"]) for s in states])
            torch._foreach_add_(denom, eps)
            torch._foreach_addcdiv_(params, exp_avgs, denom, step_size)


class LambdaLR:
    def __init__(self, optimizer: AdamW, lr_lambda: Callable[[int], float]) -> None:
        self.optimizer, self.lr_lambda, self.last_epoch = optimizer, lr_lambda, 0
        self.base_lrs = [group["lr"] for group in optimizer.param_groups]
        self._set()

    def _set(self) -> None:
        for group, base in zip(self.optimizer.param_groups, self.base_lrs):
            group["lr"] = base * self.lr_lambda(self.last_epoch)

    def step(self) -> None:
        self.last_epoch += 1
        self._set()

    def get_last_lr(self) -> list[float]:
        return [group["lr"] for group in self.optimizer.param_groups]
