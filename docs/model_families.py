"""Print docs/MODELS.md's table of supported timm attention families, measured: each example
model is built by timm (structure only, on the meta device: no weights, no download), its
attention modules are found by ``attnviz.find_gates`` and counted independently with
``isinstance`` against timm's classes (the script fails if the two disagree), and ImageNet
weights are looked up in timm's own registry (``timm.list_pretrained``, offline).

    python docs/model_families.py            # prints the markdown table
"""
from __future__ import annotations

import sys
from collections import Counter
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import timm  # noqa: E402
import torch  # noqa: E402

from timm.layers.cbam import CbamModule, LightCbamModule  # noqa: E402
from timm.layers.eca import CecaModule, EcaModule  # noqa: E402
from timm.layers.gather_excite import GatherExcite  # noqa: E402
from timm.layers.global_context import GlobalContext  # noqa: E402
from timm.layers.selective_kernel import SelectiveKernel  # noqa: E402
from timm.layers.split_attn import SplitAttn  # noqa: E402
from timm.layers.squeeze_excite import EffectiveSEModule, SEModule  # noqa: E402
from timm.models._efficientnet_blocks import SqueezeExcite  # noqa: E402
from timm.models.senet import SEModule as LegacySEModule  # noqa: E402

from attnviz.capture import find_gates  # noqa: E402


def _attn(layer: object, shown: str) -> tuple[dict, str]:
    """Arguments that put an attention module into timm's ResNet blocks, and their source text."""
    return {"block_args": {"attn_layer": layer}}, f"block_args=dict(attn_layer={shown})"


NONE: tuple[dict, str] = ({}, "")
# (family, timm model name, (extra create_model arguments, as shown in the docs))
EXAMPLES: tuple[tuple[str, str, tuple[dict, str]], ...] = (
    ("SE-ResNet", "seresnet50", NONE),
    ("SENet (legacy port)", "legacy_seresnet50", NONE),
    ("EfficientNet", "efficientnet_b0", NONE),
    ("MobileNetV3 (hard-sigmoid SE)", "mobilenetv3_large_100", NONE),
    ("MixNet", "mixnet_s", NONE),
    ("GhostNet (hard-sigmoid SE)", "ghostnet_100", NONE),
    ("RegNetY", "regnety_002", NONE),
    ("ReXNet", "rexnet_100", NONE),
    ("NFNet (SE)", "dm_nfnet_f0", NONE),
    ("NFNet (ECA)", "eca_nfnet_l0", NONE),
    ("ECA-ResNet", "ecaresnet50d", NONE),
    ("VoVNet (effective SE)", "ese_vovnet19b_dw", NONE),
    ("ResNet + CBAM", "resnet50", _attn("cbam", '"cbam"')),
    ("ResNet + light CBAM", "resnet50", _attn("lcbam", '"lcbam"')),
    ("ResNet + circular ECA", "resnet50", _attn("ceca", '"ceca"')),
    # timm 1.0's GatherExcite builds only without its mlp (its ``*dd`` unpacks dict keys as arguments)
    ("ResNet + Gather-Excite", "resnet50", _attn(partial(GatherExcite, use_mlp=False, extent=2),
                                                 "partial(GatherExcite, use_mlp=False, extent=2)")),
    ("ResNet + Global Context (scaling)", "resnet50", _attn("gc", '"gc"')),
    ("GC-ResNet (Global Context, additive)", "gcresnet50t", NONE),
    ("SK-ResNet (Selective Kernel)", "skresnet18", NONE),
    ("ResNeSt (Split Attention)", "resnest14d", NONE),
)
#: timm's attention classes, for a count independent of attnviz's table
TIMM_CLASSES = (SEModule, LegacySEModule, SqueezeExcite, EffectiveSEModule, EcaModule, CecaModule, CbamModule,
                LightCbamModule, GatherExcite, GlobalContext, SelectiveKernel, SplitAttn)


def _build(name: str, kwargs: dict) -> torch.nn.Module:
    with torch.device("meta"):
        return timm.create_model(name, pretrained=False, **kwargs)


def _weights(tags: list[str], extra: str) -> str:
    if extra:
        return "no (attention added at random init)"
    in1k = [t for t in tags if t.endswith("in1k")]
    return f"yes: `{(in1k or tags)[0]}`" if tags else "no"


def row(family: str, name: str, args: tuple[dict, str]) -> str:
    kwargs, extra = args
    model = _build(name, kwargs)
    sites = find_gates(model)
    counted = sum(isinstance(m, TIMM_CLASSES) for m in model.modules())
    if counted != len(sites):
        raise SystemExit(f"{name}: find_gates found {len(sites)} blocks, {counted} attention modules counted")
    classes = ", ".join(f"`{c}`" for c in Counter(type(s.module).__name__ for s in sites))
    roles = sorted({r if r != "joint" else "joint (channel + spatial means)" for s in sites for r in s.gates})
    kinds = ", ".join(sorted({s.kind for s in sites}))
    shown = f', {extra}' if extra else ""
    tags = timm.list_pretrained(f"{name}.*")
    pretrained = "True" if not extra and tags else "False"
    how = f'`attnviz.inspect(img, timm.create_model("{name}"{shown}, pretrained={pretrained}).eval())`'
    return (f"| {family} | {classes} | {kinds} | {', '.join(roles)} | `{name}` | {len(sites)} | "
            f"{_weights(tags, extra)} | {how} |")


def table() -> str:
    head = ("| family | attention module | kind | gates | example | found | ImageNet weights in timm | inspect |\n"
            "|---|---|---|---|---|---|---|---|")
    return "\n".join([head, *(row(*example) for example in EXAMPLES)])


if __name__ == "__main__":
    print(table())
