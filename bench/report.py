"""What ``bench/bench.py`` reports: the targets judged on its results, the console tables and
the Markdown (``--out``, default ``BENCHMARKS.md``; anything below :data:`MARKER` is kept).
"""
from __future__ import annotations

from pathlib import Path

from app_roundtrip import APP_MODES, TARGET_MODES
from cli_throughput import CLI_IMAGES
from timing import Results, fmt, keep_below
from workload import RESNET50S, SEED

MARKER = "<!-- bench.py rewrites everything above this line; notes below it are kept -->"

# Targets: (key, description, limit)
LIMITS = {
    "capture": 1.05,       # capture / bare forward
    "full": 1.5,           # inspect(gradcam=False) + figures / bare forward
    "vs_torchcam": 1.0,    # inspect(gradcam=True) / torchcam GradCAM
    "vs_pgc": 1 / 3,       # inspect(gradcam=True) / pytorch-grad-cam GradCAM
    "render_ms": 40.0,     # export.figures on one result
    "app": 1.3,            # (app /inspect - echo with as many files) / library full inspection
    "compare": 1.2,        # app /compare of 4 / sum of app /inspect of each
    "rss_mb": 20.0,        # server RSS growth over --requests /inspect
}


# --------------------------------------------------------------------------------------
# targets
# --------------------------------------------------------------------------------------
def _target(name: str, variant: str, value: float, limit: float, unit: str, note: str = "",
            paired: float = float("nan")) -> dict:
    ok = value == value and value <= limit + 1e-12
    return {"target": name, "variant": variant, "value": value, "limit": limit, "unit": unit,
            "pass": ok, "note": note, "paired": paired}


def _library_targets(results: Results, v: str) -> list[dict]:
    bare = results.med("bare forward", v)
    # Judged on the paired ratios: each capture run against the bare run beside it (ABBA), so
    # the machine's speed swings cancel; the ratio of the two medians moves by ±3 % with them.
    of_medians = results.med("capture", v) / bare
    # Same input for all three: the preprocessed tensor (from the file: see the ratio table).
    cam_row = "inspect gradcam=True (tensor input)"
    return [
        _target("capture ≤ 1.05 × bare forward (median of ABBA-paired ratios)", v,
                results.paired_ratio(("capture", v), ("bare forward", v)), LIMITS["capture"], "×",
                note=f"ratio of medians {of_medians:.3f}"),
        _target("inspect (no Grad-CAM) + figures ≤ 1.5 × bare forward", v,
                results.med("inspect gradcam=False + figures", v) / bare, LIMITS["full"], "×",
                paired=results.paired_ratio(("inspect gradcam=False + figures", v), ("bare forward", v))),
        _target("inspect with Grad-CAM ≤ torchcam GradCAM (same tensor)", v,
                results.med(cam_row, v) / results.med("torchcam GradCAM", v), LIMITS["vs_torchcam"], "×",
                paired=results.paired_ratio((cam_row, v), ("torchcam GradCAM", v))),
        _target("inspect with Grad-CAM ≤ 1/3 × pytorch-grad-cam GradCAM (same tensor)", v,
                results.med(cam_row, v) / results.med("pytorch-grad-cam GradCAM", v), LIMITS["vs_pgc"],
                "×", paired=results.paired_ratio((cam_row, v), ("pytorch-grad-cam GradCAM", v))),
        _target("all rendering (figures) ≤ 40 ms", v, results.med("figures (render only)", v),
                LIMITS["render_ms"], "ms"),
    ]


