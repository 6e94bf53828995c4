"""Trivial Gradio app for bench/bench.py: an image in, the same image out.

Its ``/echo`` round trip is Gradio's own floor (upload, pre/post-processing, queue, PNG
encoding, download) against which the attnviz app's ``/inspect`` is measured.
Run: ``GRADIO_SERVER_PORT=7899 python bench/echo_app.py``.
"""
from __future__ import annotations

import gradio as gr


def echo(image):
    return image


demo = gr.Interface(
    fn=echo,
    inputs=gr.Image(type="pil", label="image"),
    outputs=gr.Image(type="pil", label="same image"),
    api_name="echo",
    flagging_mode="never",
)

if __name__ == "__main__":
    demo.launch()
