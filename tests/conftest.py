"""Shared fixtures: the web app running as ``python app.py`` on a free port (one per session)."""
from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class RunningApp:
    url: str
    checkpoints: Path  # where the app's built-in checkpoints come from
    log: Path
    pid: int
    hf_home: Path | None = None  # the app's (empty, offline) Hugging Face cache

    def builtin_variants(self) -> dict:
        """The built-in variants the app sees (name -> Variant), as ``attnviz.variants()`` lists them."""
        from attnviz.models.zoo import variant_from_sidecar

        found = (variant_from_sidecar(p) for p in sorted(self.checkpoints.glob("*.json")))
        return {v.name: v for v in found if v.weights.path is not None and v.weights.path.is_file()}


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _random_init_checkpoints(out: Path) -> Path:
    """Random-init stand-ins for the shipped built-in models, in their format (used only when no
    trained checkpoints are present yet: the app's behaviour, not its accuracy, is under test)."""
    import torch
    from safetensors.torch import save_file

    from attnviz import synthetic
    from attnviz.models.resnet import AttentionResNet
    from attnviz.models.zoo import CHECKPOINT_FORMAT
    from attnviz.train import VARIANTS, checkpoint_name, synthetic_arch

    out.mkdir(parents=True, exist_ok=True)
    size = synthetic.DEFAULT_SIZE
    for variant, block in VARIANTS.items():
        torch.manual_seed(0)
        arch = synthetic_arch(variant)
        name = checkpoint_name(variant)
        model = AttentionResNet(**arch).eval()
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out / f"{name}.safetensors"))
        (out / f"{name}.json").write_text(json.dumps({
            "format": CHECKPOINT_FORMAT, "name": name, "block": block or "none", "arch": arch,
            "classes": list(synthetic.CLASSES),
            "preprocess": {"input_size": size, "resize_size": size, "mean": list(synthetic.MEAN),
                           "std": list(synthetic.STD), "interpolation": "bilinear"},
            "metrics": {}, "license": "CC0-1.0 (random init, tests only)",
        }))
    return out


def _checkpoint_dir(tmp: Path) -> Path:
    env = os.environ.get("ATTNVIZ_CHECKPOINTS")
    if env:
        return Path(env)
    shipped = ROOT / "checkpoints"
    if any(p.with_suffix(".safetensors").is_file() for p in shipped.glob("*.json")):
        return shipped
    return _random_init_checkpoints(tmp / "checkpoints")


@contextlib.contextmanager
def start_app(tmp: Path, checkpoints: Path | None = None, **extra_env: str) -> Iterator[RunningApp]:
    """``python app.py`` on a free port, offline, no ImageNet weights cached (so the default
    variant is the built-in one), its files under ``tmp``; stopped (SIGTERM) on exit."""
    ckpt = checkpoints or _checkpoint_dir(tmp)
    port = _free_port()
    env = {
        **os.environ,
        "ATTNVIZ_CHECKPOINTS": str(ckpt),
        "GRADIO_SERVER_NAME": "127.0.0.1",
        "GRADIO_SERVER_PORT": str(port),
        "GRADIO_ANALYTICS_ENABLED": "False",
        "GRADIO_EXAMPLES_CACHE": str(tmp / "examples_cache"),
        "GRADIO_TEMP_DIR": str(tmp / "gradio_tmp"),  # uploads and outputs stay in the test's folder
        "TORCH_HOME": str(tmp / "torch_home"),  # empty caches: no ImageNet weights on "this machine"
        "HF_HOME": str(tmp / "hf_home"),
        "HF_HUB_OFFLINE": "1",
        "PYTHONUNBUFFERED": "1",
        **extra_env,
    }
    env.pop("HF_HUB_CACHE", None)
    log = tmp / "app.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        import httpx

        deadline = time.monotonic() + 90
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"app.py exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            try:
                if httpx.get(url + "config", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"app.py did not answer within 90 s:\n{log.read_text()[-3000:]}")
            time.sleep(0.25)
        yield RunningApp(url=url, checkpoints=ckpt, log=log, pid=proc.pid, hf_home=Path(env["HF_HOME"]))
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def rss_mb(pid: int) -> float:
    """Resident set size of a process, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


@pytest.fixture(scope="session")
def app_server(tmp_path_factory) -> Iterator[RunningApp]:
    """The app as the README starts it (see :func:`start_app`), shared by the whole session."""
    with start_app(tmp_path_factory.mktemp("app")) as running:
        yield running


@pytest.fixture(scope="module")
def client(app_server, tmp_path_factory):
    """A gradio_client for the running app; its downloads (and the empty folder gradio_client
    leaves in the temp dir per file) stay in the test's own folder."""
    import tempfile

    from gradio_client import Client

    tmp = tmp_path_factory.mktemp("client")
    saved, tempfile.tempdir = tempfile.tempdir, str(tmp)
    try:
        yield Client(app_server.url, verbose=False, download_files=str(tmp / "downloads"))
    finally:
        tempfile.tempdir = saved


BUILTIN_CBAM = "shapes_cbam_resnet"


@pytest.fixture(scope="module")
def cbam_result():
    """One real inspection of the built-in CBAM model on a synthetic image (Grad-CAM, channel
    and spatial gates): the input of the tests of the app's views and of the figures."""
    import attnviz
    from attnviz.synthetic import generate

    if BUILTIN_CBAM not in attnviz.variants():
        pytest.skip("built-in CBAM checkpoint missing")
    loaded = attnviz.load_model(BUILTIN_CBAM)
    return attnviz.inspect(generate(3, seed=8, size=loaded.preprocess.input_size).image, loaded)
