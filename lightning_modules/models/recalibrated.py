"""What every recalibrated backbone shares, whatever its blocks (ResNet, DenseNet).

A backbone builds one recalibration module per block from the registry, may be tied to its input
size (global-extent Gather-Excite), and tells the optimiser which module parameters the recipe
keeps out of weight decay. The blocks differ; these rules do not, so they live here once.
"""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor, nn

from lightning_modules.models.blocks import RECALIBRATION_ATTRIBUTE
from lightning_modules.models.recalibration import (
    RecalibrationModule,
    create_recalibration,
    recalibration_class,
)


class StageLayerHook:
    """A forward hook that passes a module's output through a layer.

    An object rather than a closure: `copy.deepcopy` of the backbone (weight averaging copies
    the whole model) then gives the copy a hook on its own copy of the layer.
    """

    def __init__(self, layer: nn.Module) -> None:
        self.layer = layer

    def __call__(self, module: nn.Module, args: tuple, output: Tensor) -> Tensor:
        return self.layer(output)


def is_recalibration_key(key: str) -> bool:
    """Whether a state-dict key belongs to a recalibration module (`...recalibration.*`)."""
    return f".{RECALIBRATION_ATTRIBUTE}." in f".{key}"


class RecalibratedBackbone(nn.Module):
    """Base of the backbones: image (B, 3, S, S) -> pooled features (B, feature_dim).

    Subclasses build their layers with `create_recalibration_module` for every block, set
    `feature_dim`, then call `finish_building()`; their `forward` starts with
    `check_input_size(x)`.

    Attributes:
        image_size: Input resolution the backbone was built for.
        recalibration_name: Name of the module in every block.
        recalibration_kwargs: Extra constructor arguments of every module.
        tied_to_image_size: Whether the modules only accept `image_size` (global-extent
            GE-theta and theta-plus); every other module accepts any.
        weights_report: What loading pretrained weights reported, or None without weights.
    """

    def __init__(
        self,
        recalibration: str | None = "none",
        image_size: int = 224,
        recalibration_kwargs: Mapping | None = None,
    ) -> None:
        """Record the module settings.

        Args:
            recalibration: Name of the module in every block (see `RECALIBRATION_MODULES`).
            image_size: Input resolution; global-extent GE-theta sizes its kernels from it.
            recalibration_kwargs: Extra constructor arguments of the module.
        """
        super().__init__()
        if image_size < 1:
            raise ValueError(f"image_size must be a positive number of pixels, got {image_size}.")
        self.image_size = image_size
        self.recalibration_name = "none" if recalibration is None else recalibration
        self.recalibration_kwargs = dict(recalibration_kwargs or {})
        self.tied_to_image_size = False
        self.weights_report = None

    def create_recalibration_module(self, channels: int, feature_size: int) -> RecalibrationModule:
        """The module for a block whose maps have `channels` channels and side `feature_size`."""
        kwargs = dict(self.recalibration_kwargs)
        if recalibration_class(self.recalibration_name).uses_feature_size:
            kwargs.setdefault("feature_size", (feature_size, feature_size))
        return create_recalibration(self.recalibration_name, channels, **kwargs)

    def finish_building(self) -> None:
        """Called once every block exists: notes whether a module fixes the input size."""
        self.tied_to_image_size = any(
            module.fixed_feature_size is not None
            for module in self.recalibration_modules().values()
        )

    def check_input_size(self, x: Tensor) -> None:
        """A clear error, before the module would fail, for inputs of another size."""
        if self.tied_to_image_size and tuple(x.shape[-2:]) != (self.image_size, self.image_size):
            raise ValueError(
                f"This backbone's {self.recalibration_name!r} modules (global-extent GE-theta) "
                f"were built for {self.image_size}x{self.image_size} inputs but got "
                f"{x.shape[-2]}x{x.shape[-1]}. Rebuild it with "
                f"create_backbone(..., image_size={x.shape[-1]}) (square inputs), or use a "
                "limited extent: recalibration_kwargs={'extent': 8}."
            )

    def stage_outputs(self) -> list[nn.Module]:
        """The modules whose outputs are "after stage i": index 0 the stem, then each stage
        (subclasses list theirs; a training method's stage layers are placed on them)."""
        raise NotImplementedError(f"{type(self).__name__} does not list its stages")

    def add_stage_layer(self, stage: int, layer: nn.Module) -> None:
        """Apply `layer` to the output of stage `stage` (0: the stem; 1..N: the stages), for
        the style-statistics methods (MixStyle and its family) that sit between stages.

        The layer is registered under `stage_layers` (parameter-free layers add no state-dict
        keys, so checkpoints and pretrained weights are unaffected) and applied by a forward
        hook, which works the same in ResNets and DenseNets and under `torch.compile`. It
        sees the backbone's training flag through its own `training` attribute.
        """
        outputs = self.stage_outputs()
        if not 0 <= stage < len(outputs):
            raise ValueError(
                f"stage {stage} does not exist in this {len(outputs) - 1}-stage backbone; "
                f"valid stages: 0 (after the stem) to {len(outputs) - 1}"
            )
        if not hasattr(self, "stage_layers"):
            self.stage_layers = nn.ModuleDict()
        key = str(stage)
        if key in self.stage_layers:
            raise ValueError(f"stage {stage} already has a layer ({self.stage_layers[key]})")
        self.stage_layers[key] = layer
        outputs[stage].register_forward_hook(StageLayerHook(layer))

    def recalibration_modules(self) -> dict[str, RecalibrationModule]:
        """The recalibration module of every block, by its qualified name."""
        return {
            name: module
            for name, module in self.named_modules()
            if name.rsplit(".", 1)[-1] == RECALIBRATION_ATTRIBUTE
        }

    def no_weight_decay(self) -> set[str]:
        """Full parameter names (as in `named_parameters()`) the recipe keeps out of weight decay.

        For SRM: every block's CFC weights and SRM batch-norm gamma/beta. The other modules'
        papers decay all parameters, so they contribute nothing; base layers never do.
        """
        names: set[str] = set()
        for module_name, module in self.recalibration_modules().items():
            names |= {f"{module_name}.{name}" for name in module.no_weight_decay()}
        return names

    def recalibration_parameter_names(self) -> set[str]:
        """Full names of every parameter that belongs to a recalibration module."""
        return {name for name, _ in self.named_parameters() if is_recalibration_key(name)}
