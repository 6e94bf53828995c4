"""Agents: ``python app.py`` with ``ATTNVIZ_MCP=1`` serves the named endpoints as MCP tools through
Gradio's own MCP server; the tools are listed from the running server with the ``mcp`` client
package (streamable HTTP) and /inspect answers through MCP with a real prediction."""
from __future__ import annotations

import ast
import asyncio
import base64
import io

import pytest
from PIL import Image

from attnviz import app_launch, synthetic

from .conftest import ROOT, start_app

ENDPOINT_TOOLS = {"inspect_image", "inspect_files", "intervene_image", "drilldown_image", "compare_variants",
                  "compare_images", "analyze_dataset"}


def _data_url(index: int) -> tuple[str, int]:
    sample = synthetic.generate(index, seed=5)
    buf = io.BytesIO()
    Image.fromarray(sample.image).save(buf, "PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode(), sample.label


async def _list_and_inspect(url: str, image: str):
    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client

    async with streamable_http_client(url) as (read, write, _):
        async with ClientSession(read, write) as session:
            await session.initialize()
            tools = (await session.list_tools()).tools
            # no progress token: the path most agents take
            result = await session.call_tool("inspect_image", {"image": image, "variant": "shapes_cbam_resnet"})
            return tools, result


def test_mcp_tools_listed_and_inspect_answers(tmp_path):
    pytest.importorskip("mcp")
    image, label = _data_url(2)
    with start_app(tmp_path, ATTNVIZ_MCP="1") as app:
        tools, result = asyncio.run(_list_and_inspect(app.url + "gradio_api/mcp/", image))
    by_name = {t.name: t for t in tools}
    assert ENDPOINT_TOOLS <= set(by_name), sorted(by_name)
    inspect_tool = by_name["inspect_image"]
    assert inspect_tool.description.startswith("Inspect one image with one ResNet variant")
    assert "Returns:" in inspect_tool.description and "Grad-CAM" in inspect_tool.description
    props = inspect_tool.inputSchema["properties"]
    assert "base64" in props["image"]["description"] and "cbam_resnet50" in props["variant"]["description"]
    assert "shapes_cbam_resnet" in props["variant"]["enum"]
    assert all(by_name[n].inputSchema["properties"] and by_name[n].description for n in ENDPOINT_TOOLS)

    assert not result.isError, result.content
    summary = ast.literal_eval(result.content[0].text)  # a JSON output comes back as its Python repr
    top1 = summary["predictions"][0]
    assert summary["variant"] == "shapes_cbam_resnet" and top1["label"] in synthetic.CLASSES
    if app.checkpoints == ROOT / "checkpoints":  # the trained built-in models (not random-init stand-ins)
        assert top1["label"] == synthetic.CLASSES[label]
    pictures = [c for c in result.content if c.type == "image"]
    assert pictures  # Grad-CAM, overview, statistics
    with Image.open(io.BytesIO(base64.b64decode(pictures[0].data))) as im:
        assert min(im.size) >= 32


def test_mcp_off_by_default(app_server):
    import httpx

    assert httpx.get(app_server.url + "gradio_api/mcp/schema", timeout=10).status_code == 404


@pytest.mark.parametrize("flag, env, expected", [
    (None, {}, False),
    (None, {"SPACE_ID": "user/attnviz"}, True),  # on Spaces by default
    (None, {"SPACE_ID": "user/attnviz", "ATTNVIZ_MCP": "0"}, False),
    (None, {"ATTNVIZ_MCP": "1"}, True),
    (True, {}, True),
    (False, {"ATTNVIZ_MCP": "yes"}, False),
])
def test_mcp_setting(flag, env, expected):
    assert app_launch.mcp_wanted(flag, env) is expected


def test_mcp_setting_refuses_nonsense():
    with pytest.raises(SystemExit, match=r"ATTNVIZ_MCP='maybe': expected 1/0"):
        app_launch.mcp_wanted(None, {"ATTNVIZ_MCP": "maybe"})
