"""What a training run writes: the weights (safetensors), the sidecar JSON that says how to
rebuild and feed the model, the per-epoch log, and the resume state."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..models.zoo import CHECKPOINT_FORMAT as FORMAT  # the one the loader checks
SYNTHETIC_LICENSE = "CC0-1.0 (attnviz's own training output)"
IMAGEFOLDER_LICENSE = "same terms as the training images and the backbone weights"


def is_finished(out: Path, name: str) -> bool:
    """Whether ``name`` was trained to the end: its weights and sidecar exist and no resume state."""
    return ((out / f"{name}.json").exists() and (out / f"{name}.safetensors").exists()
            and not resume_path(out, name).exists())


def resume_path(out: Path, name: str) -> Path:
    return out / f"{name}.resume.pt"


def log_path(out: Path, name: str) -> Path:
    return out / f"{name}.log.jsonl"


def append_log(path: Path, record: dict[str, Any]) -> None:
    with path.open("a") as f:
        f.write(json.dumps(record) + "\n")


def write_resume_state(path: Path, state: dict[str, Any]) -> None:
    # Written aside and renamed: an interrupted write never leaves a half state to resume from.
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def read_resume_state(path: Path, device: torch.device) -> dict[str, Any]:
    return torch.load(path, map_location=device, weights_only=True)


def training_info(command: str, seed: int, epochs: int, steps: int, batch_size: int, duration: float,
                  device: torch.device, threads: int) -> dict[str, Any]:
    """The sidecar's ``training`` entry."""
    return {
        "command": command, "seed": seed, "epochs": epochs, "steps": steps, "batch_size": batch_size,
        "duration_s": round(duration, 1), "device": device.type, "threads": threads,
        "torch": torch.__version__,
    }


def sidecar(*, name: str, block: str, arch: dict[str, Any], classes: list[str], preprocess: dict[str, Any],
            dataset: dict[str, Any], training: dict[str, Any], last: dict[str, Any], license: str) -> dict[str, Any]:
    """The sidecar JSON of a finished model; ``last`` is its final epoch's log record."""
    return {
        "format": FORMAT, "name": name, "block": block, "arch": arch, "classes": classes,
        "preprocess": preprocess, "dataset": dataset, "training": training,
        "metrics": {
            "val_accuracy": last["val_acc"], "val_size": last["val_size"], "train_loss": last["train_loss"],
        },
        "license": license,
    }


def save_checkpoint(out: Path, name: str, model: nn.Module, sidecar: dict[str, Any]) -> Path:
    """Write ``<out>/<name>.safetensors`` and ``<out>/<name>.json``; returns the weights' path.

    The sidecar is also stored, JSON-encoded, in the safetensors header (``__metadata__`` is
    string to string), so the weights file alone says how to rebuild, feed and label the model.
    """
    from safetensors.torch import save_file

    from ..models.descriptions import DESCRIPTION_KEY

    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    path = out / f"{name}.safetensors"
    save_file(state, str(path), metadata={"format": FORMAT, "name": name, DESCRIPTION_KEY: json.dumps(sidecar)})
    os.chmod(path, 0o644)  # safetensors writes 0600; checkpoints are meant to be shared
    (out / f"{name}.json").write_text(json.dumps(sidecar, indent=2) + "\n")
    return path
