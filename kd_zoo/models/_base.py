"""The timm model contract shared by every kd_zoo CIFAR architecture.

Each family file builds a list of `Stage`s (the stem is stage 0) plus an optional head conv / final norm, and
`StagedNet` provides, once for all families, what timm and the distillation methods ask of a model:
`forward_features`, `forward_head(pre_logits=...)`, `forward_intermediates` (stage outputs, and their
pre-activation version with `preact=True`), `prune_intermediate_layers`, `feature_info`, `get_classifier`,
`reset_classifier`, gradient checkpointing and the `num_classes` / `num_features` / `in_chans` attributes.

A stage is `act(blocks(x))`: the block stack ends *before* its last activation, so the pre-activation output
(what CRD / mdistiller call `preact_feats`) is available without hooks and without a second forward. The stage
activation is never in place (`Stage` refuses one), so it cannot overwrite the pre-activation tensor it is given.

`forward` and `forward_features` are TorchScript- and FX-friendly: stages are called directly (never passed to a
helper as an argument) and this module does not use `from __future__ import annotations`, whose string
annotations would end up in FX-generated code that TorchScript cannot resolve.
"""

import torch
import torch.nn.functional as F
from timm.layers import create_classifier
from timm.models._features import feature_take_indices
from torch import nn
from torch.utils.checkpoint import checkpoint


class Stage(nn.Module):
    """A stage: `blocks` up to the pre-activation output, then `act` (an activation, or Identity).

    `act` must not work in place: `forward_intermediates(..., preact=True)` returns the tensor `act` is given.
    """

    def __init__(self, blocks: nn.Module, act: nn.Module | None = None):
        super().__init__()
        inplace = [name or type(m).__name__ for name, m in (act or nn.Identity()).named_modules() if _is_inplace(m)]
        if inplace:
            raise ValueError(
                f"a stage activation must not work in place ({', '.join(inplace)} has inplace=True): it would "
                "overwrite the pre-activation output; use e.g. nn.ReLU() instead of nn.ReLU(inplace=True)"
            )
        self.blocks = blocks
        self.act = act if act is not None else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.blocks(x))


def _is_inplace(module: nn.Module) -> bool:
    return bool(getattr(module, "inplace", False))