def _app_targets(results: Results, report: dict, mode: str) -> list[dict]:
    t = []
    files = report.get("app_files") or {}
    echo = results.med(f"echo app round trip [{mode}]", "-")
    for (row, v), s in results.series.items():
        if row != f"app /inspect round trip [{mode}]":
            continue
        lib = results.get("library inspect + figures (as app)", v)
        if lib is None:
            continue
        # Gradio's floor for this response: the echo returning as many files (gradio_client
        # downloads each file with a new client, whatever the app does); the one-image echo
        # where that row was not measured. The one-image reading stays in the note.
        same = results.get(f"echo app, n files round trip [{mode}]", f"{files.get(v, 0)} files")
        floor, floor_name = (same.median_ms, f"echo with {files[v]} files") if same else (echo, "echo")
        note = f"app {s.median_ms:.1f} ms − {floor_name} {floor:.1f} ms vs library {lib.median_ms:.1f} ms"
        if same:
            note += f"; against the one-image echo ({echo:.1f} ms): {(s.median_ms - echo) / lib.median_ms:.3f} ×"
        t.append(_target(f"app /inspect − echo floor (as many files) ≤ 1.3 × library inspect + figures [{mode}]", v,
                         (s.median_ms - floor) / lib.median_ms, LIMITS["app"], "×", note=note))
    cset = report.get("compare_set") or []
    if cset:
        label = "+".join(cset)
        singles = [results.med(f"app /inspect round trip [{mode}]", v) for v in cset]
        total = float(sum(singles))
        cmp_ms = results.med(f"app /compare round trip [{mode}]", label)
        t.append(_target(f"app /compare ({len(cset)} variants) ≤ 1.2 × Σ app /inspect [{mode}]", label,
                         cmp_ms / total, LIMITS["compare"], "×", note=f"compare {cmp_ms:.1f} ms vs Σ {total:.1f} ms"))
    return t


def evaluate_targets(results: Results, report: dict, variants: list[str]) -> list[dict]:
    t = [target for v in variants for target in _library_targets(results, v)]
    for mode in TARGET_MODES:
        t += _app_targets(results, report, mode)
    rss = report.get("app_rss")
    if rss:
        t.append(_target(f"app server RSS growth over {rss['requests']} /inspect ≤ 20 MB", report.get("app_builtin", ""),
                         rss["growth_mb"], LIMITS["rss_mb"], "MB"))
    return t


# --------------------------------------------------------------------------------------
# tables
# --------------------------------------------------------------------------------------
def _row_key(results: Results, key: tuple[str, str]) -> tuple:
    row, variant = key
    rank = ROW_ORDER.get(row)
    if rank is None:
        rank = 100 + next((i for i, p in enumerate(ROW_PREFIXES) if row.startswith(p)), len(ROW_PREFIXES))
    mode = next((i for i, m in enumerate(APP_MODES) if f"[{m}]" in row), -1)
    vrank = RESNET50S.index(variant) if variant in RESNET50S else -1
    return (rank, mode, vrank, results.order.index(key))


def results_table_md(results: Results) -> list[str]:
    lines = ["| row | variant | median ms | p90 ms | n |", "|---|---|---:|---:|---:|"]
    for key in sorted(results.order, key=lambda k: _row_key(results, k)):
        s = results.series[key]
        lines.append(f"| {s.row} | {s.variant} | {fmt(s.median_ms)} | {fmt(s.p90_ms)} | {len(s.times)} |")
    return lines


ROW_ORDER = {r: i for i, r in enumerate([
    "bare forward", "capture", "inspect gradcam=False", "inspect gradcam=False + figures",
    "inspect gradcam=True", "inspect gradcam=True (tensor input)", "inspect gradcam=True + figures",
    "figures (render only)",
    "torchcam GradCAM", "pytorch-grad-cam GradCAM",
])}
ROW_PREFIXES = ("bare forward [", "capture [", "inspect gradcam=True [", "inspect_batch", "CLI inspect",
                "library inspect + figures (as app)", "echo app round trip", "echo app, n files",
                "app /inspect round trip", "app /compare round trip")


