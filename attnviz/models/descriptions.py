"""Self-describing checkpoints: what attnviz's trainer says about a model, turned into a Variant.

``python -m attnviz train`` writes one description per model (architecture, attention block,
classes, preprocessing, and where it came from: data folder, number of images, epochs,
validation accuracy). It goes into the ``<name>.json`` sidecar and, JSON-encoded under
:data:`DESCRIPTION_KEY`, into the safetensors header's ``__metadata__``, so the weights file
alone is enough. Both copies go through the one function :func:`variant_from_description`:
the built-in models of ``checkpoints/``, the models of ``ATTNVIZ_MODELS`` / ``--models-dir``
folders and a file given alone as ``--weights FILE``.
"""
from __future__ import annotations

import functools
import inspect as _inspect
import json
from dataclasses import fields
from pathlib import Path
from typing import Any

import torch

from ..preprocess import PreprocessConfig
from .resnet import AttentionResNet
from .weights.errors import CheckpointDescriptionError, WeightsError
from .weights.files import read_safetensors_metadata
from .zoo import CHECKPOINT_FORMAT, Variant, WeightsSource

#: The safetensors ``__metadata__`` key holding the JSON-encoded description.
DESCRIPTION_KEY = "attnviz.description"
BLOCKS = ("se", "eca", "cbam", "bam", "spatial", "none")
_RESNET_KEYS = tuple(p for p in _inspect.signature(AttentionResNet.__init__).parameters if p != "self")
_PREPROCESS_KEYS = tuple(f.name for f in fields(PreprocessConfig))
_BUILTIN_SOURCE = "built-in: attnviz's own training on synthetic shapes (offline)"


def _fail(where: str, problem: str) -> CheckpointDescriptionError:
    return CheckpointDescriptionError(f"{where}: {problem}")


def _checked_arch(meta: dict[str, Any], where: str) -> dict[str, Any]:
    """The AttentionResNet kwargs of a description, built once on the meta device to prove they work."""
    arch = meta.get("arch")
    if not isinstance(arch, dict) or "depth" not in arch:
        raise _fail(where, "its description has no architecture ('arch' with at least 'depth')")
    unknown = sorted(set(arch) - set(_RESNET_KEYS))
    if unknown:
        raise _fail(where, f"unknown architecture keys {unknown}; accepted: {', '.join(_RESNET_KEYS)}")
    try:
        with torch.device("meta"):
            AttentionResNet(**arch)
    except (TypeError, ValueError, KeyError) as e:
        raise _fail(where, f"its architecture does not build ({type(e).__name__}: {e})") from None
    return dict(arch)


def _checked_classes(meta: dict[str, Any], arch: dict[str, Any], where: str) -> tuple[str, ...]:
    classes = meta.get("classes")
    if not isinstance(classes, list) or not classes or not all(isinstance(c, str) for c in classes):
        raise _fail(where, "its description needs 'classes', a non-empty list of class names")
    n_out = arch.get("num_classes", 1000)
    if n_out != len(classes):
        raise _fail(where, f"its description lists {len(classes)} classes but its architecture has "
                           f"{n_out} outputs (arch.num_classes)")
    return tuple(classes)


def _checked_preprocess(meta: dict[str, Any], where: str) -> PreprocessConfig:
    pre = meta.get("preprocess")
    accepted = f"accepted: {', '.join(_PREPROCESS_KEYS)} (mean/std: 3 numbers; interpolation: bilinear or bicubic)"
    if not isinstance(pre, dict) or set(pre) - set(_PREPROCESS_KEYS):
        raise _fail(where, f"its description's 'preprocess' is not valid; {accepted}")
    try:
        config = PreprocessConfig(**{**pre, **{k: tuple(float(x) for x in pre[k]) for k in ("mean", "std") if k in pre}})
        if config.interpolation not in ("bilinear", "bicubic"):
            raise ValueError(f"interpolation {config.interpolation!r}")
        if len(config.mean) != 3 or len(config.std) != 3 or config.input_size > config.resize_size:
            raise ValueError("sizes or channel count")
    except (TypeError, ValueError) as e:
        raise _fail(where, f"its description's 'preprocess' is not valid ({e}); {accepted}") from None
    return config


def provenance(meta: dict[str, Any], *, builtin: bool = False) -> str:
    """Where a model's weights came from, in words, e.g. ``fine-tuned by attnviz on data/pets,
    18 images, 3 epochs, val acc 0.944``; read from the description's dataset, training and metrics."""
    dataset, training = meta.get("dataset") or {}, meta.get("training") or {}
    acc = (meta.get("metrics") or {}).get("val_accuracy")
    epochs = training.get("epochs")
    tail = "".join([f", {epochs} epoch{'s' if epochs != 1 else ''}" if epochs else "",
                    f", val acc {acc:.3f}" if isinstance(acc, (int, float)) else ""])
    if dataset.get("generator") == "attnviz.synthetic":
        return _BUILTIN_SOURCE if builtin else f"trained by attnviz on its synthetic shapes{tail}"
    if dataset.get("generator") == "torchvision.datasets.ImageFolder":
        n = int(dataset.get("train_size", 0)) + int(dataset.get("val_size", 0))
        backbone = str(dataset.get("backbone", ""))
        verb = "trained from random init" if backbone.startswith("none") else "fine-tuned"
        return f"{verb} by attnviz on {dataset.get('root', '?')}, {n} images{tail}"
    return f"attnviz checkpoint {meta.get('name', '?')}{tail}"


