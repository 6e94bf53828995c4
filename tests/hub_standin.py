"""A loopback stand-in for the Hugging Face Hub and for plain weight URLs (GitHub releases).

Serves what the real hosts serve for a file download, over real HTTP on 127.0.0.1: for
``/{repo}/resolve/{revision}/{filename}`` the headers the ``huggingface_hub`` client reads
(``X-Repo-Commit``, the LFS SHA-256 as ``ETag``, ``Content-Length``), for ``/files/...`` a plain
file; both honour ``Range``. Faults can be injected per path: an HTTP status, a connection
closed after N bytes (once), or a wrong ETag. Point ``HF_ENDPOINT`` at :attr:`url`.

    python -m tests.hub_standin PORT seresnet50   # serve a random-init timm file (for manual runs)
"""
from __future__ import annotations

import hashlib
import re
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class HubStandIn:
    """``with HubStandIn() as hub: hub.add_hf(repo, filename, file)``; ``hub.url`` is the endpoint."""

    def __init__(self, port: int = 0) -> None:
        self.files: dict[str, tuple[Path, str]] = {}  # URL path -> (file, etag)
        # path -> an HTTP status for every request, ("GET", status) for downloads only (the
        # client's metadata request succeeds), or ("drop", bytes): the connection closes early, once
        self.faults: dict[str, int | tuple[str, int]] = {}
        self.requests: list[tuple[str, str, str | None]] = []  # (method, path, Range header)
        self._server = ThreadingHTTPServer(("127.0.0.1", port), self._handler())
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def add_hf(self, repo: str, filename: str, file: Path, *, etag: str | None = None) -> str:
        """Publish ``file`` as ``repo``'s ``filename``; returns its URL path."""
        path = f"/{repo}/resolve/main/{filename}"
        self.files[path] = (Path(file), etag or sha256_of(Path(file)))
        return path

    def add_url(self, name: str, file: Path) -> str:
        """Publish ``file`` at ``/files/<name>``; returns the full URL."""
        path = f"/files/{name}"
        self.files[path] = (Path(file), sha256_of(Path(file)))
        return self.url + path

    def __enter__(self) -> "HubStandIn":
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:  # keep test output quiet
                pass

            def do_HEAD(self) -> None:
                self._serve(body=False)

            def do_GET(self) -> None:
                self._serve(body=True)

            def _serve(self, body: bool) -> None:
                path = unquote(urlsplit(self.path).path)
                hub.requests.append((self.command, path, self.headers.get("Range")))
                fault = hub.faults.get(path)
                if isinstance(fault, tuple) and fault[0] == self.command:
                    fault = fault[1]
                if isinstance(fault, int) or path not in hub.files:
                    return self._error(fault if isinstance(fault, int) else 404, path)
                file, etag = hub.files[path]
                self._send_file(path, file, etag, body, fault)

            def _error(self, code: int, path: str) -> None:
                self.send_response(code)
                if "/resolve/" in path:
                    self.send_header("X-Repo-Commit", "0" * 40)
                    self.send_header("X-Error-Code", "EntryNotFound" if code == 404 else "ServerError")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def _send_file(self, path: str, file: Path, etag: str, body: bool, fault) -> None:
                size = file.stat().st_size
                start = 0
                m = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
                if m and int(m.group(1)) < size:
                    start = int(m.group(1))
                self.send_response(206 if start else 200)
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{size - 1}/{size}")
                self.send_header("Content-Length", str(size - start))
                self.send_header("Accept-Ranges", "bytes")
                self.send_header("ETag", f'"{etag}"')
                self.send_header("X-Repo-Commit", hashlib.sha1(path.encode()).hexdigest())
                self.send_header("Content-Type", "application/octet-stream")
                self.end_headers()
                if not body:
                    return
                limit = size
                if isinstance(fault, tuple) and fault[0] == "drop":
                    limit = min(size, start + fault[1])
                    del hub.faults[path]  # the next try gets the whole answer
                self._copy(file, start, limit)
                if limit < size:
                    self.close_connection = True

            def _copy(self, file: Path, start: int, end: int) -> None:
                with open(file, "rb") as f:
                    f.seek(start)
                    left = end - start
                    while left > 0:
                        chunk = f.read(min(1 << 20, left))
                        if not chunk:
                            break
                        self.wfile.write(chunk)
                        left -= len(chunk)
                self.wfile.flush()

        return Handler


def timm_safetensors(model_name: str, out: Path, seed: int = 0) -> Path:
    """``model.safetensors`` as timm publishes it on the hub: the model's state dict, here at random init."""
    import timm
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(seed)
    model = timm.create_model(model_name, pretrained=False)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out))
    return out


def main(argv: list[str]) -> None:
    """Serve random-init hub files for the named timm-hosted variants until interrupted."""
    import tempfile
    import time

    from attnviz.models import get_variant

    port, names = int(argv[0]), argv[1:]
    folder = Path(tempfile.mkdtemp(prefix="hub-standin-"))
    with HubStandIn(port) as hub:
        for name in names:
            v = get_variant(name)
            file = timm_safetensors(v.arch["model_name"], folder / name / v.weights.hf_filename)
            hub.add_hf(v.weights.hf_repo, v.weights.hf_filename, file)
        print(f"serving {', '.join(names)} at {hub.url} (HF_ENDPOINT={hub.url})", flush=True)
        while True:
            time.sleep(3600)


if __name__ == "__main__":
    main(sys.argv[1:])