def ratio_table_md(results: Results, variants: list[str]) -> list[str]:
    cols = [
        ("capture / bare", "capture", "bare forward"),
        ("inspect (no CAM) / bare", "inspect gradcam=False", "bare forward"),
        ("inspect (no CAM) + figures / bare", "inspect gradcam=False + figures", "bare forward"),
        ("inspect (CAM) / bare", "inspect gradcam=True", "bare forward"),
        ("inspect (CAM) + figures / bare", "inspect gradcam=True + figures", "bare forward"),
        ("inspect (CAM, from file) / torchcam", "inspect gradcam=True", "torchcam GradCAM"),
        ("inspect (CAM, same tensor) / torchcam", "inspect gradcam=True (tensor input)", "torchcam GradCAM"),
        ("inspect (CAM, from file) / pytorch-grad-cam", "inspect gradcam=True", "pytorch-grad-cam GradCAM"),
        ("inspect (CAM, same tensor) / pytorch-grad-cam", "inspect gradcam=True (tensor input)",
         "pytorch-grad-cam GradCAM"),
        ("torchcam / bare", "torchcam GradCAM", "bare forward"),
        ("pytorch-grad-cam / bare", "pytorch-grad-cam GradCAM", "bare forward"),
    ]
    amp_rows = sorted({row for row, _ in results.series if row.startswith("inspect gradcam=True (tensor input, amp=")})
    cols += [(f"inspect (CAM, same tensor): {row.rsplit(', ', 1)[1].rstrip(')')} / float32", row,
              "inspect gradcam=True (tensor input)") for row in amp_rows]
    lines = ["| ratio (of medians) | " + " | ".join(variants) + " |",
             "|---|" + "---:|" * len(variants)]
    for label, num, den in cols:
        vals = [results.med(num, v) / results.med(den, v) for v in variants]
        lines.append(f"| {label} | " + " | ".join(fmt(x, 3) for x in vals) + " |")
    return lines


def per_file_floor_md(results: Results, report: dict) -> list[str]:
    """/inspect against an echo returning as many files (Gradio's and gradio_client's cost for a
    response of that shape: the app targets' floor), next to the one-image echo, in every mode."""
    counts = report.get("app_files") or {}
    lines = ["| mode | variant | files | app /inspect ms | echo, 1 image ms | echo, same number of files ms | "
             "(app − echo with as many files) / library |", "|---|---|---:|---:|---:|---:|---:|"]
    for mode in APP_MODES:
        for (row, v), s in results.series.items():
            n = counts.get(v, 0)
            floor = results.get(f"echo app, n files round trip [{mode}]", f"{n} files")
            lib = results.get("library inspect + figures (as app)", v)
            if row != f"app /inspect round trip [{mode}]" or floor is None or lib is None:
                continue
            one = results.med(f"echo app round trip [{mode}]", "-")
            lines.append(f"| {mode} | {v} | {n} | {fmt(s.median_ms)} | {fmt(one)} | {fmt(floor.median_ms)} | "
                         f"{fmt((s.median_ms - floor.median_ms) / lib.median_ms, 3)} × |")
    return lines if len(lines) > 2 else []


def targets_md(targets: list[dict]) -> list[str]:
    lines = ["| target | variant | measured | limit | result | paired-ratio median | note |",
             "|---|---|---:|---:|:---:|---:|---|"]
    for t in targets:
        unit = t["unit"]
        val = f"{fmt(t['value'], 3 if unit == '×' else 1)} {unit}"
        lim = f"{t['limit']:.3g} {unit}"
        paired = fmt(t["paired"], 3) if t["paired"] == t["paired"] else ""
        lines.append(f"| {t['target']} | {t['variant']} | {val} | {lim} | "
                     f"{'PASS' if t['pass'] else '**FAIL**'} | {paired} | {t['note']} |")
    return lines


def print_timings(results: Results) -> None:
    print("\n== timings (ms) ==")
    w = max([len(s.row) for s in results.series.values()] + [10])
    wv = max([len(s.variant) for s in results.series.values()] + [8])
    print(f"{'row':<{w}}  {'variant':<{wv}}  {'median':>9}  {'p90':>9}  {'n':>3}")
    for key in sorted(results.order, key=lambda k: _row_key(results, k)):
        s = results.series[key]
        print(f"{s.row:<{w}}  {s.variant:<{wv}}  {fmt(s.median_ms):>9}  {fmt(s.p90_ms):>9}  {len(s.times):>3}")


