"""Training loops and model surgery, in the style of torchvision's ``references/classification/train.py``.

:func:`train_one_epoch` and :func:`evaluate` are generators (they yield per batch, so
the engine can report progress and stop between batches); the rest prepares
the model for a stage: which blocks train, BatchNorm modes, optimizer and
scheduler, and the standardised head used on cached stage-1 features.
"""

from __future__ import annotations

import copy
import math
import time
from typing import Any, Callable, Generator, Iterator, Sequence

import numpy as np
import torch
from torch import nn

from cxr_desktop.model.architecture import CxrClassifier
from cxr_desktop.training.config import TrainConfig, TrainingError

BODY_BLOCKS = ("conv1", "bn1", "layer1", "layer2", "layer3", "layer4")
DIVERGED = ("The training loss became NaN or infinite (training diverged). Lower the learning rate and "
            "start again.")


def train_one_epoch(model: nn.Module, criterion: nn.Module, optimizer: torch.optim.Optimizer,
                    loader: Iterator[tuple[torch.Tensor, torch.Tensor]], device: torch.device, *,
                    scaler: torch.amp.GradScaler | None = None, channels_last: bool = False,
                    cancelled: Callable[[], bool] = lambda: False,
                    forward: Callable[[torch.Tensor], torch.Tensor] | None = None,
                    lr_scale: Callable[[int], float] | None = None,
                    ) -> Generator[tuple[int, float, float], None, tuple[float, bool]]:
    """One pass over ``loader``; yields (batch, loss, images/s), returns (mean loss, was_cancelled).

    ``forward`` replaces ``model(x)`` (stage 1 trains the head on cached pooled features);
    ``lr_scale(batch_index)`` multiplies the learning rate of that step (warm-up).
    """
    fwd = forward or model
    base_lrs = [g["lr"] for g in optimizer.param_groups]
    total, n, t0 = 0.0, 0, time.perf_counter()
    for i, (x, y) in enumerate(loader):
        if cancelled():
            _restore_lr(optimizer, base_lrs)
            return (total / max(n, 1), True)
        if lr_scale is not None:
            for g, lr in zip(optimizer.param_groups, base_lrs):
                g["lr"] = lr * lr_scale(i)
        x = x.to(device, non_blocking=True)
        if channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        y = y.to(device, non_blocking=True)
        with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=scaler is not None):
            loss = criterion(fwd(x), y)
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        value = float(loss.detach())
        if not math.isfinite(value):
            raise TrainingError(DIVERGED)
        total += value * x.shape[0]
        n += x.shape[0]
        yield i + 1, value, n / max(time.perf_counter() - t0, 1e-9)
    _restore_lr(optimizer, base_lrs)
    return total / max(n, 1), False


def _restore_lr(optimizer: torch.optim.Optimizer, lrs: Sequence[float]) -> None:
    for g, lr in zip(optimizer.param_groups, lrs):
        g["lr"] = lr


def evaluate(model: nn.Module, criterion: nn.Module, loader: Iterator[tuple[torch.Tensor, torch.Tensor]],
             device: torch.device, *, channels_last: bool = False, amp: bool = False,
             cancelled: Callable[[], bool] = lambda: False, pooled_input: bool = False,
             ) -> Generator[int, None, tuple[float, np.ndarray, np.ndarray, np.ndarray | None, bool]]:
    """Inference over ``loader``; yields the batch number, returns (loss, probs, labels, pooled, was_cancelled).

    ``pooled_input``: the loader gives pooled features and only the head runs.
    """
    model.eval()
    probs, labels, pooled = [], [], []
    total, n = 0.0, 0
    with torch.inference_mode():
        for i, (x, y) in enumerate(loader):
            if cancelled():
                return float("nan"), np.zeros(0), np.zeros(0), None, True
            x = x.to(device, non_blocking=True)
            if channels_last and x.dim() == 4:
                x = x.contiguous(memory_format=torch.channels_last)
            y = y.to(device)
            with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=amp):
                if pooled_input:
                    p = x
                else:
                    p = model.features(x).float().mean(dim=(2, 3))  # type: ignore[operator]
                    pooled.append(p.float().cpu().numpy())
                logits = model.head.forward_pooled(p.float())  # type: ignore[union-attr]
            total += float(criterion(logits.float(), y)) * x.shape[0]
            n += x.shape[0]
            probs.append(torch.softmax(logits.float(), 1).cpu().numpy())
            labels.append(y.cpu().numpy())
            yield i + 1
    c = model.head.layers[-1].out_features  # type: ignore[union-attr,index]
    return (total / max(n, 1), np.concatenate(probs) if probs else np.zeros((0, c), np.float32),
            np.concatenate(labels) if labels else np.zeros(0, np.int64),
            np.concatenate(pooled) if pooled else None, False)



