from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from attnviz import synthetic, train
from attnviz.train import loop
from attnviz.train.cli import _parse_variants
from attnviz.models.resnet import AttentionResNet
from attnviz.preprocess import PreprocessConfig

ROOT = Path(__file__).resolve().parents[1]
CHECKPOINTS = ROOT / "checkpoints"
SHIPPED = ["shapes_resnet", "shapes_se_resnet", "shapes_eca_resnet", "shapes_cbam_resnet", "shapes_bam_resnet"]
SIDECAR_KEYS = {"format", "name", "block", "arch", "classes", "preprocess", "dataset", "training", "metrics", "license"}
ARCH_KEYS = {"depth", "num_classes", "attn", "attn_kwargs", "stage_attn_kwargs", "widths", "stem_width",
             "stem_kernel_size", "stem_stride", "stem_pool", "stage_strides"}
TRAINING_KEYS = {"command", "seed", "epochs", "steps", "batch_size", "duration_s", "device", "threads", "torch"}


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    train.add_arguments(parser)
    return parser.parse_args(list(argv))


def _tiny(out: Path, *extra: str, variants: tuple[str, ...] = ("se",)) -> argparse.Namespace:
    return _args(
        "--variants", *variants, "--out", str(out), "--epochs", "2", "--steps-per-epoch", "2", "--batch-size", "8",
        "--val-size", "16", "--image-size", "48", "--widths", "16", "16", "16", "16", "--workers", "0",
        "--device", "cpu", "--no-progress", *extra,
    )


def _load(out: Path, name: str) -> tuple[dict, AttentionResNet]:
    sidecar = json.loads((out / f"{name}.json").read_text())
    model = AttentionResNet(**sidecar["arch"])
    state = {k: v.float() if v.is_floating_point() else v for k, v in load_file(str(out / f"{name}.safetensors")).items()}
    model.load_state_dict(state, strict=True)
    return sidecar, model.eval()


def test_variants_parse():
    assert _parse_variants(["all"]) == ["resnet", "se", "eca", "cbam", "bam"]
    assert _parse_variants(["se", "resnet", "se"]) == ["se", "resnet"]
    with pytest.raises(ValueError):
        _parse_variants(["sk"])
    assert [train.checkpoint_name(v) for v in train.VARIANTS] == SHIPPED