def print_console(results: Results, targets: list[dict], variants: list[str], report: dict) -> None:
    print_timings(results)
    print("\n== ratios (of medians) ==")
    for line in ratio_table_md(results, variants):
        if not line.startswith("|---"):
            print(line.replace("|", " ").strip())
    print("\n== targets ==")
    for t in targets:
        unit = t["unit"]
        paired = f" (paired {t['paired']:.3f})" if t["paired"] == t["paired"] else ""
        print(f"{'PASS' if t['pass'] else 'FAIL'}  {t['target']} [{t['variant']}]: "
              f"{fmt(t['value'], 3 if unit == '×' else 1)} {unit} (limit {t['limit']:.3g}){paired}"
              f"{'  ' + t['note'] if t['note'] else ''}")
    floor = per_file_floor_md(results, report)
    if floor:
        print("\n== app against the echo: one image, and as many files ==")
        for line in floor:
            if not line.startswith("|---"):
                print(line.replace("|", " ").strip())
    for s in report.get("skips", []):
        print(f"SKIP  {s}")


# --------------------------------------------------------------------------------------
# Markdown
# --------------------------------------------------------------------------------------
def _head_md(report: dict, results: Results, targets: list[dict]) -> list[str]:
    L = ["# Benchmarks", "",
         f"Generated by `bench/bench.py` on {report['date']}; re-run it to refresh everything above "
         "the marker line at the end.", ""]
    n_pass = sum(t["pass"] for t in targets)
    L += [f"**Targets: {n_pass} of {len(targets)} pass.**", ""]
    L += ["## Command", "", "```sh", report["command"], "```", ""]
    L += ["## Machine", ""]
    L += [f"- {k}: {v}" for k, v in report["machine"].items()]
    ld = report["load"]
    L += [f"- load average (1 min): {ld['start']:.2f} at start, {ld['end']:.2f} at end; sampled every 5 s "
          f"during the run: median {ld['median']:.2f}, max {ld['max']:.2f} ({ld['n']} samples). "
          "The bench itself accounts for about 1 of it (up to 2 with the app server busy)."]
    for label, (others, own) in results.contention.items():
        L += [f"- CPU use during the timed `{label}` runs: other processes {others:.0f}% of the machine, "
              f"the bench and its servers {own:.0f}%."]
    return L + [""]


def _setup_md(report: dict) -> list[str]:
    a = report["args"]
    return ["## Setup", "",
            f"- Device {a.device}, batch 1, 224×224 input, `torch.set_num_threads({a.threads})`; "
            f"medians and p90 over {a.repeats} timed runs after {a.warmup} warm-up runs.",
            f"- Image: {report['image']}; preprocessed by each variant's own config to 224 px. Inspection rows "
            "start from the image file (decoding and preprocessing included) except *(tensor input)*; bare "
            "forward, capture, torchcam and pytorch-grad-cam get the already preprocessed tensor.",
            f"- Weights: ImageNet weights cannot be downloaded on this machine, so every ImageNet variant is "
            f"its architecture at random init (`torch.manual_seed({SEED})` before `get_variant(name).build()`, "
            "then `.eval()` and `attnviz.wrap_model`). One model object per variant serves every tool, so all "
            "tools see the same weights. Speed does not depend on the weight values; predictions are meaningless.",
            "- Interleaving: within a section every (row, variant) runs once per repeat, in one loop, the order "
            "rotated each repeat, so load from other processes hits all rows alike. Targets use the ratio of "
            "medians (the median of per-repeat paired ratios next to it), except capture / bare forward: bare "
            f"forward and capture run {a.limit_pairs} times each per repeat, back to back in ABBA order "
            f"(`--limit-pairs`; {a.limit_pairs * a.repeats} samples), and that target, the one with the thinnest "
            "margin, is judged on the median of those adjacent pairs' ratios (the ratio of medians in its note).",
            "- Rows: *bare forward* = `model(x)` under `torch.inference_mode()`, no hooks; *capture* = "
            "`with attnviz.capture(model), torch.inference_mode(): model(x)`; *inspect* = "
            "`attnviz.inspect(image_path, loaded, gradcam=…)`; *(tensor input)* = `attnviz.inspect(prepared, "
            "loaded)` on the image prepared once, the same tensor the peers get (their comparison targets use "
            "it); *+ figures* adds `export.figures(result)` "
            "(every rendered output); *figures (render only)* = `export.figures` on a fixed Grad-CAM result "
            "with an empty view cache; *torchcam GradCAM* = `torchcam.methods.GradCAM(model, target_layer=\"layer4\")`"
            ", forward, CAM for the top-1 class, `remove_hooks()` (7×7 map); *pytorch-grad-cam GradCAM* = "
            "`pytorch_grad_cam.GradCAM(model=model, target_layers=[model.layer4])` called on the tensor "
            "(forward, backward, 224×224 map).", ""]


