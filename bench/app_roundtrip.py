#!/usr/bin/env python
"""The app rows of ``bench/bench.py`` (5, 6): the Gradio app's ``/inspect`` and ``/compare``
round trips through ``gradio_client`` next to a trivial echo app (``bench/echo_app.py``: Gradio's
own floor, with one image and with as many files as the response) and next to the library's
full inspection of the same model; then the app server's RSS growth over ``--requests``
``/inspect`` requests (``rss.py``).

The app runs as a subprocess (``servers.py``) with this process's random-init ImageNet weights
passed as ``--weights VARIANT=FILE``, so the app and the library run the very same weights.

    python bench/app_roundtrip.py [bench.py's options]      # these rows alone, timings printed
"""
from __future__ import annotations

import shutil
import ssl
import sys
import tempfile
from pathlib import Path

import workload  # noqa: F401  (first: puts the repository on sys.path)
import attnviz
from attnviz import export
from rss import server_rss_growth
from servers import Server
from timing import Task, mb, rss_bytes, run_round_robin
from workload import RESNET50S, ROOT, Run, main_alone

ECHO_APP = ROOT / "bench" / "echo_app.py"
#: How app round trips are timed: gradio_client's default (download every output file); the
#: response only (download_files=False: file URLs); and, for information, the downloads again.
#: The last two use one prebuilt SSL context: httpx builds one per new client (~20 ms of CPU,
#: encode/httpx#2298), gradio_client makes a client per request and per file, and on this 2-core
#: machine a client building one while the server runs its forward takes that CPU out of the
#: forward's two threads (measured in the server: the forward 113 ms with the default client,
#: 97 ms when repeated right after it in the same request; 103 vs 99 with one SSL context). A
#: remote client would not.
APP_MODES = ("outputs downloaded", "file URLs, one SSL context", "outputs downloaded, one SSL context")
#: Modes the app targets are judged in: gradio_client's default, and the server's work alone.
TARGET_MODES = APP_MODES[:2]


# --------------------------------------------------------------------------------------
# reading an endpoint's parameters
# --------------------------------------------------------------------------------------
def _choices(schema) -> list[str]:
    """The first ``enum`` list found in a parameter's JSON schema (dropdown choices)."""
    if isinstance(schema, dict):
        if isinstance(schema.get("enum"), list):
            return [c for c in schema["enum"] if isinstance(c, str)]
        for v in schema.values():
            found = _choices(v)
            if found:
                return found
    elif isinstance(schema, list):
        for v in schema:
            found = _choices(v)
            if found:
                return found
    return []


def _is_image_param(p: dict) -> bool:
    """An image input: an Image component, or a file input named like one (not e.g. a
    checkpoint upload, which keeps its default)."""
    comp = str(p.get("component", "")).lower()
    name = str(p.get("parameter_name", "")).lower()
    return comp in ("image", "imageeditor") or (comp == "file" and "image" in name)


def _is_multi_param(p: dict) -> bool:
    comp = str(p.get("component", "")).lower()
    ptype = str(p.get("python_type", {}).get("type", "")).lower()
    return comp == "checkboxgroup" or ptype.startswith("list") or (
        comp == "dropdown" and p.get("type", {}).get("type") == "array")


def _is_variant_param(p: dict) -> bool:
    """A choice of model variant(s): a dropdown / checkbox group / radio named variant(s) or model(s)."""
    name = str(p.get("parameter_name", "")).lower()
    comp = str(p.get("component", "")).lower()
    return comp in ("dropdown", "checkboxgroup", "radio") and any(k in name for k in ("variant", "model"))


def fill_params(params: list[dict], image: Path, *, variant: str | None = None,
                variants: list[str] | None = None) -> tuple[dict, list[str]]:
    """Keyword arguments for an endpoint: the image, the variant(s); defaults for the rest."""
    from gradio_client import handle_file

    kwargs, unknown = {}, []
    for p in params:
        name = p["parameter_name"]
        if _is_image_param(p):
            kwargs[name] = handle_file(str(image))
        elif variants is not None and _is_variant_param(p) and _is_multi_param(p):
            kwargs[name] = list(variants)
        elif variant is not None and _is_variant_param(p) and not _is_multi_param(p):
            kwargs[name] = variant
        elif p.get("parameter_has_default"):
            continue
        else:
            unknown.append(name)
    return kwargs, unknown


