"""Pixels to model inputs, with exact geometry.

:func:`prepare` / :func:`to_tensor` reproduce ``Resize(resize_size) + CenterCrop(input_size)``
but resample the centred crop box in ONE step with ``Image.resize(..., box=crop_box)``.
:class:`Geometry` records that box in original-image pixels (floats, no rounding), so any
feature map of the model, upsampled bilinearly (``align_corners=False``) onto
:meth:`PreparedImage.view`, lies exactly over the region the model saw.

What may be opened and how it is decoded (:func:`~attnviz.inputs.load_image`,
:class:`~attnviz.inputs.ImageLoadError`) is :mod:`attnviz.inputs`'s.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
from PIL import Image

from .inputs import MAX_IMAGE_PIXELS, Source, load_image

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class PreprocessConfig:
    """How a variant turns an image into its input: resize the shorter side to
    ``resize_size``, center-crop ``input_size`` × ``input_size``, normalize by mean/std."""

    input_size: int = 224
    resize_size: int = 256
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    interpolation: Literal["bilinear", "bicubic"] = "bilinear"

    @property
    def crop_fraction(self) -> float:
        return self.input_size / self.resize_size

    @property
    def resample(self) -> Image.Resampling:
        """The PIL resampling filter named by :attr:`interpolation`."""
        try:
            return _RESAMPLE[self.interpolation]
        except KeyError:
            raise ValueError(
                f"unknown interpolation {self.interpolation!r}; expected 'bilinear' or 'bicubic'"
            ) from None


_RESAMPLE = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}


# --------------------------------------------------------------------------------------
# Geometry and tensors
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Geometry:
    """Where the model input came from.

    ``crop_box`` is ``(left, top, right, bottom)`` in ORIGINAL pixel coordinates (continuous:
    pixel ``i`` covers ``[i, i + 1)``), square, and is exactly what was resampled to the
    ``input_size`` × ``input_size`` model input.
    """

    original_size: tuple[int, int]  # (width, height) of the loaded image (after EXIF transpose)
    crop_box: tuple[float, float, float, float]  # (left, top, right, bottom), original pixels
    input_size: int  # model input is input_size x input_size

    @property
    def crop_side(self) -> float:
        """Side of the (square) crop box in original pixels."""
        return self.crop_box[2] - self.crop_box[0]

    @property
    def scale(self) -> float:
        """Model-input pixels per original pixel."""
        return self.input_size / self.crop_side

    def input_to_original(self, x: float, y: float) -> tuple[float, float]:
        """Map continuous model-input coordinates to original-image coordinates."""
        s = self.crop_side / self.input_size
        return (self.crop_box[0] + x * s, self.crop_box[1] + y * s)

    def original_to_input(self, x: float, y: float) -> tuple[float, float]:
        """Map continuous original-image coordinates to model-input coordinates."""
        return ((x - self.crop_box[0]) * self.scale, (y - self.crop_box[1]) * self.scale)


def compute_geometry(size: tuple[int, int], config: PreprocessConfig) -> Geometry:
    """Geometry of ``Resize(resize_size) + CenterCrop(input_size)`` for an image of ``size``
    (width, height), without rounding: the crop side in original pixels is
    ``input_size * min(w, h) / resize_size``, centred."""
    w, h = (int(v) for v in size)
    if w <= 0 or h <= 0:
        raise ValueError(f"image size must be positive, got {size}")
    if config.input_size <= 0 or config.resize_size <= 0:
        raise ValueError(f"input_size and resize_size must be positive, got {config}")
    if config.input_size > config.resize_size:
        raise ValueError(
            f"input_size ({config.input_size}) larger than resize_size ({config.resize_size}) "
            "would crop outside the image"
        )
    side = config.input_size * min(w, h) / config.resize_size
    # (w ± side) / 2 keeps the box inside [0, w] exactly, even with float rounding.
    box = ((w - side) / 2.0, (h - side) / 2.0, (w + side) / 2.0, (h + side) / 2.0)
    return Geometry(original_size=(w, h), crop_box=box, input_size=int(config.input_size))


def _norm_constants(config: PreprocessConfig) -> tuple[np.ndarray, np.ndarray]:
    std = np.asarray(config.std, dtype=np.float64)
    mean = np.asarray(config.mean, dtype=np.float64)
    return (1.0 / (255.0 * std)).astype(np.float32), (-mean / std).astype(np.float32)


def to_tensor(image: Image.Image, geometry: Geometry, config: PreprocessConfig) -> torch.Tensor:
    """Resample ``geometry.crop_box`` of ``image`` to S×S in one step and normalize.

    Returns a float32 tensor of shape ``[1, 3, S, S]`` with ``S = geometry.input_size``.
    """
    if image.mode != "RGB":
        raise ValueError(f"to_tensor expects an RGB image, got mode {image.mode!r}")
    if tuple(image.size) != tuple(geometry.original_size):
        raise ValueError(
            f"image size {image.size} does not match geometry.original_size "
            f"{geometry.original_size}"
        )
    s = geometry.input_size
    crop = image.resize((s, s), config.resample, box=geometry.crop_box)
    hwc = np.asarray(crop)  # uint8, H x W x 3
    mul, add = _norm_constants(config)
    chw = np.empty((3, s, s), dtype=np.float32)
    for c in range(3):  # (x / 255 - mean) / std, written straight into CHW layout
        np.multiply(hwc[:, :, c], mul[c], out=chw[c], dtype=np.float32)
        chw[c] += add[c]
    return torch.from_numpy(chw).unsqueeze(0)


@dataclass
class PreparedImage:
    """A loaded image, its model input and the geometry linking the two."""

    tensor: torch.Tensor  # [1, 3, input_size, input_size] float32, normalized
    image: Image.Image  # the full RGB image as loaded (the view itself in a light copy)
    geometry: Geometry
    #: set in a :meth:`light_copy`: the one view size it still has
    view_only: int | None = None
    _views: dict[int, Image.Image] = field(default_factory=dict, init=False, repr=False,
                                           compare=False)

    def view(self, max_side: int = 448) -> Image.Image:
        """The crop region of the ORIGINAL image (exactly the region the model saw), square,
        with side ``min(max_side, crop side in original pixels)`` but at least ``input_size``.

        Cached per ``max_side``; the returned image is shared, so copy it before drawing on it.
        """
        cached = self._views.get(max_side)
        if cached is not None:
            return cached
        if self.view_only is not None:
            raise ValueError(f"this light copy keeps the view of max_side={self.view_only} only, "
                             f"not {max_side}: inspect the image again for other sizes")
        g = self.geometry
        side = max(g.input_size, min(int(max_side), int(round(g.crop_side))))
        view = self.image.resize((side, side), Image.Resampling.BICUBIC, box=g.crop_box)
        self._views[max_side] = view
        return view

    def nbytes(self) -> int:
        """Memory held: the model input, the image and its cached views (a light copy's image
        is its view, counted once)."""
        images = {id(im): im for im in (self.image, *self._views.values())}
        pixels = sum(im.width * im.height * len(im.getbands()) for im in images.values())
        return self.tensor.numel() * self.tensor.element_size() + pixels

    def light_copy(self, max_side: int = 448) -> PreparedImage:
        """The same geometry and the view at ``max_side``, without the model input and the
        full-size image: what a server keeps of a result for its follow-ups (a 12-megapixel
        photo alone is 36 MB, its 448-px view 0.6 MB)."""
        view = self.view(max_side)
        light = PreparedImage(tensor=self.tensor.new_empty((0,)), image=view, geometry=self.geometry,
                              view_only=max_side)
        light._views[max_side] = view
        return light


def prepare(
    source: Source,
    config: PreprocessConfig = PreprocessConfig(),
    *,
    max_pixels: int = MAX_IMAGE_PIXELS,
) -> PreparedImage:
    """Load ``source`` (see :func:`load_image`) and build the model input for ``config``."""
    image = load_image(source, max_pixels=max_pixels)
    geometry = compute_geometry(image.size, config)
    return PreparedImage(tensor=to_tensor(image, geometry, config), image=image, geometry=geometry)


def prepare_batch(
    sources: Iterable[Source],
    config: PreprocessConfig = PreprocessConfig(),
    *,
    max_pixels: int = MAX_IMAGE_PIXELS,
) -> tuple[torch.Tensor, list[PreparedImage]]:
    """Prepare several inputs; returns the stacked ``[N, 3, S, S]`` batch and the items."""
    items = [prepare(src, config, max_pixels=max_pixels) for src in sources]
    s = config.input_size
    if not items:
        return torch.empty((0, 3, s, s), dtype=torch.float32), items
    return torch.cat([it.tensor for it in items], dim=0), items


__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "Geometry",
    "PreparedImage",
    "PreprocessConfig",
    "compute_geometry",
    "prepare",
    "prepare_batch",
    "to_tensor",
]
