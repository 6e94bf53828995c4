"""Trivial Gradio app for bench/bench.py: an image in, the same image out.

Its ``/echo`` round trip is Gradio's own floor (upload, pre/post-processing, queue, PNG
encoding, download) against which the attnviz app's ``/inspect`` is measured.
``/echo_files`` returns the image ``n`` times as a gallery of JPEG files served the way the
attnviz app serves its outputs (from a static folder), so the bench can show what a response
with as many files as ``/inspect``'s costs Gradio and gradio_client, without any of our work.
Run: ``GRADIO_SERVER_PORT=7899 python bench/echo_app.py``.
"""
from __future__ import annotations

import atexit
import io
import shutil
import tempfile
import uuid
from pathlib import Path

import gradio as gr

_SCRATCH = Path(tempfile.mkdtemp(prefix="attnviz-echo-"))
atexit.register(shutil.rmtree, _SCRATCH, ignore_errors=True)
gr.set_static_paths([_SCRATCH])


def echo(image):
    return image


def echo_files(image, n: float = 1):
    """The image as JPEG, encoded once and written ``n`` times to a fresh folder."""
    buf = io.BytesIO()
    image.convert("RGB").save(buf, format="JPEG", quality=90)
    folder = _SCRATCH / uuid.uuid4().hex
    folder.mkdir()
    paths = []
    for i in range(max(1, int(n))):
        path = folder / f"copy_{i}.jpg"
        path.write_bytes(buf.getvalue())
        paths.append(str(path))
    return paths


with gr.Blocks() as demo:
    image_in = gr.Image(type="pil", label="image")
    same = gr.Image(type="pil", label="same image")
    count = gr.Number(value=1, precision=0, minimum=1, maximum=64, label="copies")
    copies = gr.Gallery(label="copies")
    gr.Button("echo").click(echo, image_in, same, api_name="echo")
    gr.Button("echo files").click(echo_files, [image_in, count], copies, api_name="echo_files")

if __name__ == "__main__":
    demo.launch()