def test_tiny_run_writes_loadable_checkpoint(tmp_path, capsys):
    assert train.run(_tiny(tmp_path, variants=("se", "resnet"))) == 0
    name = "shapes_se_resnet"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(  # the resume states are gone
        f"{n}{ext}" for n in (name, "shapes_resnet") for ext in (".json", ".log.jsonl", ".safetensors"))
    plain, plain_model = _load(tmp_path, "shapes_resnet")
    assert plain["block"] == "none" and plain["arch"]["attn"] is None and plain["arch"]["attn_kwargs"] == {}
    assert not any(train.is_attention_key(k) for k in plain_model.state_dict())
    assert plain["training"]["command"] == (
        "python -m attnviz train --variants se resnet --out " + str(tmp_path) + " --epochs 2 --steps-per-epoch 2"
        " --batch-size 8 --lr 0.003 --weight-decay 0.05 --image-size 48 --no-target-every 8 --widths 16 16 16 16 --seed 0 --device cpu")
    sidecar, model = _load(tmp_path, name)
    assert set(sidecar) == SIDECAR_KEYS
    assert sidecar["format"] == "attnviz-checkpoint/1" and sidecar["name"] == name and sidecar["block"] == "se"
    assert set(sidecar["arch"]) == ARCH_KEYS and sidecar["arch"]["attn"] == "se"
    assert sidecar["arch"]["widths"] == [16, 16, 16, 16] and sidecar["arch"]["num_classes"] == 8
    assert sidecar["classes"] == list(synthetic.CLASSES)
    pre = PreprocessConfig(**sidecar["preprocess"])
    assert pre.input_size == pre.resize_size == 48 and pre.crop_fraction == 1.0
    assert sidecar["dataset"] == {"generator": "attnviz.synthetic", "version": synthetic.VERSION,
                                  "image_size": 48, "train_seed": 0, "val_seed": 1000, "no_target_every": 8}
    t = sidecar["training"]
    assert set(t) == TRAINING_KEYS
    assert t["command"] == plain["training"]["command"]
    assert (t["epochs"], t["steps"], t["batch_size"], t["device"], t["torch"]) == (2, 4, 8, "cpu", torch.__version__)
    assert set(sidecar["metrics"]) == {"val_accuracy", "val_size", "train_loss"}
    assert sidecar["metrics"]["val_size"] == 16 and 0 <= sidecar["metrics"]["val_accuracy"] <= 1
    assert sidecar["license"].startswith("CC0-1.0")
    log = [json.loads(line) for line in (tmp_path / f"{name}.log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [1, 2] and log[-1]["val_acc"] == sidecar["metrics"]["val_accuracy"]
    assert "epoch 2/2" in capsys.readouterr().out
    # the model runs on its own preprocessing
    x = synthetic.to_tensor(synthetic.make_batch(0, 2, seed=5, size=48)[0], pre.mean, pre.std)
    assert model(x).shape == (2, 8)


def test_resume_continues_at_next_epoch(tmp_path, monkeypatch, capsys):
    # Reference: an uninterrupted run.
    assert train.run(_tiny(tmp_path / "full")) == 0
    ref_state = load_file(str(tmp_path / "full" / "shapes_se_resnet.safetensors"))

    # Interrupted after the first epoch's resume state was written.
    out = tmp_path / "resumed"
    real_save = loop._Run.save_resume

    def save_then_die(self, epoch):
        real_save(self, epoch)
        raise KeyboardInterrupt

    monkeypatch.setattr(loop._Run, "save_resume", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        train.run(_tiny(out))
    monkeypatch.setattr(loop._Run, "save_resume", real_save)
    state = torch.load(out / "shapes_se_resnet.resume.pt", weights_only=True)
    assert state["epoch"] == 1 and {"model", "optimizer", "scheduler"} <= set(state)
    assert not (out / "shapes_se_resnet.safetensors").exists()
    capsys.readouterr()

    assert train.run(_tiny(out, "--resume")) == 0
    printed = capsys.readouterr().out
    assert "resuming after epoch 1/2" in printed and "epoch 2/2" in printed and "epoch 1/2:" not in printed
    assert not (out / "shapes_se_resnet.resume.pt").exists()
    log = [json.loads(line) for line in (out / "shapes_se_resnet.log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [1, 2]
    # Same data stream, same optimizer/scheduler state: the resumed run ends where the full one does.
    got = load_file(str(out / "shapes_se_resnet.safetensors"))
    assert got.keys() == ref_state.keys()
    for k in ref_state:
        torch.testing.assert_close(got[k], ref_state[k], rtol=1e-4, atol=1e-5, msg=k)

    # A finished variant is skipped by --resume.
    assert train.run(_tiny(out, "--resume")) == 0
    assert "already trained" in capsys.readouterr().out


def _image_folder(root: Path) -> None:
    rng = np.random.default_rng(0)
    from PIL import Image

    for cls, tint in (("cats", (200, 80, 60)), ("dogs", (60, 90, 200))):
        (root / cls).mkdir(parents=True)
        for i in range(3):
            arr = np.clip(rng.normal(tint, 30, (40, 48, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(arr).save(root / cls / f"{i}.png")


def test_imagefolder_attaches_blocks_to_pretrained_backbone(tmp_path):
    import torchvision

    data = tmp_path / "pets"
    _image_folder(data)
    torch.manual_seed(1)
    backbone = torchvision.models.resnet18().state_dict()  # stands in for the ImageNet weights
    weights = tmp_path / "resnet18.pth"
    torch.save(backbone, weights)
    out = tmp_path / "out"
    args = _args(
        "--imagefolder", str(data), "--arch", "resnet18", "--variants", "se", "--backbone-weights", str(weights),
        "--freeze-backbone", "--epochs", "1", "--steps-per-epoch", "1", "--batch-size", "2", "--image-size", "32",
        "--out", str(out), "--workers", "0", "--device", "cpu", "--no-progress",
    )
    assert train.run(args) == 0
    sidecar, model = _load(out, "pets_se_resnet18")
    assert sidecar["classes"] == ["cats", "dogs"] and sidecar["block"] == "se"
    assert sidecar["arch"]["depth"] == 18 and sidecar["arch"]["num_classes"] == 2
    assert sidecar["dataset"]["train_size"] + sidecar["dataset"]["val_size"] == 6
    assert (sidecar["preprocess"]["input_size"], sidecar["preprocess"]["resize_size"]) == (32, 37)
    state = model.state_dict()
    assert state["fc.weight"].shape == (2, 512)
    attn_keys = [k for k in state if train.is_attention_key(k)]
    assert attn_keys and all(".attn." in k for k in attn_keys)
    # Frozen backbone: every torchvision tensor but fc is exactly the "pretrained" one (BN stats too).
    for k, v in backbone.items():
        if not k.startswith("fc."):
            assert torch.equal(state[k], v), k
    assert set(state) - set(backbone) == set(attn_keys)


def test_load_backbone_checks_keys():
    import torchvision

    sd = torchvision.models.resnet18().state_dict()
    model = AttentionResNet(depth=18, num_classes=3, attn="cbam", widths=(64, 128, 256, 512))
    missing = train.load_backbone(model, sd)
    assert missing and all(".attn." in k for k in missing)
    assert torch.equal(model.conv1.weight, sd["conv1.weight"])

    bam = AttentionResNet(depth=18, num_classes=3, attn="bam")
    assert all(k.startswith("bam") for k in train.load_backbone(bam, sd))

    with pytest.raises(ValueError, match="unexpected"):
        train.load_backbone(model, {**sd, "head.weight": torch.zeros(1)})
    broken = dict(sd)
    del broken["layer1.0.conv1.weight"]
    with pytest.raises(ValueError, match="layer1.0.conv1.weight"):
        train.load_backbone(model, broken)
    with pytest.raises(ValueError):  # a ResNet-50 state dict does not fit a ResNet-18
        train.load_backbone(AttentionResNet(depth=50, num_classes=3, attn="se"), sd)


@pytest.fixture(scope="module")
def fresh_heldout():
    # Seed 777: neither the training stream (0) nor the validation set (1000).
    images, labels, masks = synthetic.make_batch(0, 200, seed=777, with_masks=True)
    return images, torch.from_numpy(labels), torch.from_numpy(masks)


def _gradcam_pointing(model: AttentionResNet, x: torch.Tensor, labels: torch.Tensor, masks: torch.Tensor) -> float:
    """Fraction of images whose Grad-CAM peak (last stage, true class) lies within 7 px of the target."""
    feats = model.forward_features(x).detach().requires_grad_()
    score = model.forward_head(feats).gather(1, labels[:, None]).sum()
    (grad,) = torch.autograd.grad(score, feats)
    cam = torch.relu((grad.mean((2, 3), keepdim=True) * feats).sum(1, keepdim=True))
    cam = torch.nn.functional.interpolate(cam, size=masks.shape[-2:], mode="bilinear", align_corners=False)
    near = torch.nn.functional.max_pool2d(masks[:, None].float(), 15, 1, 7)  # target dilated by 7 px
    peak = cam.flatten(1).argmax(1)
    return float(near.flatten(1).gather(1, peak[:, None]).mean())


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_checkpoint_is_trained(name, fresh_heldout):
    path = CHECKPOINTS / f"{name}.safetensors"
    assert path.exists(), f"missing shipped checkpoint {path}"
    assert path.stat().st_size <= 5 * 2**20
    sidecar, model = _load(CHECKPOINTS, name)
    assert set(sidecar) == SIDECAR_KEYS and set(sidecar["arch"]) == ARCH_KEYS
    assert set(sidecar["training"]) == TRAINING_KEYS
    assert sidecar["name"] == name and sidecar["classes"] == list(synthetic.CLASSES)
    assert sidecar["block"] == (sidecar["arch"]["attn"] or "none")
    assert sidecar["dataset"]["version"] == synthetic.VERSION
    assert sidecar["metrics"]["val_accuracy"] >= 0.95 and sidecar["metrics"]["val_size"] == 2000
    pre = PreprocessConfig(**sidecar["preprocess"])
    assert pre.input_size == pre.resize_size == sidecar["dataset"]["image_size"]
    images, labels, masks = fresh_heldout
    assert images.shape[1] == pre.input_size
    x = synthetic.to_tensor(images, pre.mean, pre.std)
    with torch.no_grad():
        pred = model(x).argmax(1)
    acc = float((pred == labels).float().mean())
    assert acc >= 0.9, f"{name}: {acc:.3f} on fresh held-out samples"
    # The model looks at the target: Grad-CAM's peak is on it (chance: a few %, the target covers ~3 %).
    # Trained with target-free images (no class by elimination) and a 12x12 last stage.
    assert sidecar["arch"]["stage_strides"] == [1, 2, 2, 1] and sidecar["dataset"]["no_target_every"] > 0
    pointing = _gradcam_pointing(model, x, labels, masks)
    assert pointing >= 0.95, f"{name}: Grad-CAM peak near the target in only {pointing:.2f} of images"


def test_shipped_cbam_spatial_attention_finds_the_target(fresh_heldout):
    """CBAM's spatial gates were learned, not left at init: deep ones open wider on the target."""
    _, model = _load(CHECKPOINTS, "shapes_cbam_resnet")
    images, _, masks = fresh_heldout
    gates = {}
    hooks = [
        getattr(model, f"layer{i}")[0].attn.spatial.gate.register_forward_hook(
            lambda mod, inp, out, i=i: gates.__setitem__(i, out.detach()))
        for i in (3, 4)
    ]
    with torch.no_grad():
        model(synthetic.to_tensor(images))
    for h in hooks:
        h.remove()
    m = masks[:, None].float()
    for i, g in gates.items():
        g = torch.nn.functional.interpolate(g, size=masks.shape[-2:], mode="bilinear", align_corners=False)
        inside = float(((g * m).sum((1, 2, 3)) / m.sum((1, 2, 3))).mean())
        outside = float(((g * (1 - m)).sum((1, 2, 3)) / (1 - m).sum((1, 2, 3))).mean())
        assert inside > outside + 0.15, (i, inside, outside)


def test_target_free_images_are_trained_towards_uniform():
    loss = loop._SoftTargetLoss(label_smoothing=0.05)
    logits = torch.randn(6, 8, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([0, 3, 7, 2, 5, 1])
    ref = torch.nn.functional.cross_entropy(logits, y, label_smoothing=0.05)
    assert torch.allclose(loss(logits, y), ref)
    # a target-free image (-1): cross-entropy against the uniform distribution, minimal (log K) at equal logits
    free = torch.tensor([synthetic.NO_TARGET])
    assert torch.allclose(loss(torch.zeros(1, 8), free), torch.log(torch.tensor(8.0)))
    assert loss(torch.tensor([[5.0] + [0.0] * 7]), free) > loss(torch.zeros(1, 8), free)
    mixed = torch.cat([y, free])
    expected = (ref * 6 + loss(logits[:1] * 0, free)) / 7
    assert torch.allclose(loss(torch.cat([logits, torch.zeros(1, 8)]), mixed), expected)
