"""The model zoo: every variant attnviz can show, where its weights come from, how it loads.

Two families: ImageNet ResNet-50s whose weights the papers' authors released (downloaded
on first use into the ecosystem's caches, never at import), and the built-in models trained
by ``python -m attnviz train`` that ship in ``checkpoints/`` and work offline. Beside them:
the user's own models from the folders of ``$ATTNVIZ_MODELS`` / :func:`add_models_dir`, and any
timm model by name (``timm:NAME``, see :mod:`.timm_by_name`).
"""
from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from ..preprocess import PreprocessConfig
from .resnet import AttentionResNet

CHECKPOINT_DIR = Path(__file__).resolve().parents[2] / "checkpoints"


def checkpoint_dir() -> Path:
    """Where built-in checkpoints are found: ``$ATTNVIZ_CHECKPOINTS`` or the repo's ``checkpoints/``."""
    return Path(os.environ.get("ATTNVIZ_CHECKPOINTS", CHECKPOINT_DIR))


CHECKPOINT_FORMAT = "attnviz-checkpoint/1"


@dataclass(frozen=True)
class WeightsSource:
    """Where a variant's pretrained weights come from and in which layout they are stored.

    ``format`` names the converter from that layout to the model's state dict (see
    :mod:`attnviz.models.weights`). Downloads go to ``url`` (torch hub cache, ``TORCH_HOME``)
    or to the Hugging Face Hub ``hf_repo``/``hf_filename`` (``HF_HOME``, ``HF_HUB_OFFLINE``).
    """

    format: str
    description: str
    license: str
    url: str | None = None
    hf_repo: str | None = None
    hf_filename: str | None = None
    sha256: str | None = None  # full digest of the downloaded file, when published
    sha1: str | None = None  # pytorchcv publishes SHA-1 of the unpacked .pth
    reported_top1: float | None = None
    manual: str | None = None  # how to get the file when it cannot be downloaded automatically
    path: Path | None = None  # built-in checkpoint file


@dataclass(frozen=True)
class Variant:
    """One model variant: architecture, preprocessing, classes and weights source."""

    name: str
    block: Literal["se", "eca", "cbam", "bam", "spatial", "none", "custom"]
    description: str
    arch: dict[str, Any]
    preprocess: PreprocessConfig
    weights: WeightsSource
    family: Literal["attnviz", "timm"] = "attnviz"
    classes: tuple[str, ...] | None = None  # None: the ImageNet-1k classes
    builtin: bool = False
    metadata: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    #: Where the variant comes from: ``"imagenet"`` (the zoo below), ``"builtin"`` (``checkpoints/``),
    #: ``"folder"`` (a models folder), ``"file"`` (a self-describing ``--weights`` file), ``"timm"``
    #: (``timm:NAME``) or ``"custom"`` (made in code, e.g. by ``wrap_model``).
    origin: Literal["imagenet", "builtin", "folder", "file", "timm", "custom"] = "custom"

    def build(self) -> nn.Module:
        """The architecture at random init (no weights)."""
        if self.family == "timm":
            import timm

            extra = {k: v for k, v in self.arch.items() if k != "model_name"}  # e.g. num_classes
            return timm.create_model(self.arch["model_name"], pretrained=False, **extra)
        return AttentionResNet(**self.arch)

    @property
    def input_size(self) -> int:
        return self.preprocess.input_size

    @cached_property
    def params(self) -> int:
        with torch.device("meta"):
            model = self.build()
        return sum(p.numel() for p in model.parameters())

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.classes if self.classes is not None else imagenet_classes()


def imagenet_classes() -> tuple[str, ...]:
    """The 1000 ImageNet-1k class names, as shipped inside torchvision (no download)."""
    from torchvision.models import ResNet50_Weights

    return tuple(ResNet50_Weights.IMAGENET1K_V2.meta["categories"])


_TIMM_RELEASES = "https://github.com/rwightman/pytorch-image-models/releases/download"
_PYTORCHCV_RELEASES = "https://github.com/osmr/imgclsmob/releases/download"
_IMAGENET_256 = PreprocessConfig(input_size=224, resize_size=256, interpolation="bilinear")

