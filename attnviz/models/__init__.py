"""Models: the attention ResNet architecture, the zoo of variants, weights and loading."""
from .descriptions import variant_from_weights_file
from .loading import LoadedModel, clear_cache, default_variant_name, load_model, pick_device, wrap_model
from .resnet import AttentionResNet
from .weights import CheckpointDescriptionError, WeightsError, WeightsUnavailableError
from .zoo import Variant, WeightsSource, add_models_dir, get_variant, imagenet_classes, models_dirs, variants

__all__ = [
    "AttentionResNet", "CheckpointDescriptionError", "LoadedModel", "Variant", "WeightsError", "WeightsSource",
    "WeightsUnavailableError", "add_models_dir", "clear_cache", "default_variant_name", "get_variant",
    "imagenet_classes", "load_model", "models_dirs", "pick_device", "variant_from_weights_file", "variants",
    "wrap_model",
]
