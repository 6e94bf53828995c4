"""attnviz: see what attention blocks (SE, ECA, CBAM, BAM) inside CNNs do.

    import attnviz
    result = attnviz.inspect("cat.jpg")          # default model: built-in or cached ImageNet
    print(result.predictions[0], result.block(result.blocks[-1].name).channel_stats)
"""
from .blocks import BAM, CBAM, EfficientChannelAttention, SpatialAttention, SqueezeExcite, create_block
from .capture import AttentionCapture, BlockCapture, capture, find_gates
from .gradcam import gradcam
from .intervene import ChannelKnockout, intervene
from .effects import InterventionEffect
from .drilldown import ChannelMap
from .channel_deletion import DeletionCurves, channel_deletion
from .sanity import SanityReport, cascading_randomization
from .inspection import (
    BlockResult, ChannelStats, Inspection, Prediction, SpatialStats, inspect, inspect_batch,
)
from .models import (
    AttentionResNet, LoadedModel, Variant, WeightsError, WeightsUnavailableError, add_models_dir,
    default_variant_name, get_variant, load_model, variant_from_weights_file, variants, wrap_model,
)
from .inputs import ImageLoadError
from .preprocess import PreprocessConfig

__version__ = "0.1.0"

#: Loaded on first use, so ``import attnviz`` stays as fast as before (and never imports ray).
_LAZY = {"analyze": "analysis", "Analysis": "analysis"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "Analysis", "analyze",
    "AttentionCapture", "AttentionResNet", "BAM", "BlockCapture", "BlockResult", "CBAM",
    "ChannelStats", "EfficientChannelAttention", "ImageLoadError", "Inspection", "LoadedModel",
    "Prediction", "PreprocessConfig", "SpatialAttention", "SpatialStats", "SqueezeExcite",
    "Variant", "WeightsError", "WeightsUnavailableError", "capture", "create_block",
    "default_variant_name", "find_gates", "get_variant", "gradcam", "inspect", "inspect_batch",
    "load_model", "variants", "wrap_model", "__version__", "add_models_dir", "variant_from_weights_file",
    "ChannelKnockout", "ChannelMap", "DeletionCurves", "InterventionEffect", "SanityReport",
    "cascading_randomization", "channel_deletion", "intervene",
]
