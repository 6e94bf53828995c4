"""The two data sources: attnviz's synthetic stream and a torchvision ImageFolder.

Each is built into a :class:`TrainingData`: the batches of an epoch, how a batch becomes model
input, the held-out batches, and what the checkpoint's sidecar records about the data.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .. import synthetic
from ..preprocess import IMAGENET_MEAN, IMAGENET_STD

Batch = tuple[torch.Tensor, torch.Tensor]

#: Largest synthetic training stream kept in memory to share between variants (bytes).
STREAM_CACHE_BYTES = 3 * 2**30


@dataclass
class TrainingData:
    """A data source ready to train on."""

    steps_per_epoch: int
    #: ``batches(epoch, first_step)`` yields ``(x uint8/float, y)`` for the rest of the epoch.
    batches: Callable[[int, int], Iterator[Batch]]
    #: Turns a raw batch into the model's normalised float input on the device.
    prepare: Callable[[torch.Tensor], torch.Tensor]
    #: Held-out ``(x, y)`` batches, iterated once per evaluation.
    val_batches: Iterable[Batch]
    classes: list[str]
    #: The sidecar's ``preprocess`` and ``dataset`` entries.
    preprocess: dict[str, Any]
    dataset: dict[str, Any]
    #: One line describing the held-out set, printed before training ("" for none).
    summary: str = ""


def _normalizer(mean: Sequence[float], std: Sequence[float], device: torch.device,
                channels_last: bool) -> Callable[[torch.Tensor], torch.Tensor]:
    m = torch.tensor(mean, device=device).view(1, 3, 1, 1) * 255
    s = torch.tensor(std, device=device).view(1, 3, 1, 1) * 255
    fmt = torch.channels_last if channels_last else torch.contiguous_format

    def prepare(xb: torch.Tensor) -> torch.Tensor:
        xb = xb.to(device, non_blocking=True)
        if xb.dtype == torch.uint8:  # NHWC uint8 from the synthetic generator
            xb = xb.permute(0, 3, 1, 2).float().sub_(m).div_(s)
        return xb.contiguous(memory_format=fmt)

    return prepare


def synthetic_data(
    *, size: int, epochs: int, steps: int, batch_size: int, train_seed: int, val_seed: int, val_size: int,
    no_target_every: int, workers: int, device: torch.device, channels_last: bool, shared: bool,
) -> TrainingData:
    """The synthetic stream, indexed by step; ``shared``: several variants will train on it."""
    from torch.utils.data import DataLoader

    prepare = _normalizer(synthetic.MEAN, synthetic.STD, device, channels_last)
    t_val = time.perf_counter()
    val_images, val_labels, _ = synthetic.make_batch(0, val_size, seed=val_seed, size=size)
    val_batches = [
        (torch.from_numpy(val_images[i:i + 500]), torch.from_numpy(val_labels[i:i + 500]))
        for i in range(0, val_size, 500)
    ]
    summary = f"held-out set: {val_size} images (seed {val_seed}, {time.perf_counter() - t_val:.1f}s)"

    total_steps = epochs * steps
    dataset = synthetic.SyntheticBatches(total_steps, batch_size, seed=train_seed, size=size,
                                         no_target_every=no_target_every)
    # Every variant trains on the same stream: when several are trained in-process, keep the
    # generated batches (uint8, a few hundred MB per epoch) so the stream is rendered only once.
    stream_bytes = total_steps * batch_size * size * size * 3
    cache: dict[int, Batch] | None = (
        {} if shared and workers == 0 and stream_bytes <= STREAM_CACHE_BYTES else None
    )

    def batches(epoch: int, first: int) -> Iterator[Batch]:
        if cache is not None:
            def cached() -> Iterator[Batch]:
                for k in range(epoch * steps + first, (epoch + 1) * steps):
                    if k not in cache:
                        cache[k] = dataset[k]
                    yield cache[k]

            return cached()
        loader = DataLoader(
            dataset, batch_size=None, sampler=range(epoch * steps + first, (epoch + 1) * steps),
            num_workers=workers, prefetch_factor=4 if workers else None,
            pin_memory=device.type == "cuda",
        )
        return iter(loader)

    return TrainingData(
        steps_per_epoch=steps, batches=batches, prepare=prepare, val_batches=val_batches,
        classes=list(synthetic.CLASSES),
        preprocess={
            "input_size": size, "resize_size": size, "mean": list(synthetic.MEAN),
            "std": list(synthetic.STD), "interpolation": "bilinear",
        },
        dataset={
            "generator": "attnviz.synthetic", "version": synthetic.VERSION, "image_size": size,
            "train_seed": train_seed, "val_seed": val_seed, "no_target_every": no_target_every,
        },
        summary=summary,
    )


def _imagefolder_datasets(root: Path, input_size: int, resize_size: int, val_fraction: float,
                          seed: int) -> tuple[Any, Any, list[str], str]:
    from torchvision import datasets, transforms

    norm = transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)
    train_tf = transforms.Compose([
        transforms.RandomResizedCrop(input_size, antialias=True), transforms.RandomHorizontalFlip(),
        transforms.ToTensor(), norm,
    ])
    val_tf = transforms.Compose([
        transforms.Resize(resize_size, antialias=True), transforms.CenterCrop(input_size),
        transforms.ToTensor(), norm,
    ])
    if (root / "train").is_dir() and (root / "val").is_dir():
        train = datasets.ImageFolder(str(root / "train"), transform=train_tf)
        val = datasets.ImageFolder(str(root / "val"), transform=val_tf)
        if val.classes != train.classes:
            raise SystemExit(f"error: {root}/train and {root}/val have different classes")
        return train, val, list(train.classes), "train/val folders"
    from torch.utils.data import Subset

    full_train = datasets.ImageFolder(str(root), transform=train_tf)
    full_val = datasets.ImageFolder(str(root), transform=val_tf)
    n = len(full_train)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    n_val = max(1, int(round(n * val_fraction))) if n > 1 else 0
    return (Subset(full_train, order[n_val:]), Subset(full_val, order[:n_val]), list(full_train.classes),
            f"random {val_fraction:g} split, seed {seed}")


def imagefolder_data(
    root: Path, *, input_size: int, resize_size: int, val_fraction: float, seed: int, batch_size: int,
    steps_per_epoch: int | None, workers: int, device: torch.device,
) -> TrainingData:
    """``root/train`` + ``root/val``, or ``root`` split by ``val_fraction``; an epoch is one pass
    over the training images unless ``steps_per_epoch`` says otherwise."""
    from torch.utils.data import DataLoader

    train_set, val_set, classes, split = _imagefolder_datasets(root, input_size, resize_size, val_fraction, seed)
    if len(classes) < 2:
        raise SystemExit(f"error: {root} needs at least two class folders")
    steps = steps_per_epoch or max(1, len(train_set) // batch_size)

    def prepare(xb: torch.Tensor) -> torch.Tensor:  # the transforms already normalised it
        return xb.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)

    def batches(epoch: int, first: int) -> Iterator[Batch]:
        g = torch.Generator().manual_seed(seed * 100_003 + epoch)
        loader = DataLoader(train_set, batch_size=batch_size, shuffle=True, drop_last=len(train_set) >= batch_size,
                            generator=g, num_workers=workers, pin_memory=device.type == "cuda")

        def gen() -> Iterator[Batch]:
            done = 0
            while done < steps:  # cycle when --steps-per-epoch exceeds one pass
                for xb, yb in loader:
                    if done >= steps:
                        return
                    done += 1
                    yield xb, yb

        return gen()

    return TrainingData(
        steps_per_epoch=steps, batches=batches, prepare=prepare,
        val_batches=DataLoader(val_set, batch_size=batch_size, shuffle=False, num_workers=workers),
        classes=classes,
        preprocess={
            "input_size": input_size, "resize_size": resize_size, "mean": list(IMAGENET_MEAN),
            "std": list(IMAGENET_STD), "interpolation": "bilinear",
        },
        dataset={
            "generator": "torchvision.datasets.ImageFolder", "root": str(root), "split": split,
            "train_size": len(train_set), "val_size": len(val_set),
        },
    )