class StagedNet(nn.Module):
    """Base class of the kd_zoo CIFAR models (see the module docstring).

    Args:
        stages: the stem first, then the stages whose outputs are the reference "stage outputs".
        stage_channels: output channels of each stage.
        stage_reductions: input / output spatial ratio of each stage.
        num_features: channels after `head_conv` (the pooled, pre-logits dimension).
        num_classes: classifier outputs; 0 gives a model that returns pooled features.
        in_chans: input image channels.
        global_pool: timm pool type ('avg', 'max', 'avgmax', 'catavgmax', '' for none).
        drop_rate: dropout before the classifier.
        head_conv: module between the last stage and the pool (e.g. MobileNetV2's 1x1 conv to 1280).
        final_norm: norm + activation after the last stage (WRN's pre-activation tail); `norm=True` in
            `forward_intermediates` applies it to the last stage's output.
    """

    def __init__(
        self,
        stages: list[Stage],
        stage_channels: list[int],
        stage_reductions: list[int],
        num_features: int,
        num_classes: int,
        in_chans: int,
        global_pool: str = "avg",
        drop_rate: float = 0.0,
        head_conv: nn.Module | None = None,
        final_norm: nn.Module | None = None,
    ):
        super().__init__()
        if len(stages) != len(stage_channels) or len(stages) != len(stage_reductions):
            raise ValueError("stages, stage_channels and stage_reductions must have the same length")
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.drop_rate = drop_rate
        self.grad_checkpointing = False
        self.stages = nn.ModuleList(stages)
        self.head_conv = head_conv if head_conv is not None else nn.Identity()
        self.final_norm = final_norm if final_norm is not None else nn.Identity()
        self.num_features = self.head_hidden_size = num_features
        self.feature_info = [
            dict(num_chs=c, reduction=r, module=f"stages.{i}")
            for i, (c, r) in enumerate(zip(stage_channels, stage_reductions, strict=True))
        ]
        self.global_pool, self.fc = create_classifier(num_features, num_classes, pool_type=global_pool)
        self.head_drop = nn.Dropout(drop_rate)

    # -- timm helpers ---------------------------------------------------------------------------------------
    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict:
        return dict(stem=r"^stages\.0\.", blocks=r"^stages\.(\d+)" if coarse else r"^stages\.(\d+)\.blocks\.(\d+)")

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """Replace the classifier; `num_classes=0` makes `forward` return pooled features."""
        num_classes = _check_num_classes(num_classes)
        self.num_classes = num_classes
        pool_type = self.global_pool.pool_type if global_pool is None else global_pool
        self.global_pool, self.fc = create_classifier(self.num_features, num_classes, pool_type=pool_type)

    # -- forward --------------------------------------------------------------------------------------------
    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        for stage in self.stages:
            if not torch.jit.is_scripting() and self.grad_checkpointing and torch.is_grad_enabled():
                x = checkpoint(stage, x, use_reentrant=False)
            else:
                x = stage(x)
        return self.final_norm(self.head_conv(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.global_pool(x)
        x = self.head_drop(x)
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | list[int] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
        preact: bool = False,
    ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """Stage outputs (stem first) in one forward pass, as timm defines it.

        Args:
            x: input images.
            indices: last n stages if int, all if None, these stages if a sequence (negative from the end).
            norm: apply the final norm (WRN) to the last stage's output (no effect with `preact=True`, whose last
                tensor is already the final norm's pre-activation output).
            stop_early: stop after the last requested stage (the returned features are then incomplete).
            output_fmt: only 'NCHW'.
            intermediates_only: return only the intermediates.
            preact: return each stage's output before its last activation, as the CIFAR KD reference code
                (CRD / mdistiller `preact_feats`) defines it: see `preact_feature`.

        Returns:
            The intermediates, or (the `forward_features` output, the intermediates).
        """
        if output_fmt != "NCHW":
            raise ValueError(f"output_fmt must be 'NCHW', got {output_fmt!r}")
        take_indices, max_index = feature_take_indices(len(self.stages), indices)
        last = len(self.stages) - 1
        intermediates = []
        normed_last = None
        stages = self.stages[: max_index + 1] if (stop_early or intermediates_only) else self.stages
        for i, stage in enumerate(stages):
            if self.grad_checkpointing and torch.is_grad_enabled():
                pre = checkpoint(stage.blocks, x, use_reentrant=False)
            else:
                pre = stage.blocks(x)
            x = stage.act(pre)
            if i not in take_indices:
                continue
            if preact:
                intermediates.append(self.preact_feature(i, pre, x))
            elif norm and i == last:
                normed_last = self.final_norm(x)
                intermediates.append(normed_last)
            else:
                intermediates.append(x)
        if intermediates_only:
            return intermediates
        if len(stages) == len(self.stages):
            # Reuse the normalised last stage when it was computed (a second BN call would update its statistics
            # twice in training mode).
            use_normed = normed_last is not None and isinstance(self.head_conv, nn.Identity)
            x = normed_last if use_normed else self.final_norm(self.head_conv(x))
        return x, intermediates

    def preact_feature(self, index: int, pre: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """The pre-activation feature of stage `index`, given the stage's block output `pre` and its output `out`.

        The reference convention (CRD / mdistiller `preact_feats`, which pre-activation feature methods are
        designed on): the stem is returned after its activation, as the reference does; every other stage before
        its last activation. Families whose reference convention differs (WRN) override this.
        """
        return out if index == 0 else pre

    def prune_intermediate_layers(
        self,
        indices: int | list[int] = 1,
        prune_norm: bool = False,
        prune_head: bool = True,
    ) -> list[int]:
        """Drop the stages (and head) that the requested intermediates do not need; returns the kept indices."""
        take_indices, max_index = feature_take_indices(len(self.stages), indices)
        if max_index < len(self.stages) - 1:
            self.stages = self.stages[: max_index + 1]
            self.head_conv = nn.Identity()
            self.final_norm = nn.Identity()
        if prune_norm:
            self.final_norm = nn.Identity()
        if prune_head:
            self.reset_classifier(0, "")
        return take_indices


def batch_norm_without_update(bn: nn.BatchNorm2d, x: torch.Tensor) -> torch.Tensor:
    """`bn(x)` without touching its running statistics: batch statistics in training mode, running ones in eval.

    For features that re-apply a BN the network also applies elsewhere (WRN's pre-activation features), so that
    asking for them never updates a BN's statistics twice per forward.
    """
    use_batch_stats = bn.training or bn.running_mean is None
    return F.batch_norm(
        x,
        None if use_batch_stats else bn.running_mean,
        None if use_batch_stats else bn.running_var,
        bn.weight,
        bn.bias,
        training=use_batch_stats,
        momentum=0.0,
        eps=bn.eps,
    )


def _check_num_classes(num_classes: int) -> int:
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 0:
        raise ValueError(
            f"num_classes must be an int >= 0 (0 removes the classifier), got {num_classes!r}. "
            "Pass num_classes=100 for CIFAR-100, 1000 for ImageNet, or your data set's class count."
        )
    return num_classes


def init_weights(model: nn.Module, linear_std: float | None = None) -> None:
    """Reference initialisation of the CIFAR zoo (CRD / RepDistiller).

    Convs: He normal with fan-out (the references' normal(0, sqrt(2 / (k * k * out)))), zero bias;
    norms: weight 1, bias 0; linear: normal(0, linear_std) with zero bias when `linear_std` is given.
    """
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear) and linear_std is not None:
            nn.init.normal_(m.weight, 0.0, linear_std)
            nn.init.zeros_(m.bias)