def _floor_md(results: Results, report: dict) -> list[str]:
    floor = per_file_floor_md(results, report)
    if not floor:
        return []
    return ["## App against the echo: one image, and as many files", "",
            "The app targets subtract the echo returning as many files as that `/inspect` response "
            "(`/echo_files` in `bench/echo_app.py`: the input image as that many JPEG files, served from "
            "a static folder like the app's). gradio_client fetches each output file with a new httpx "
            "client, so with downloads a response's cost grows with its number of files whatever the app "
            "does; the issue's reference echo (≈ 123 ms) is the one-image echo with downloads. Both floors, "
            "every mode; the last column is the app's own work against the "
            "library's.", ""] + floor + [""]


def _memory_md(report: dict) -> list[str]:
    mem = report.get("memory")
    if not mem:
        return []
    L = ["## Memory", "",
         f"- RSS of the bench process ({mem['how']}): {mem['base_mb']:.0f} MB after imports, "
         f"{mem['loaded_mb']:.0f} MB with all {mem['n']} ImageNet architectures built at once "
         f"({', '.join(mem['names'])}): +{mem['loaded_mb'] - mem['base_mb']:.0f} MB for "
         f"{mem['param_mb']:.0f} MB of parameters and buffers."]
    rss = report.get("app_rss")
    if rss:
        L += [f"- App server ({rss['how']}, built-in model `{report.get('app_builtin')}`): "
              f"{rss['before_mb']:.1f} MB after 20 warm-up `/inspect` requests (and the timed rows), "
              f"{rss['after_mb']:.1f} MB after {rss['requests']} more: growth {rss['growth_mb']:+.1f} MB; "
              f"peak (VmHWM) {rss['peak_mb']:.1f} MB; {rss['seconds']:.0f} s for the requests. "
              f"Echo app: {report.get('echo_rss_mb', float('nan')):.1f} MB."]
    return L + [""]


APP_CLIENTS_MD = (
    "- Round trips go through `gradio_client` (`submit(...).result()`) against servers started "
    "as subprocesses on free ports, in three ways: *outputs downloaded* (the client's default: it "
    "fetches every output file, one request and one new httpx client each), *file URLs, one SSL "
    "context* (`download_files=False`: the server's work and one response) and, for information, "
    "*outputs downloaded, one SSL context* (the same downloads as the default). *One SSL context*: "
    "`Client(..., ssl_verify=ssl.create_default_context())`, so the client does not build one "
    "(~20 ms of CPU, encode/httpx#2298) per request and per file; with the default, that CPU is "
    "taken from the server's forward on this 2-core machine (its first forward in a request "
    "113 ms, a second one right after 97 ms; 103 / 99 ms with one context), which a remote "
    "client would not do. "
    "The echo app (`bench/echo_app.py`, image in → same image out) is Gradio's own floor, timed "
    "the same ways. Targets are judged in the first two. The library comparison row is "
    "`export.figures(attnviz.inspect(image_path, model))`, with the app's Grad-CAM setting.")


def _app_md(report: dict) -> list[str]:
    if "app_endpoints" not in report and not report.get("skips"):
        return []
    L = ["## App", ""]
    if "app_endpoints" in report:
        L += ["- Endpoints found: " + "; ".join(f"`{k}`({', '.join(v)})" for k, v in report["app_endpoints"].items())]
        if "app_weights" in report:
            L += [f"- Weights in the app: {report['app_weights']}; built-in models from `checkpoints/` "
                  f"(default `{report.get('app_builtin')}`)."]
        if "app_gradcam" in report:
            g, src = report["app_gradcam"]
            L += [f"- Grad-CAM in the app's `/inspect`: {g} ({src}); the library comparison row uses the same."]
        if report.get("app_files"):
            L += ["- Output files per `/inspect` response: " + "; ".join(
                f"`{k}`: {v}" for k, v in report["app_files"].items())]
        if report.get("app_probe"):
            L += ["- Variants tried on the app: " + "; ".join(
                f"`{k}`: {'ok' if v is None else v}" for k, v in report["app_probe"].items())]
        L += [APP_CLIENTS_MD]
    for s in report.get("skips", []):
        L += [f"- Not measured / note: {s}"]
    return L + [""]


