"""Train attnviz's built-in models, or fine-tune attention blocks on your own images.

Mode A (default) trains small plain / SE / ECA / CBAM / BAM ResNets on the synthetic
"find the class object" images of :mod:`attnviz.synthetic` and writes, for each variant,
``<out>/<name>.safetensors`` (the state dict), ``<out>/<name>.json`` (the sidecar that says how
to rebuild and feed the model) and ``<out>/<name>.log.jsonl`` (per-epoch metrics)::

    python -m attnviz train                      # all five, the shipped checkpoints/
    python -m attnviz train --variants se cbam --epochs 2 --out runs/

Mode B (``--imagefolder DIR``) attaches attention blocks to a pretrained torchvision ResNet
(``--arch resnet18|resnet34|resnet50``) and fine-tunes it on a ``torchvision.datasets.ImageFolder``
(``DIR/train`` + ``DIR/val``, or ``DIR`` split by ``--val-fraction``); ``--freeze-backbone``
trains only the attention blocks and the new ``fc``::

    python -m attnviz train --imagefolder ~/pets --arch resnet50 --variants se --freeze-backbone

Training is resumable: after every epoch ``<out>/<name>.resume.pt`` holds model, optimizer,
scheduler and epoch; ``--resume`` continues from it (it is deleted when the run finishes).
The synthetic training stream is indexed by step, so a resumed run sees exactly the batches an
uninterrupted one would.

On CPU the defaults are tuned for small machines: channels-last tensors, bfloat16 autocast where
the CPU has native bf16, the stream rendered once and shared by all variants, and the thread
count re-measured every 150 steps (all cores, or one when other jobs keep the cores busy and
OpenMP's spin-waiting would make several threads slower than one). The default command trains
all five built-in models in about 15–20 minutes on 2 cores.

The package: :mod:`.cli` (options, and the plan each mode makes of them), :mod:`.data` (the
synthetic and ImageFolder loaders), :mod:`.loop` (the one training loop shared by both),
:mod:`.checkpoint` (weights, sidecar, log, resume state) and :mod:`.arch` (variants and
architectures).
"""
from __future__ import annotations

from .arch import (
    SYNTHETIC_ARCH, SYNTHETIC_ATTN_KWARGS, TORCHVISION_ARCHS, VARIANTS, checkpoint_name, is_attention_key,
    load_backbone, pretrained_state_dict, synthetic_arch, torchvision_arch,
)
from .checkpoint import FORMAT, SYNTHETIC_LICENSE
from .cli import IMAGEFOLDER_DEFAULTS, SYNTHETIC_DEFAULTS, add_arguments, main, run
from .data import STREAM_CACHE_BYTES

__all__ = [
    "FORMAT", "IMAGEFOLDER_DEFAULTS", "STREAM_CACHE_BYTES", "SYNTHETIC_ARCH", "SYNTHETIC_ATTN_KWARGS",
    "SYNTHETIC_DEFAULTS", "SYNTHETIC_LICENSE", "TORCHVISION_ARCHS", "VARIANTS", "add_arguments",
    "checkpoint_name", "is_attention_key", "load_backbone", "main", "pretrained_state_dict", "run",
    "synthetic_arch", "torchvision_arch",
]
