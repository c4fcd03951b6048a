"""AdamW for CPU jobs, without `torch.optim`.

Why not `torch.optim.AdamW`: every `Optimizer` method is wrapped by `torch._disable_dynamo`,
which imports `torch._dynamo` on its first call. That import takes about 1.4 s on the 2-core
default machine, a quarter of a short decay branch's whole job, paid again by each of the
default study's ~190 training jobs.

This is the same update as torch's single-tensor AdamW (decoupled weight decay, bias-corrected
moments, eps added outside the square root), written op for op in the same order, so its
results are bitwise equal to torch's on CPU (tests/test_adamw.py checks it). Its state dict has
torch's layout, so a checkpoint moves between this optimizer and `torch.optim.AdamW` in either
direction: CUDA jobs use torch's fused kernel (`training.spec.build_optimizer`), where the
import does not matter and the kernel does.
"""

from __future__ import annotations

import torch

# what torch's AdamW writes in each saved param group besides the hyperparameters used here, so
# that torch.optim.AdamW.load_state_dict finds every key it expects
_TORCH_GROUP_KEYS = {"amsgrad": False, "maximize": False, "foreach": None, "capturable": False,
                     "differentiable": False, "fused": None, "decoupled_weight_decay": True}


class AdamW:
    """AdamW over param groups (each may set "lr", "betas", "eps", "weight_decay"; other keys,
    such as the parametrization's "lr_mult" and "name", are kept and saved untouched)."""

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 1e-2) -> None:
        groups = list(params)
        if not groups:
            raise ValueError("AdamW got an empty parameter list")
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        self.defaults = {"lr": lr, "betas": tuple(betas), "eps": eps,
                         "weight_decay": weight_decay}
        self.param_groups = [{**self.defaults, **group, "params": list(group["params"])}
                             for group in groups]
        self.state: dict[torch.Tensor, dict] = {}

    @torch.no_grad()
    def step(self) -> None:
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            lr, eps, weight_decay = group["lr"], group["eps"], group["weight_decay"]
            for param in group["params"]:
                if param.grad is None:
                    continue
                state = self.state.get(param)
                if state is None:
                    # torch keeps `step` as a CPU float32 tensor unless fused or capturable
                    state = self.state[param] = {
                        "step": torch.tensor(0.0, dtype=torch.float32),
                        "exp_avg": torch.zeros_like(param, memory_format=torch.preserve_format),
                        "exp_avg_sq": torch.zeros_like(param,
                                                       memory_format=torch.preserve_format),
                    }
                grad, exp_avg, exp_avg_sq = param.grad, state["exp_avg"], state["exp_avg_sq"]
                state["step"] += 1
                step = state["step"].item()
                if weight_decay != 0:
                    param.mul_(1 - lr * weight_decay)
                exp_avg.lerp_(grad, 1 - beta1)
                exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                step_size = lr / (1 - beta1**step)
                bias_correction2_sqrt = (1 - beta2**step) ** 0.5
                denom = (exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(eps)
                param.addcdiv_(exp_avg, denom, value=-step_size)

    def zero_grad(self, set_to_none: bool = True) -> None:
        for group in self.param_groups:
            for param in group["params"]:
                if param.grad is None:
                    continue
                if set_to_none:
                    param.grad = None
                else:
                    param.grad.zero_()

    def state_dict(self) -> dict:
        """torch.optim's layout: state keyed by the parameter's index over all groups, and each
        group's settings with "params" as those indices."""
        index = {}
        groups = []
        for group in self.param_groups:
            ids = []
            for param in group["params"]:
                ids.append(index.setdefault(id(param), len(index)))
            saved = {**_TORCH_GROUP_KEYS,
                     **{k: v for k, v in group.items() if k != "params"}, "params": ids}
            groups.append(saved)
        state = {}
        for group in self.param_groups:
            for param in group["params"]:
                if param in self.state:
                    state[index[id(param)]] = dict(self.state[param])
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, saved: dict) -> None:
        """Take the moments, steps and group settings of `saved` (this class's or
        torch.optim.AdamW's), its groups matched to ours by position, as torch does."""
        groups = saved["param_groups"]
        if len(groups) != len(self.param_groups) or any(
                len(ours["params"]) != len(theirs["params"])
                for ours, theirs in zip(self.param_groups, groups, strict=True)):
            raise ValueError("the saved optimizer state has other parameter groups than the "
                             "model's")
        state = {}
        for ours, theirs in zip(self.param_groups, groups, strict=True):
            for param, i in zip(ours["params"], theirs["params"], strict=True):
                if i not in saved["state"]:
                    continue
                entry = saved["state"][i]
                state[param] = {
                    # torch may keep step on the device (fused); here it is a CPU float32
                    "step": torch.as_tensor(entry["step"], dtype=torch.float32).detach()
                    .cpu().clone(),
                    "exp_avg": entry["exp_avg"].to(param.device, param.dtype).clone(),
                    "exp_avg_sq": entry["exp_avg_sq"].to(param.device, param.dtype).clone(),
                }
            for key in ("lr", "betas", "eps", "weight_decay"):
                if key in theirs:
                    ours[key] = tuple(theirs[key]) if key == "betas" else theirs[key]
            for key, value in theirs.items():
                if key not in ("params", *_TORCH_GROUP_KEYS):
                    ours.setdefault(key, value)
        self.state = state
