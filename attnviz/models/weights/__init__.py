"""Reading, converting and fetching weights safely.

Only safetensors files or ``torch.load(weights_only=True)`` are read: a pickle that would run
code is refused. Converters map each source's key layout onto the model's state dict:

========================  ===============================================================
``attnviz``               attnviz's own :class:`~attnviz.models.resnet.AttentionResNet` keys
``torchvision``           torchvision ResNets (same keys as attnviz's plain ResNet)
``timm``                  timm models, loaded into ``timm.create_model`` unchanged
``cadene_senet``          the SENet authors' Caffe model as ported by Cadene (timm ``legacy_seresnet``)
``eca_authors``           the ECA-Net authors' release (``layerX.Y.eca.conv.weight``)
``pytorchcv_cbam``        pytorchcv ``cbam_resnet*`` (the CBAM authors' weights)
``pytorchcv_bam``         pytorchcv ``bam_resnet*`` (the BAM authors' weights)
========================  ===============================================================

Downloads happen only when :func:`resolve_file` is called, never at import: URLs go to the
torch hub cache (``$TORCH_HOME/hub/checkpoints``), Hugging Face files to the hub cache
(``HF_HOME``, ``HF_HUB_CACHE``, ``HF_HUB_OFFLINE`` honoured). Checksums are verified; a file
that does not match is deleted from the cache.

The work is split by concern: :mod:`.files` reads files, :mod:`.convert` maps key layouts,
:mod:`.hub` handles caches and downloads; everything public is re-exported here.
"""
from __future__ import annotations

from .convert import FORMATS, convert_state_dict, detect_format, load_into
from .errors import CheckpointDescriptionError, WeightsError, WeightsUnavailableError
from .files import read_safetensors_metadata, read_state_dict
from .hub import cached_path, hf_cache_dir, is_available, resolve_file, torch_cache_dir

__all__ = [
    "FORMATS", "CheckpointDescriptionError", "WeightsError", "WeightsUnavailableError", "cached_path",
    "convert_state_dict", "detect_format", "hf_cache_dir", "is_available", "load_into",
    "read_safetensors_metadata", "read_state_dict", "resolve_file", "torch_cache_dir",
]