def _count_files(output) -> int:
    """Output files in an endpoint's response (what gradio_client downloads, one request each)."""
    if isinstance(output, dict):
        own = 1 if ("url" in output or "path" in output) and not isinstance(output.get("url", ""), dict) else 0
        return own + sum(_count_files(v) for v in output.values() if isinstance(v, (dict, list, tuple)))
    if isinstance(output, (list, tuple)):
        return sum(_count_files(v) for v in output)
    if isinstance(output, str) and output.startswith(("http://", "https://")) and "/file=" in output:
        return 1
    return 0


def _gradcam_default(params: list[dict]) -> tuple[bool, str]:
    for p in params:
        name = str(p.get("parameter_name", "")).lower()
        if "gradcam" in name.replace("_", "").replace("-", ""):
            if p.get("parameter_has_default") and isinstance(p.get("parameter_default"), bool):
                return p["parameter_default"], f"the app's `{p['parameter_name']}` default"
    return True, ("assumed: /inspect has no Grad-CAM switch, i.e. the app runs `attnviz.inspect` "
                  "with its default `gradcam=True`")


# --------------------------------------------------------------------------------------
# the rows
# --------------------------------------------------------------------------------------
class AppBench:
    """Rows 5 and 6 against one app server and the echo app, both started in ``tmp``."""

    def __init__(self, run: Run, tmp: Path) -> None:
        self.run, self.tmp, self.image = run, tmp, run.image
        self.report, self.skips = run.report, run.report.setdefault("skips", [])
        self.servers: list[Server] = []
        self.runnable: dict[str, str | None] = {}  # variant -> None if it runs, else the error
        self.imagenet_name: str | None = None
        self.imagenet_ok = False

    def start_servers(self, app_path: Path) -> None:
        threads = self.run.args.threads
        self.echo = Server("echo_app", ECHO_APP, self.tmp, threads)
        self.servers.append(self.echo)
        # The app cannot download ImageNet weights here; when it takes local checkpoints
        # (``--weights VARIANT=FILE``), hand it this process's random-init weights, so the app
        # and the library run the very same weights.
        extra: list[str] = []
        if "--weights" in app_path.read_text(errors="replace"):
            from safetensors.torch import save_file

            wdir = self.tmp / "weights"
            wdir.mkdir()
            for name in RESNET50S:
                if name in self.run.models:
                    f = wdir / f"{name}.safetensors"
                    state = self.run.models[name].model.state_dict()
                    save_file({k: v.detach().cpu().contiguous() for k, v in state.items()}, str(f))
                    extra += ["--weights", f"{name}={f}"]
            self.report["app_weights"] = (
                f"the bench's random-init weights, saved to safetensors and passed as `--weights VARIANT=FILE` "
                f"for {', '.join(n for n in RESNET50S if n in self.run.models)}")
        self.app = Server("app", app_path, self.tmp, threads, extra)
        self.servers.append(self.app)
        self.echo.wait_ready(120)
        self.app.wait_ready(600)

    def connect(self) -> bool:
        """Clients in every mode, and the app's /inspect parameters (False: no /inspect)."""
        from gradio_client import Client

        self.downloads = self.tmp / "downloads"
        shared_ssl = ssl.create_default_context()

        def client(server: Server, mode: str) -> Client:
            if mode == APP_MODES[1]:
                return Client(server.url, verbose=False, download_files=False, analytics_enabled=False,
                              ssl_verify=shared_ssl)
            verify = shared_ssl if mode == APP_MODES[2] else True
            return Client(server.url, verbose=False, download_files=str(self.downloads), analytics_enabled=False,
                          ssl_verify=verify)

        # Clients per app: gradio_client's default (every output file downloaded, one request and
        # one new httpx client per file), file URLs only (the server's work and one response), and
        # downloads with a shared SSL context (what the per-file downloads cost without rebuilding it);
        # the last two share one SSL context (see APP_MODES).
        self.clients = {mode: (client(self.echo, mode), client(self.app, mode)) for mode in APP_MODES}
        self.c_app = self.clients[APP_MODES[1]][1]
        api = self.c_app.view_api(print_info=False, return_format="dict") or {}
        self.endpoints = api.get("named_endpoints", {})
        self.report["app_endpoints"] = {k: [p["parameter_name"] for p in v.get("parameters", [])]
                                        for k, v in self.endpoints.items()}
        if "/inspect" not in self.endpoints:
            self.skips.append(f"app rows skipped: no /inspect endpoint (endpoints: {sorted(self.endpoints)})")
            return False
        self.ins_params = self.endpoints["/inspect"]["parameters"]
        return True

    @staticmethod
    def call(client, endpoint: str, kwargs: dict, timeout: float = 300):
        return client.submit(api_name=endpoint, **kwargs).result(timeout=timeout)

    def inspect_kwargs(self, v: str | None) -> dict:
        kw, unknown = fill_params(self.ins_params, self.image, variant=v)
        if unknown:
            raise RuntimeError(f"/inspect needs parameters this bench cannot fill: {unknown}")
        return kw

    def probe(self, v: str) -> bool:
        """Whether the app can run ``v`` (its /inspect once; the files of its response counted)."""
        if v not in self.runnable:
            try:
                out = self.call(self.c_app, "/inspect", self.inspect_kwargs(v), timeout=300)
                self.report.setdefault("app_files", {})[v] = _count_files(out)
                self.runnable[v] = None
            except Exception as e:  # noqa: BLE001
                self.runnable[v] = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
        return self.runnable[v] is None

    def choose_variants(self) -> bool:
        """The app's default (built-in) model and one ImageNet architecture it can run
        (False: not even the default runs)."""
        variant_param = next((p for p in self.ins_params if _is_variant_param(p) and not _is_multi_param(p)), None)
        self.choices = _choices(variant_param.get("type")) if variant_param else []
        default = variant_param.get("parameter_default") if variant_param else None
        self.builtin = default if isinstance(default, str) and default else attnviz.default_variant_name()
        self.app_gradcam, gradcam_src = _gradcam_default(self.ins_params)
        self.report["app_gradcam"] = (self.app_gradcam, gradcam_src)
        self.report["app_builtin"] = self.builtin
        if not self.probe(self.builtin):
            self.skips.append(f"app rows skipped: /inspect on the default model {self.builtin!r} failed: "
                              f"{self.runnable[self.builtin]}")
            return False
        self.loaded_builtin = attnviz.load_model(self.builtin, device=self.run.device)
        # One ImageNet architecture (random init in this process; the app has only what it can load).
        self.imagenet_name = next((v for v in ("cbam_resnet50", "se_resnet50", *RESNET50S)
                                   if not self.choices or v in self.choices), None)
        self.imagenet_ok = self.imagenet_name is not None and self.probe(self.imagenet_name)
        self.report["app_probe"] = dict(self.runnable)
        if self.imagenet_name and not self.imagenet_ok:
            self.skips.append(f"app /inspect on ImageNet variant {self.imagenet_name!r} not measured: the app "
                              f"cannot run it here ({self.runnable[self.imagenet_name]}); the app is compared on "
                              f"the built-in model {self.builtin!r} instead")
        return True

    def inspect_task(self, v: str, mode: str) -> Task:
        client, kw = self.clients[mode][1], self.inspect_kwargs(v)
        return (f"app /inspect round trip [{mode}]", v, lambda: self.call(client, "/inspect", kw))

    def inspect_tasks(self) -> list[Task]:
        """The library's inspection as the app runs it, the echo and the app's /inspect, every mode."""
        from gradio_client import handle_file

        image, gradcam = self.image, self.app_gradcam
        lb = self.loaded_builtin
        tasks: list[Task] = [
            ("library inspect + figures (as app)", self.builtin,
             lambda: export.figures(attnviz.inspect(image, lb, gradcam=gradcam))),
        ]
        for mode in APP_MODES:
            c_echo_m = self.clients[mode][0]
            tasks += [
                (f"echo app round trip [{mode}]", "-",
                 lambda c=c_echo_m: self.call(c, "/echo", {"image": handle_file(str(image))})),
                self.inspect_task(self.builtin, mode),
            ]
        if self.imagenet_ok:
            lm = self.run.models[self.imagenet_name]
            tasks.append(("library inspect + figures (as app)", self.imagenet_name,
                          lambda: export.figures(attnviz.inspect(image, lm, gradcam=gradcam))))
            tasks += [self.inspect_task(self.imagenet_name, mode) for mode in APP_MODES]
        return tasks

    def echo_files_tasks(self) -> list[Task]:
        """Gradio's floor for a response with as many files as /inspect's: the app targets' floor."""
        from gradio_client import handle_file

        files = self.report.get("app_files", {})
        file_counts = sorted({files[v] for v in (self.builtin, self.imagenet_name if self.imagenet_ok else None)
                              if v is not None and files.get(v, 0) > 1})
        tasks: list[Task] = []
        for n in file_counts:
            for mode in APP_MODES:
                tasks.append((f"echo app, n files round trip [{mode}]", f"{n} files",
                              lambda c=self.clients[mode][0], n=n: self.call(
                                  c, "/echo_files", {"image": handle_file(str(self.image)), "n": n})))
        return tasks

    def compare_set(self, cmp_params: list[dict]) -> list[str]:
        """Up to 4 variants the app's /compare offers and can run."""
        multi = next((p for p in cmp_params if _is_variant_param(p) and _is_multi_param(p)), None)
        cmp_choices = _choices(multi.get("type")) if multi else []
        pool = ([v for v in RESNET50S if v != "resnet50"] if self.imagenet_ok else []) + \
               [v for v in (cmp_choices or self.choices) if attnviz.variants().get(v) is not None
                and attnviz.variants()[v].builtin]
        chosen: list[str] = []
        for v in pool:
            if len(chosen) == 4:
                break
            if (not cmp_choices or v in cmp_choices) and self.probe(v):
                chosen.append(v)
        self.report["app_probe"] = dict(self.runnable)
        return chosen

    def compare_tasks(self) -> list[Task]:
        """/compare of 4 variants next to the single /inspect of each."""
        compare_set: list[str] = []
        tasks: list[Task] = []
        if "/compare" not in self.endpoints:
            self.skips.append(f"/compare not measured: no such endpoint (endpoints: {sorted(self.endpoints)})")
        else:
            cmp_params = self.endpoints["/compare"]["parameters"]
            compare_set = self.compare_set(cmp_params)
            if len(compare_set) < 2:
                self.skips.append(f"/compare not measured: fewer than 2 variants the app can run ({self.runnable})")
                compare_set = []
            else:
                if len(compare_set) < 4:
                    self.skips.append(f"/compare measured on {len(compare_set)} variants, not 4: the app can run "
                                      f"only {compare_set} here")
                kw, unknown = fill_params(cmp_params, self.image, variants=compare_set)
                if unknown:
                    self.skips.append(f"/compare not measured: parameters this bench cannot fill: {unknown}")
                    compare_set = []
                else:
                    tasks = self._compare_rows(compare_set, kw)
        self.report["compare_set"] = compare_set
        return tasks

    def _compare_rows(self, compare_set: list[str], kw: dict) -> list[Task]:
        label = "+".join(compare_set)
        tasks: list[Task] = []
        for mode in APP_MODES:
            tasks.append((f"app /compare round trip [{mode}]", label,
                          lambda kw=kw, c=self.clients[mode][1]: self.call(c, "/compare", kw, timeout=600)))
            for v in compare_set:
                if v != self.builtin and not (self.imagenet_ok and v == self.imagenet_name):
                    tasks.append(self.inspect_task(v, mode))
        return tasks

    def measure(self, app_path: Path) -> None:
        self.start_servers(app_path)
        if not self.connect() or not self.choose_variants():
            return
        tasks = self.inspect_tasks() + self.echo_files_tasks() + self.compare_tasks()
        args = self.run.args
        run_round_robin(tasks, repeats=args.repeats, warmup=args.warmup, timer=self.run.timer,
                        results=self.run.results, label="app", pids=[self.echo.pid, self.app.pid])
        # Row 6: the server's RSS over --requests /inspect requests (built-in model).
        kw = self.inspect_kwargs(self.builtin)
        self.report["app_rss"] = server_rss_growth(lambda: self.call(self.c_app, "/inspect", kw), self.app.pid,
                                                   args.requests, self.downloads)
        e_rss, _ = rss_bytes(self.echo.pid)
        self.report["echo_rss_mb"] = mb(e_rss)

    def print_logs(self) -> None:
        for s in self.servers:
            tail = s.log_tail()
            if tail:
                print(f"--- {s.name} log tail ---\n{tail}", file=sys.stderr)

    def close(self) -> None:
        for s in self.servers:
            s.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)


def run_section(run: Run) -> None:
    """Rows 5 and 6: Gradio round trips and the server's RSS growth."""
    run.report.setdefault("skips", [])
    app_path = Path(run.args.app)
    if not app_path.exists():
        run.skip(f"app rows skipped: {run.args.app} does not exist yet")
        return
    import gradio_client  # noqa: F401  (not installed: fail here, before any server starts)

    bench = AppBench(run, Path(tempfile.mkdtemp(prefix="attnviz-bench-app-")))
    try:
        bench.measure(app_path)
    except Exception as e:  # noqa: BLE001
        run.skip(f"app rows stopped early: {type(e).__name__}: {e}")
        bench.print_logs()
    finally:
        bench.close()


if __name__ == "__main__":
    sys.exit(main_alone(run_section, __doc__.split("\n\n")[0]))