IMAGENET_VARIANTS: tuple[Variant, ...] = (
    Variant(
        name="resnet50",
        origin="imagenet",
        block="none",
        description="Plain ResNet-50 (baseline), torchvision's IMAGENET1K_V2 weights",
        arch={"depth": 50},
        preprocess=PreprocessConfig(input_size=224, resize_size=232, interpolation="bilinear"),
        weights=WeightsSource(
            format="torchvision",
            description="torchvision ResNet50_Weights.IMAGENET1K_V2",
            license="BSD-3-Clause",
            url="https://download.pytorch.org/models/resnet50-11ad3fa6.pth",
            reported_top1=80.858,
        ),
    ),
    Variant(
        name="se_resnet50",
        origin="imagenet",
        block="se",
        description="SE-ResNet-50, the SENet authors' Caffe model (stride in 1×1 conv)",
        arch={"depth": 50, "attn": "se", "stride_in_1x1": True, "stem_pool": "max_ceil"},
        preprocess=_IMAGENET_256,
        weights=WeightsSource(
            format="cadene_senet",
            description="SENet authors' weights (Hu et al.), ported by Cadene; timm legacy_seresnet50.in1k",
            license="Apache-2.0 (SENet release); BSD-3-Clause (port)",
            url=f"{_TIMM_RELEASES}/v0.1-cadene/se_resnet50-ce0d4300.pth",
            reported_top1=77.636,
        ),
    ),
    Variant(
        name="seresnet50",
        origin="imagenet",
        block="se",
        description="SE-ResNet-50 retrained by timm (seresnet50.ra2_in1k), a second SE choice",
        arch={"model_name": "seresnet50"},
        family="timm",
        preprocess=PreprocessConfig(input_size=224, resize_size=256, interpolation="bicubic"),
        weights=WeightsSource(
            format="timm",
            description="timm seresnet50.ra2_in1k (RandAugment recipe)",
            license="Apache-2.0",
            hf_repo="timm/seresnet50.ra2_in1k",
            hf_filename="model.safetensors",
            reported_top1=80.274,
        ),
    ),
    Variant(
        name="eca_resnet50",
        origin="imagenet",
        block="eca",
        description="ECA-ResNet-50, the ECA-Net authors' eca_resnet50_k3557 (k = 3, 5, 5, 7)",
        arch={
            "depth": 50,
            "attn": "eca",
            "stage_attn_kwargs": [{"kernel_size": k} for k in (3, 5, 5, 7)],
        },
        preprocess=_IMAGENET_256,
        weights=WeightsSource(
            format="eca_authors",
            description="ECA-Net authors' release (Wang et al.), eca_resnet50_k3557.pth.tar",
            license="MIT (ECA-Net repository)",
            # The authors' Google Drive link from their README; '#...' names the cached file.
            url=(
                "https://drive.usercontent.google.com/download?id=1670rce333c_lyMWFzBlNZoVUvtxbCF_U"
                "&export=download&confirm=t#eca_resnet50_k3557.pth.tar"
            ),
            sha256=None,  # not published by the authors
            reported_top1=77.42,
            manual=(
                "if the download fails (Google Drive quota or confirmation page), get "
                "eca_resnet50_k3557.pth.tar from the ECA-Net authors' README (github.com/BangguWu/ECANet: "
                "Google Drive id 1670rce333c_lyMWFzBlNZoVUvtxbCF_U, or Baidu Pan with extract code no6u) "
                "and pass it with --weights FILE"
            ),
        ),
    ),
    Variant(
        name="ecaresnet50d",
        origin="imagenet",
        block="eca",
        description="ECA-ResNet-50-D by timm (ecaresnet50d.miil_in1k): deep stem, a second ECA choice",
        arch={"model_name": "ecaresnet50d"},
        family="timm",
        preprocess=PreprocessConfig(input_size=224, resize_size=256, interpolation="bicubic"),
        weights=WeightsSource(
            format="timm",
            description="timm ecaresnet50d.miil_in1k",
            license="Apache-2.0",
            hf_repo="timm/ecaresnet50d.miil_in1k",
            hf_filename="model.safetensors",
            reported_top1=81.65,
        ),
    ),
    Variant(
        name="cbam_resnet50",
        origin="imagenet",
        block="cbam",
        description="CBAM-ResNet-50, the CBAM authors' weights as mirrored by pytorchcv",
        arch={"depth": 50, "attn": "cbam"},
        preprocess=_IMAGENET_256,
        weights=WeightsSource(
            format="pytorchcv_cbam",
            description="CBAM authors' weights (Woo et al.) via pytorchcv cbam_resnet50",
            license="MIT (pytorchcv)",
            url=f"{_PYTORCHCV_RELEASES}/v0.0.537/cbam_resnet50-0505-d8cf8488.pth.zip",
            sha1="d8cf8488efb97afecd6b3287a3ca9fa093fc3127",
            reported_top1=77.622,
        ),
    ),
    Variant(
        name="bam_resnet50",
        origin="imagenet",
        block="bam",
        description="BAM-ResNet-50, the BAM authors' weights as mirrored by pytorchcv",
        arch={"depth": 50, "attn": "bam"},
        preprocess=_IMAGENET_256,
        weights=WeightsSource(
            format="pytorchcv_bam",
            description="BAM authors' weights (Park et al.) via pytorchcv bam_resnet50",
            license="MIT (pytorchcv)",
            url=f"{_PYTORCHCV_RELEASES}/v0.0.499/bam_resnet50-0547-a04adf3c.pth.zip",
            sha1="a04adf3c93f56836509f66668aa90360c9688eb8",
            reported_top1=76.86,
        ),
    ),
)