class TensorPairs(torch.utils.data.Dataset):
    """(feature vector, label) pairs held in memory (stage 1 on cached features)."""

    def __init__(self, x: np.ndarray, y: np.ndarray):
        self.x = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
        self.y = torch.from_numpy(np.asarray(y, dtype=np.int64))

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x[i], self.y[i]


class StandardisedHead(nn.Module):
    """Stage 1 on cached features: the head trained on standardised features, folded back afterwards.

    Pooled features of a frozen backbone can have any scale (a random or
    foreign backbone gives values in the thousands), which makes a linear head
    slow or unstable to train. Training on ``(x - mean) / std`` is well
    conditioned whatever the backbone; since the head's first layer is linear,
    the standardisation folds exactly into it (``W / std``, ``b - W @ mean``), so
    the saved model needs no extra layer.
    """

    def __init__(self, head: nn.Module, train_features: np.ndarray, *, fresh: bool):
        super().__init__()
        f = np.asarray(train_features, dtype=np.float64)
        mean = f.mean(0)
        std = f.std(0)
        std = np.maximum(std, 1e-2 * float(std.mean()) + 1e-12)
        self.register_buffer("mean", torch.from_numpy(mean.astype(np.float32)))
        self.register_buffer("std", torch.from_numpy(std.astype(np.float32)))
        self.head = copy.deepcopy(head)
        lin = self._first_linear(self.head)
        if fresh:  # a new head: initialise it for unit-variance inputs
            for m in self.head.modules():
                if isinstance(m, nn.Linear):
                    m.reset_parameters()
            return
        with torch.no_grad():  # resumed: unfold, the same function on standardised inputs
            lin.bias.add_(lin.weight @ self.mean.to(lin.weight.device))
            lin.weight.mul_(self.std.to(lin.weight.device)[None, :])

    @staticmethod
    def _first_linear(head: nn.Module) -> nn.Linear:
        return next(m for m in head.modules() if isinstance(m, nn.Linear))

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.head.forward_pooled((pooled - self.mean) / self.std)  # type: ignore[operator]

    def fold_into(self, head: nn.Module) -> None:
        """Copy the trained head into ``head``, folding the standardisation into its first linear layer."""
        with torch.no_grad():
            for (name, dst), src in zip(head.state_dict().items(), self.head.state_dict().values()):
                dst.copy_(src)
            lin = self._first_linear(head)
            lin.weight.div_(self.std.to(lin.weight.device)[None, :])
            lin.bias.sub_(lin.weight @ self.mean.to(lin.weight.device))


def zero_init_residual(model: CxrClassifier) -> None:
    """For random initial weights: the last BatchNorm of every residual block starts at zero.

    Each block then starts as the identity, which makes training a deep ResNet from
    scratch stable (Goyal et al. 2017; torchvision's ``zero_init_residual``).
    """
    from torchvision.models.resnet import Bottleneck

    with torch.no_grad():
        for m in model.body.modules():
            if isinstance(m, Bottleneck):
                m.bn3.weight.zero_()


def set_trainable(model: CxrClassifier, scope: str) -> list[nn.Parameter]:
    """Freeze everything but ``scope`` ("head", "all", "layer3", "layer4"); returns trainable params."""
    body = model.body
    order = list(BODY_BLOCKS)
    if scope == "head":
        train_from = len(order)
    elif scope == "all":
        train_from = 0
    else:
        train_from = order.index(scope)
    for i, name in enumerate(order):
        for p in getattr(body, name).parameters():
            p.requires_grad_(i >= train_from)
    for p in model.head.parameters():
        p.requires_grad_(True)
    return [p for p in model.parameters() if p.requires_grad]


def train_mode(model: CxrClassifier, scope: str) -> None:
    """Train mode for trainable parts only: frozen BatchNorm keeps its running statistics."""
    model.eval()
    model.head.train()
    order = list(BODY_BLOCKS)
    if scope == "all":
        model.body.train()
    elif scope in order:
        for name in order[order.index(scope):]:
            getattr(model.body, name).train()


def make_optimizer(cfg: TrainConfig, params: list[nn.Parameter], lr: float) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, nesterov=True, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=lr, weight_decay=cfg.weight_decay)


def make_scheduler(cfg: TrainConfig, opt: torch.optim.Optimizer, epochs: int, lr: float) -> Any:
    if cfg.scheduler == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, epochs), eta_min=lr * 0.01)
    if cfg.scheduler == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(  # stepped with the score, which is higher-better
            opt, mode="max", factor=0.3, patience=max(1, cfg.patience // 2))
    return None
