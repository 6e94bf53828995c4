"""How ``python app.py`` starts: its flags, the background preload of ImageNet weights, and
Gradio's MCP server.

    python app.py [--weights VARIANT=FILE ...] [--preload NAMES|all|none] [--mcp | --no-mcp]

``--preload`` overrides ``ATTNVIZ_PRELOAD`` (default: every ImageNet variant, the CBAM one
first); nothing is fetched when ``HF_HUB_OFFLINE`` / ``ATTNVIZ_OFFLINE`` is set. ``--mcp``
(or ``ATTNVIZ_MCP=1``; on by default on Hugging Face Spaces, where ``SPACE_ID`` is set) serves
the named endpoints as MCP tools at ``/gradio_api/mcp/`` (needs the ``gradio[mcp]`` extra).
"""
from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import signal
import sys
from collections.abc import Mapping
from typing import Any

import gradio as gr

from . import app_server as S
from .memory import trim_memory_every
from .models import preload

_TRUE, _FALSE = ("1", "on", "yes", "true"), ("0", "off", "no", "false")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="attnviz web app (host/port: GRADIO_SERVER_NAME / GRADIO_SERVER_PORT)")
    parser.add_argument("--weights", action="append", default=[], metavar="VARIANT=FILE",
                        help="use this local checkpoint for VARIANT instead of downloading (repeatable)")
    parser.add_argument("--preload", metavar="NAMES",
                        help="ImageNet variants to fetch in the background at start-up, comma-separated, "
                             "'all' or 'none' (default: $ATTNVIZ_PRELOAD, else all, cbam_resnet50 first)")
    parser.add_argument("--mcp", action=argparse.BooleanOptionalAction, default=None,
                        help="serve the named endpoints as MCP tools at /gradio_api/mcp/ "
                             "(default: $ATTNVIZ_MCP, else on when running on Hugging Face Spaces)")
    return parser


def mcp_wanted(flag: bool | None, env: Mapping[str, str] | None = None) -> bool:
    """--mcp / --no-mcp, else ``ATTNVIZ_MCP``, else on where ``SPACE_ID`` says this is a Space."""
    env = os.environ if env is None else env
    if flag is not None:
        return flag
    raw = env.get("ATTNVIZ_MCP", "").strip().lower()
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    if raw:
        raise SystemExit(f"ATTNVIZ_MCP={raw!r}: expected 1/0 (on/off, yes/no, true/false) or unset")
    return bool(env.get("SPACE_ID"))


def _mcp_outputs_fix() -> None:
    """Make Gradio's MCP tool calls without a progress token return every output.

    Gradio 6.31's fast path wraps the client's result (a tuple without the State outputs) in a
    one-element list, then pops the State positions from it: /inspect (it returns a State)
    fails with "pop index out of range" and other multi-output tools come back as one text.
    The path with a progress token reads the raw outputs instead; this does the same, minus
    the progress notifications nobody asked for.
    """
    from gradio.mcp import GradioMCPServer

    async def without_progress(self: Any, job: Any) -> list[Any]:
        async for update in job:
            if update.type == "output" and update.final:
                if not update.success:
                    out = update.outputs or {}
                    raise RuntimeError(": ".join(m for m in (out.get("title"), out.get("error")) if m) or "Error!")
                return update.outputs["data"]
        raise job.exception() or RuntimeError("the tool call ended without an output")

    GradioMCPServer._execute_tool_without_progress = without_progress


def _log_preload() -> None:
    """Preload progress goes to the server log: 'ready' lines as well as failures."""
    log = logging.getLogger("attnviz.preload")
    if not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("attnviz: %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False


def configure(argv: list[str] | None = None) -> dict[str, Any]:
    """Parse the flags, register ``--weights`` files and start the preload; the launch options."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        S.use_weight_files(args.weights)
    except ValueError as exc:
        parser.error(str(exc))
    try:
        names = preload.parse_names(args.preload, what="--preload") if args.preload is not None else None
        names = preload.parse_names(os.environ.get(preload.ENV)) if names is None else names
    except ValueError as exc:
        parser.error(str(exc))
    mcp = mcp_wanted(args.mcp)
    if mcp and importlib.util.find_spec("mcp") is None:
        if args.mcp or os.environ.get("ATTNVIZ_MCP"):
            parser.error("--mcp needs the MCP extra of gradio: pip install 'gradio[mcp]'")
        mcp = False  # the Spaces default, without the extra installed: serve without MCP
    if mcp:
        _mcp_outputs_fix()
    _log_preload()
    preload.start(names)  # a daemon thread; returns at once (nothing starts when offline)
    return {"mcp_server": mcp}


def launch(demo: gr.Blocks, argv: list[str] | None = None, **launch_kwargs: Any) -> None:
    """Configure from ``argv`` and serve ``demo`` until SIGTERM / Ctrl-C."""
    options = configure(argv)
    # SIGTERM (Spaces, systemd, docker stop) exits normally so atexit removes the temp outputs.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    demo.queue(**S.queue_settings())  # bounded: a full queue answers "busy" at once
    trim_memory_every(30.0)  # freed session memory back to the OS (see attnviz.memory)
    demo.launch(max_file_size=S.MAX_FILE_SIZE, show_error=True, state_session_capacity=S.MAX_SESSIONS,
                **options, **launch_kwargs)
