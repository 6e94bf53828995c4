"""Deterministic synthetic "find the class object" images for attnviz's built-in models.

Every image holds exactly one *target* object whose (shape, colour) combination is one of the
:data:`CLASSES`, among 2–5 *distractors* drawn from the same shapes and the same colours but
only in combinations that are not classes. Every shape and every colour therefore occurs in
both class and non-class combinations, so neither the shape nor the colour alone decides the
class: a model has to bind shape and colour at the target's location, which is what its
attention should show. Backgrounds are muted textures (noise, stripes, gradients, checker).

*Target-free* samples (``generate(..., with_target=False)``, label :data:`NO_TARGET`) are the
same scene with the target left out. The training stream mixes them in (every
``no_target_every``-th sample) with a uniform label: without them a classifier can name the
last class by elimination ("none of the other seven is present"), and then nothing on the
target explains its decision, so Grad-CAM for that class points anywhere.

Sample ``i`` depends only on ``(seed, i)`` (``np.random.default_rng([seed, i])``), so any
subset can be regenerated exactly, in any process, in any order.

>>> s = generate(3, seed=0)
>>> s.image.shape, s.image.dtype, CLASSES[s.label] == f"{s.colour} {s.shape}"
((96, 96, 3), dtype('uint8'), True)
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Iterator

import numpy as np
from PIL import Image, ImageDraw

#: Bumped whenever the same ``(seed, index)`` would render a different image.
VERSION = 1
DEFAULT_SIZE = 96
#: Label of a target-free sample (trained towards the uniform distribution over the classes).
NO_TARGET = -1

SHAPES = ("circle", "square", "triangle", "cross")
COLOURS = ("red", "green", "blue", "yellow")
#: Nominal RGB of each colour (each object gets a slight jitter around it).
RGB = {
    "red": (215, 35, 35),
    "green": (30, 170, 55),
    "blue": (40, 75, 225),
    "yellow": (235, 210, 30),
}

#: Class combinations: shape ``i`` with colours ``i`` and ``i + 1`` (mod 4). Every shape and
#: every colour is in exactly two class and two non-class combinations.
CLASS_COMBOS: tuple[tuple[str, str], ...] = tuple(
    (SHAPES[i], COLOURS[(i + d) % len(COLOURS)]) for i in range(len(SHAPES)) for d in (0, 1)
)
#: The combinations distractors are drawn from (never a class).
DISTRACTOR_COMBOS: tuple[tuple[str, str], ...] = tuple(
    (s, c) for s in SHAPES for c in COLOURS if (s, c) not in CLASS_COMBOS
)
#: Class names, ``"<colour> <shape>"``, indexed by label.
CLASSES: tuple[str, ...] = tuple(f"{c} {s}" for s, c in CLASS_COMBOS)

#: Per-channel mean / std of the generated images (measured on 4000 samples, seed 0, 96 px).
MEAN = (0.496, 0.492, 0.475)
STD = (0.214, 0.194, 0.21)

_BACKGROUNDS = ("noise", "stripes", "gradient", "checker", "rings")


@dataclass(frozen=True)
class SyntheticObject:
    shape: str
    colour: str
    center: tuple[float, float]  # (x, y) in pixels
    radius: float  # circumradius in pixels
    angle: float  # radians
    is_target: bool


@dataclass(frozen=True)
class SyntheticSample:
    """One rendered image. ``mask`` is the target's visible pixels, ``box`` its tight bounding
    box ``(x0, y0, x1, y1)`` with exclusive ``x1``/``y1`` (``mask[y0:y1, x0:x1]`` holds all of it)."""

    image: np.ndarray  # uint8 [H, W, 3]
    label: int
    mask: np.ndarray  # bool [H, W]
    box: tuple[int, int, int, int]
    objects: tuple[SyntheticObject, ...]  # drawing order; the target is last (absent if target-free)
    background: str

    @property
    def target(self) -> SyntheticObject:
        return self.objects[-1]

    @property
    def shape(self) -> str:
        return self.target.shape

    @property
    def colour(self) -> str:
        return self.target.colour

    @property
    def distractors(self) -> tuple[SyntheticObject, ...]:
        return self.objects[:-1]


def _muted_colour(rng: np.random.Generator) -> np.ndarray:
    """A low-saturation colour: a grey level plus a small tint."""
    return rng.uniform(45, 210) + rng.uniform(-22, 22, 3)


@lru_cache(maxsize=8)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    yy.flags.writeable = xx.flags.writeable = False
    return yy, xx


def _background(rng: np.random.Generator, size: int) -> tuple[np.ndarray, str]:
    kind = _BACKGROUNDS[int(rng.integers(len(_BACKGROUNDS)))]
    c0, c1 = _muted_colour(rng), _muted_colour(rng)
    if kind == "noise":
        # Low-frequency blotches: a small random grid upsampled bilinearly, per channel.
        cells = int(rng.integers(3, 9))
        # Mostly luminance, with a weak tint so that blotches never look like object colours.
        grid = rng.uniform(-1, 1, (cells, cells, 1)) * rng.uniform(30, 70)
        grid = grid + rng.uniform(-18, 18, (cells, cells, 3)) + 0.5 * (c0 + c1)
        small = Image.fromarray(np.clip(grid, 0, 255).astype(np.uint8))
        img = np.asarray(small.resize((size, size), Image.BILINEAR), np.float32)
    else:
        yy, xx = _grid(size)
        theta = rng.uniform(0, math.pi)
        u = xx * math.cos(theta) + yy * math.sin(theta)
        if kind == "stripes":
            period = rng.uniform(6, 24)
            t = (np.sin(u * (2 * math.pi / period)) > rng.uniform(-0.5, 0.5)).astype(np.float32)
        elif kind == "gradient":
            t = (u - u.min()) / max(float(np.ptp(u)), 1e-6)
        elif kind == "checker":
            v = -xx * math.sin(theta) + yy * math.cos(theta)
            period = rng.uniform(8, 24)
            t = ((np.floor(u / period) + np.floor(v / period)) % 2).astype(np.float32)
        else:  # rings
            cx, cy = rng.uniform(0, size, 2)
            r = np.sqrt((xx - cx) ** 2 + (yy - cy) ** 2)
            t = 0.5 + 0.5 * np.sin(r * (2 * math.pi / rng.uniform(8, 26)))
        img = t[..., None] * (c1 - c0).astype(np.float32)
        img += c0.astype(np.float32)
    return img, kind


def _polygon(shape: str, cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]]:
    if shape == "square":
        pts = [(math.cos(a), math.sin(a)) for a in (math.pi / 4 + k * math.pi / 2 for k in range(4))]
    elif shape == "triangle":
        pts = [(math.cos(a), math.sin(a)) for a in (-math.pi / 2 + k * 2 * math.pi / 3 for k in range(3))]
    elif shape == "cross":
        w = 0.36  # arm half-width; arm ends' corners lie on the circumcircle
        l = math.sqrt(1 - w * w)
        pts = [(w, -l), (w, -w), (l, -w), (l, w), (w, w), (w, l),
               (-w, l), (-w, w), (-l, w), (-l, -w), (-w, -w), (-w, -l)]
    else:
        raise ValueError(shape)
    ca, sa = math.cos(angle), math.sin(angle)
    return [(cx + r * (x * ca - y * sa), cy + r * (x * sa + y * ca)) for x, y in pts]


def _draw(draw: ImageDraw.ImageDraw, obj: SyntheticObject, fill: Any) -> None:
    cx, cy = obj.center
    if obj.shape == "circle":
        r = obj.radius * 0.86  # roughly the area of the other shapes at equal circumradius
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
    else:
        draw.polygon(_polygon(obj.shape, cx, cy, obj.radius, obj.angle), fill=fill)


def _jitter(rng: np.random.Generator, colour: str) -> tuple[int, int, int]:
    rgb = np.asarray(RGB[colour], np.float64) * rng.uniform(0.85, 1.08) + rng.uniform(-14, 14, 3)
    return tuple(int(v) for v in np.clip(rgb, 0, 255))  # type: ignore[return-value]


def _place(
    rng: np.random.Generator, placed: list[tuple[float, float, float]], size: int, r: float, tries: int
) -> tuple[float, float] | None:
    """A centre for an object of circumradius ``r`` whose circumcircle keeps clear of every
    ``placed`` ``(x, y, r)``, or None after ``tries`` draws."""
    for _ in range(tries):
        cx, cy = rng.uniform(r + 1, size - r - 1, 2)
        if all((cx - px) ** 2 + (cy - py) ** 2 >= (r + pr + 1.5) ** 2 for px, py, pr in placed):
            return float(cx), float(cy)
    return None


def _place_objects(
    rng: np.random.Generator, label: int, size: int
) -> tuple[SyntheticObject, list[SyntheticObject]]:
    """The target of class ``label``, then 2-5 distractors.

    No object overlaps another (circumcircles apart), so every object's shape stays fully
    visible and unambiguous."""
    r_lo, r_hi = 0.085 * size, 0.15 * size
    placed: list[tuple[float, float, float]] = []
    shape, colour = CLASS_COMBOS[label]
    r_t = float(rng.uniform(r_lo, r_hi))
    target_xy = _place(rng, placed, size, r_t, 1)
    assert target_xy is not None
    placed.append((*target_xy, r_t))
    target = SyntheticObject(shape, colour, target_xy, r_t, float(rng.uniform(0, 2 * math.pi)), True)

    n_distractors = int(rng.integers(2, 6))
    distractors: list[SyntheticObject] = []
    while len(distractors) < n_distractors:
        r = float(rng.uniform(r_lo, r_hi))
        xy = _place(rng, placed, size, r, 12)
        if xy is None:  # crowded: try the smallest size
            r = r_lo
            xy = _place(rng, placed, size, r, 24)
        if xy is None:
            if len(distractors) >= 2:
                break
            r = 0.06 * size
            xy = _place(rng, placed, size, r, 200)
            if xy is None:  # pragma: no cover - cannot happen at size >= 32 with 3 objects
                raise RuntimeError("could not place distractors")
        placed.append((*xy, r))
        d_shape, d_colour = DISTRACTOR_COMBOS[int(rng.integers(len(DISTRACTOR_COMBOS)))]
        distractors.append(
            SyntheticObject(d_shape, d_colour, xy, r, float(rng.uniform(0, 2 * math.pi)), False)
        )
    return target, distractors


def _render(
    rng: np.random.Generator, bg: np.ndarray, distractors: list[SyntheticObject], target: SyntheticObject | None
) -> tuple[np.ndarray, np.ndarray | None]:
    """The image (uint8 ``[H, W, 3]``) and the target's mask (None without a target)."""
    # Fine monochrome grain over the background, then the objects, target last.
    size = bg.shape[0]
    grain = rng.standard_normal((size, size, 1), dtype=np.float32)
    grain *= rng.uniform(2, 10)
    bg += grain
    image = Image.fromarray(np.clip(bg, 0, 255, out=bg).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for obj in distractors:
        _draw(draw, obj, _jitter(rng, obj.colour))
    if target is None:
        return np.array(image), None
    _draw(draw, target, _jitter(rng, target.colour))
    mask_img = Image.new("L", (size, size), 0)
    _draw(ImageDraw.Draw(mask_img), target, 255)
    return np.array(image), np.asarray(mask_img) > 0


def generate(index: int, *, seed: int = 0, size: int = DEFAULT_SIZE, with_target: bool = True) -> SyntheticSample:
    """Render sample ``index`` of the stream ``seed`` at ``size`` × ``size`` pixels.

    ``with_target=False`` renders the same scene without its target: label :data:`NO_TARGET`,
    an empty mask and box ``(0, 0, 0, 0)``."""
    if size < 32:
        raise ValueError(f"size must be at least 32 pixels, got {size}")
    # Every draw comes from this one generator, in a fixed order: the sample depends only on (seed, index).
    rng = np.random.default_rng([int(seed), int(index)])
    label = int(rng.integers(len(CLASSES)))
    bg, bg_kind = _background(rng, size)
    target, distractors = _place_objects(rng, label, size)
    image, mask = _render(rng, bg, distractors, target if with_target else None)
    if mask is None:
        return SyntheticSample(
            image=image, label=NO_TARGET, mask=np.zeros((size, size), bool), box=(0, 0, 0, 0),
            objects=tuple(distractors), background=bg_kind,
        )
    ys, xs = np.nonzero(mask)
    box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
    return SyntheticSample(
        image=image, label=label, mask=mask, box=box, objects=(*distractors, target), background=bg_kind,
    )


def has_target(index: int, no_target_every: int = 0) -> bool:
    """Whether sample ``index`` of a stream that leaves out every ``no_target_every``-th
    sample's target (0: none) has one."""
    return no_target_every <= 0 or index % no_target_every != no_target_every - 1


def make_batch(
    start: int, n: int, *, seed: int = 0, size: int = DEFAULT_SIZE, with_masks: bool = False,
    no_target_every: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Samples ``start .. start + n - 1`` as ``(images [n,H,W,3] uint8, labels [n] int64, masks)``;
    with ``no_target_every=k`` every k-th sample is target-free (label :data:`NO_TARGET`)."""
    images = np.empty((n, size, size, 3), np.uint8)
    labels = np.empty(n, np.int64)
    masks = np.empty((n, size, size), bool) if with_masks else None
    for k in range(n):
        s = generate(start + k, seed=seed, size=size, with_target=has_target(start + k, no_target_every))
        images[k], labels[k] = s.image, s.label
        if masks is not None:
            masks[k] = s.mask
    return images, labels, masks


def make_dataset(
    n: int, seed: int = 0, size: int = DEFAULT_SIZE
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The first ``n`` samples of stream ``seed``: ``(images [N,H,W,3] uint8, labels [N], masks [N,H,W] bool)``."""
    images, labels, masks = make_batch(0, n, seed=seed, size=size, with_masks=True)
    assert masks is not None
    return images, labels, masks


def to_tensor(images: np.ndarray, mean: tuple[float, ...] = MEAN, std: tuple[float, ...] = STD) -> Any:
    """uint8 ``[N,H,W,3]`` (numpy or torch) → normalised float ``[N,3,H,W]`` torch tensor."""
    import torch

    if isinstance(images, np.ndarray):
        images = torch.from_numpy(np.require(images, requirements="W"))
    x = images.permute(0, 3, 1, 2).float().div_(255)
    m = torch.tensor(mean, dtype=x.dtype).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=x.dtype).view(1, 3, 1, 1)
    return x.sub_(m).div_(s)


try:  # the torch wrappers; the generator itself needs only numpy + PIL
    import torch
    from torch.utils.data import Dataset, IterableDataset, get_worker_info
except ImportError:  # pragma: no cover
    torch = None  # type: ignore[assignment]
else:

    class SyntheticDataset(Dataset):
        """Map-style dataset of samples ``start .. start + length - 1`` of stream ``seed``.

        Items are ``(image, label)`` with ``image`` a uint8 ``[3,H,W]`` tensor, or normalised
        float if ``normalize``; ``transform`` (if given) receives the HxWx3 uint8 array instead.
        """

        def __init__(
            self, length: int, seed: int = 0, size: int = DEFAULT_SIZE, *, start: int = 0,
            normalize: bool = False, transform: Any = None,
        ) -> None:
            self.length, self.seed, self.size, self.start = length, seed, size, start
            self.normalize, self.transform = normalize, transform

        def __len__(self) -> int:
            return self.length

        def __getitem__(self, i: int) -> tuple[Any, int]:
            if not 0 <= i < self.length:
                raise IndexError(i)
            s = generate(self.start + i, seed=self.seed, size=self.size)
            if self.transform is not None:
                return self.transform(s.image), s.label
            if self.normalize:
                return to_tensor(s.image[None])[0], s.label
            return torch.from_numpy(s.image).permute(2, 0, 1), s.label

    class SyntheticBatches(Dataset):
        """Item ``k`` is batch ``k`` of stream ``seed``: samples ``k*B .. k*B + B - 1`` as
        ``(uint8 [B,H,W,3], int64 [B])`` tensors. Use with ``DataLoader(batch_size=None)`` to
        generate batches in worker processes; the data depends only on the batch index, so a
        resumed run sees exactly the batches an uninterrupted one would. ``no_target_every``: see
        :func:`make_batch`."""

        def __init__(
            self, num_batches: int, batch_size: int, seed: int = 0, size: int = DEFAULT_SIZE, no_target_every: int = 0,
        ) -> None:
            self.num_batches, self.batch_size, self.seed, self.size = num_batches, batch_size, seed, size
            self.no_target_every = no_target_every

        def __len__(self) -> int:
            return self.num_batches

        def __getitem__(self, k: int) -> tuple[Any, Any]:
            images, labels, _ = make_batch(
                k * self.batch_size, self.batch_size, seed=self.seed, size=self.size,
                no_target_every=self.no_target_every,
            )
            return torch.from_numpy(images), torch.from_numpy(labels)

    class SyntheticStream(IterableDataset):
        """An endless stream of fresh samples ``start, start + 1, ...`` of stream ``seed``,
        split between DataLoader workers (worker ``w`` of ``n`` takes every ``n``-th sample)."""

        def __init__(self, seed: int = 0, size: int = DEFAULT_SIZE, *, start: int = 0, normalize: bool = False) -> None:
            self.seed, self.size, self.start, self.normalize = seed, size, start, normalize

        def __iter__(self) -> Iterator[tuple[Any, int]]:
            info = get_worker_info()
            i, step = (self.start, 1) if info is None else (self.start + info.id, info.num_workers)
            while True:
                s = generate(i, seed=self.seed, size=self.size)
                img = to_tensor(s.image[None])[0] if self.normalize else torch.from_numpy(s.image).permute(2, 0, 1)
                yield img, s.label
                i += step


__all__ = [
    "CLASSES", "CLASS_COMBOS", "COLOURS", "DEFAULT_SIZE", "DISTRACTOR_COMBOS", "MEAN", "NO_TARGET", "RGB", "SHAPES",
    "STD", "SyntheticBatches", "SyntheticDataset", "SyntheticObject", "SyntheticSample", "SyntheticStream",
    "VERSION", "generate", "has_target", "make_batch", "make_dataset", "to_tensor",
]