def variant_from_sidecar(sidecar: Path) -> Variant:
    """A built-in variant from its ``<name>.json`` sidecar next to ``<name>.safetensors``."""
    from .descriptions import variant_from_sidecar as from_sidecar

    return from_sidecar(sidecar, origin="builtin")


#: Folders of the user's own models, besides the built-ins: ``dir1:dir2`` (``;`` on Windows).
MODELS_ENV = "ATTNVIZ_MODELS"
_added_models_dirs: list[Path] = []


def _models_dir_error(source: str, folder: Path) -> Exception:
    from .weights.errors import WeightsError

    return WeightsError(f"{source}: {folder} is not a folder; give folders of attnviz checkpoints "
                        f"(*.safetensors written by `python -m attnviz train`), separated by {os.pathsep!r}")


def models_dirs() -> list[Path]:
    """The folders whose models are added beside the built-ins: ``$ATTNVIZ_MODELS``, then those
    given to :func:`add_models_dir` (``--models-dir``), each once."""
    env = [Path(p).expanduser() for p in os.environ.get(MODELS_ENV, "").split(os.pathsep) if p.strip()]
    for folder in env:
        if not folder.is_dir():
            raise _models_dir_error(MODELS_ENV, folder)
    out: list[Path] = []
    for folder in env + _added_models_dirs:
        if folder.resolve() not in [f.resolve() for f in out]:
            out.append(folder)
    return out


def add_models_dir(folder: str | os.PathLike) -> None:
    """Add the models of ``folder`` beside the built-ins (as ``$ATTNVIZ_MODELS`` does), for this process."""
    path = Path(folder).expanduser()
    if not path.is_dir():
        raise _models_dir_error("models folder", path)
    with _registry_lock:
        _added_models_dirs.append(path)
    reset_registry()


def _free_name(name: str, folder: Path, taken: dict[str, Variant]) -> str:
    """``name``, or ``name@<folder>`` (then ``-2``, ``-3``...) when a variant already has it:
    a folder's model never replaces a built-in or an earlier folder's model."""
    if name not in taken:
        return name
    candidate, n = f"{name}@{folder.resolve().name}", 1
    while candidate in taken:
        n += 1
        candidate = f"{name}@{folder.resolve().name}-{n}"
    return candidate


_registry_lock = threading.Lock()
_registry: dict[str, Variant] | None = None


def _build_registry() -> dict[str, Variant]:
    from dataclasses import replace

    from .descriptions import folder_variants

    reg = {v.name: v for v in IMAGENET_VARIANTS}
    for sidecar in sorted(checkpoint_dir().glob("*.json")):
        v = variant_from_sidecar(sidecar)
        reg[v.name] = v
    for folder in models_dirs():
        if folder.resolve() == checkpoint_dir().resolve():
            continue  # already there as the built-ins
        for v in folder_variants(folder):
            name = _free_name(v.name, folder, reg)
            reg[name] = v if name == v.name else replace(v, name=name)
    return reg


def variants() -> dict[str, Variant]:
    """All variants by name: ImageNet ones first, then the built-ins found in ``checkpoints/``, then
    the models of the folders of ``$ATTNVIZ_MODELS`` and :func:`add_models_dir`."""
    global _registry
    with _registry_lock:
        if _registry is None:
            _registry = _build_registry()
        return _registry


def reset_registry() -> None:
    """Forget the variant list, e.g. after new built-in checkpoints were written."""
    global _registry
    with _registry_lock:
        _registry = None


def get_variant(name: str) -> Variant:
    """The variant called ``name`` (see :func:`variants`), or ``timm:NAME`` for any timm model."""
    from .timm_by_name import TIMM_PREFIX, timm_variant

    if name.startswith(TIMM_PREFIX):
        return timm_variant(name[len(TIMM_PREFIX):])
    try:
        return variants()[name]
    except KeyError:
        raise KeyError(f"unknown variant {name!r}; available: {', '.join(variants())}, or timm:NAME "
                       "for any timm model") from None