def variant_from_description(meta: Any, *, where: str, weights_path: Path, name: str | None = None,
                             origin: str = "file") -> Variant:
    """A :class:`Variant` from a checkpoint description (sidecar or embedded), validated.

    ``where`` names the file in errors; ``name`` defaults to the description's own name;
    ``origin`` is ``"builtin"`` (``checkpoints/``), ``"folder"`` (a models folder) or ``"file"``.
    Raises :class:`CheckpointDescriptionError`, one line naming the file, for a wrong format
    version, an unknown architecture, classes that do not match the outputs, bad preprocessing.
    """
    if not isinstance(meta, dict):
        raise _fail(where, f"its description is not a JSON object; expected an {CHECKPOINT_FORMAT} description")
    if meta.get("format") != CHECKPOINT_FORMAT:
        raise _fail(where, f"description format {meta.get('format')!r} is not supported; accepted: {CHECKPOINT_FORMAT}")
    arch = _checked_arch(meta, where)
    block = meta.get("block", arch.get("attn") or "none")
    if block not in BLOCKS:
        raise _fail(where, f"unknown attention block {block!r}; accepted: {', '.join(BLOCKS)}")
    classes = _checked_classes(meta, arch, where)
    builtin = origin == "builtin"
    source = provenance(meta, builtin=builtin)
    label = "plain" if block == "none" else block.upper()
    if builtin and source == _BUILTIN_SOURCE:
        description = f"Built-in {block} ResNet-{arch['depth']} trained on attnviz's synthetic shapes"
    else:
        description = f"{label} ResNet-{arch['depth']}, {source}"
    acc = (meta.get("metrics") or {}).get("val_accuracy")
    return Variant(
        name=name or str(meta.get("name") or weights_path.stem), block=block, description=description,
        arch=arch, preprocess=_checked_preprocess(meta, where), classes=classes, builtin=builtin, origin=origin,
        weights=WeightsSource(
            format="attnviz", description=source, license=str(meta.get("license", "CC0-1.0")), path=weights_path,
            # Only the built-ins' accuracy goes here: UIs label this figure by origin, and for the user's
            # own models it is already in the description (their own validation set, not ImageNet's).
            reported_top1=round(100 * acc, 2) if builtin and isinstance(acc, (int, float)) else None,
        ),
        metadata=meta,
    )


def variant_from_sidecar(sidecar: Path, *, origin: str = "builtin", name: str | None = None) -> Variant:
    """The variant a ``<name>.json`` sidecar describes, for the ``<name>.safetensors`` beside it."""
    try:
        meta = json.loads(sidecar.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise _fail(str(sidecar), f"not a readable JSON sidecar ({e}); expected an {CHECKPOINT_FORMAT} description") from None
    return variant_from_description(meta, where=str(sidecar), weights_path=sidecar.with_suffix(".safetensors"),
                                    name=name, origin=origin)


def embedded_description(path: Path) -> Any:
    """The description stored in a safetensors file's header, or None when it has none."""
    text = read_safetensors_metadata(path).get(DESCRIPTION_KEY)
    if text is None:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise _fail(str(path), f"its {DESCRIPTION_KEY!r} metadata is not valid JSON ({e})") from None


def _attnviz_sidecar(path: Path) -> dict[str, Any] | None:
    """A JSON file's content when it claims to be an attnviz sidecar; None for any other file
    (unrelated JSON files may sit beside weights)."""
    try:
        meta = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return meta if isinstance(meta, dict) and str(meta.get("format", "")).startswith("attnviz-checkpoint") else None


def variant_from_weights_file(path: str | Path, *, origin: str = "file", name: str | None = None) -> Variant | None:
    """The variant a weights file describes: its embedded description, else an attnviz sidecar
    ``<stem>.json`` beside it; None when it has neither (a plain state dict).

    The variant is named after the file's stem unless ``name`` is given.
    """
    path = Path(path)
    if not path.is_file():
        return None
    sidecar = path.with_suffix(".json")
    # Read once per version of the two files: load_model asks on every call with weights=FILE,
    # and reading means parsing the header and building the model on the meta device (~30 ms).
    return _described_variant(path, _file_version(path), sidecar, _file_version(sidecar), name or path.stem, origin)


def _file_version(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size


@functools.lru_cache(maxsize=64)
def _described_variant(path: Path, _version: tuple[int, int] | None, sidecar: Path,
                       _sidecar_version: tuple[int, int] | None, name: str, origin: str) -> Variant | None:
    meta, where = embedded_description(path), str(path)
    if meta is None:
        meta, where = _attnviz_sidecar(sidecar), str(sidecar)
    if meta is None:
        return None
    return variant_from_description(meta, where=where, weights_path=path, name=name, origin=origin)


def folder_variants(folder: Path) -> list[Variant]:
    """The described models of a models folder (``ATTNVIZ_MODELS``, ``--models-dir``), named after
    their files; weights files with no description are not models attnviz can build, and are skipped."""
    found = []
    for path in sorted(folder.glob("*.safetensors")):
        v = variant_from_weights_file(path, origin="folder")
        if v is not None:
            found.append(v)
    return found


def check_head(variant: Variant, state: dict[str, torch.Tensor], where: str) -> None:
    """Raise (one line naming the file) when the classes a variant names do not match the number of
    outputs of the classifier weights about to be loaded (``fc.weight`` of attnviz's ResNets)."""
    head = state.get("fc.weight")
    if variant.family != "attnviz" or variant.classes is None or head is None:
        return
    if head.shape[0] != len(variant.classes):
        raise WeightsError(
            f"{where}: {variant.name} names {len(variant.classes)} classes but its classifier fc.weight has "
            f"{head.shape[0]} outputs; the description (sidecar or metadata) and the weights do not belong together"
        )