def _accel_md(report: dict) -> list[str]:
    if not report.get("accel_checks"):
        return []
    L = ["## Accelerator checks", "", "| variant | mode | top-1 same | fp32 top-1 margin | max gate err | max logit err |",
         "|---|---|:---:|---:|---:|---:|"]
    for c in report["accel_checks"]:
        L.append(f"| {c['variant']} | {c['mode']} | {'yes' if c['top1_same'] else '**no**'} | "
                 f"{c['fp32_margin']:.3g} | {c['max_gate_err']:.2e}"
                 f"{'' if c['max_gate_err'] <= 1e-2 else ' **> 1e-2**'} | {c['logit_err']:.2e} |")
    return L + [""]


def _amp_md(report: dict) -> list[str]:
    if not report.get("amp_checks"):
        return []
    a = report["args"]
    L = [f"## Autocast `amp={a.amp}` against float32 (library option; information)", "",
         f"`attnviz.inspect(image, model, amp=\"{a.amp}\")` and the float32 call on the same prepared image, "
         f"{report['amp_checks'][0]['n']} synthetic images per trained built-in model (the ImageNet weights "
         "here are random: their top-1 margins mean nothing). The issue's bar for autocast: top-1 kept, "
         "gate error ≤ 1e-2. Speed: the *amp* row in the timings.", "",
         "| variant | top-1 same | max gate err | ≤ 1e-2 | max Grad-CAM err | max probability err |",
         "|---|---:|---:|:---:|---:|---:|"]
    for r in report["amp_checks"]:
        L.append(f"| {r['variant']} | {r['top1_same']}/{r['n']} | {r['gate_err']:.2e} | "
                 f"{'yes' if r['gate_err'] <= 1e-2 else '**no**'} | {r['cam_err']:.2e} | {r['prob_err']:.2e} |")
    return L + [""]


def _cli_md(report: dict) -> list[str]:
    if not report.get("cli"):
        return []
    a = report["args"]
    L = [f"## CLI throughput (`python -m attnviz inspect`, {CLI_IMAGES} images per run, Grad-CAM on)", "",
         f"Batch size: the CLI's default ({'16' if a.device == 'cuda' else '1'} on {a.device}); median "
         f"over {a.repeats} runs after {a.warmup} warm-up runs (the first loads the model). With figures, "
         "every image gets its JSON, NPZ and all figures as lossless PNG; without, JSON and NPZ only.", "",
         "| variant | figures | median s / run | images/s |", "|---|:---:|---:|---:|"]
    for r in report["cli"]:
        L.append(f"| {r['variant']} | {'yes' if r['figures'] else 'no'} | {r['median_ms'] / 1e3:.2f} | "
                 f"{r['images_per_s']:.1f} |")
    return L + [""]


def _throughput_md(report: dict) -> list[str]:
    if not report.get("throughput"):
        return []
    L = ["## Batch throughput (`attnviz.inspect_batch`, Grad-CAM on)", "",
         "| variant | batch | median ms / batch | images/s |", "|---|---:|---:|---:|"]
    for r in report["throughput"]:
        L.append(f"| {r['variant']} | {r['batch']} | {r['median_ms']:.1f} | {r['images_per_s']:.1f} |")
    return L + [""]


def write_markdown(path: Path, *, report: dict, results: Results, targets: list[dict],
                   variants: list[str]) -> None:
    lines = (_head_md(report, results, targets) + _setup_md(report)
             + ["## Timings", ""] + results_table_md(results) + [""]
             + ["## Ratios", ""] + ratio_table_md(results, variants) + [""]
             + ["## Targets", ""] + targets_md(targets) + [""]
             + _floor_md(results, report) + _memory_md(report) + _app_md(report) + _accel_md(report)
             + _amp_md(report) + _cli_md(report) + _throughput_md(report))
    keep_below(path, MARKER, lines)
