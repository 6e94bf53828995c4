"""Models: the attention ResNet architecture, the zoo of variants, weights and loading."""
from .loading import LoadedModel, clear_cache, default_variant_name, load_model, pick_device, wrap_model
from .resnet import AttentionResNet
from .weights import WeightsError, WeightsUnavailableError
from .zoo import Variant, WeightsSource, get_variant, imagenet_classes, variants

__all__ = [
    "AttentionResNet", "LoadedModel", "Variant", "WeightsError", "WeightsSource",
    "WeightsUnavailableError", "clear_cache", "default_variant_name", "get_variant",
    "imagenet_classes", "load_model", "pick_device", "variants", "wrap_model",
]
