"""What the two compare tabs' events call: ``/compare`` (one image, 2–5 variants) with its
side-by-side columns, and ``/compare_images`` (2–8 images, one variant) with its profile view.
The logic is :mod:`attnviz.app_compare`'s, the drawings :mod:`attnviz.app_compare_views`'s;
the server side (kept results, model access) is :mod:`attnviz.app_server`'s.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import gradio as gr

from . import app_compare as C
from . import app_compare_views as CV
from . import app_logic as L
from . import app_server as S
from . import render
from .app_results import inspection_nbytes, light_inspection
from .app_server import COMPARE_DEFAULT, DEFAULT_ALPHA, DEFAULT_CMAP, DEFAULT_VARIANT, EXAMPLE_VARIANT
from .cli import unique_stems
from .inspection import Inspection


def _column_views(results: dict[str, Inspection], slots, slot, alpha, cmap, folder: Path,
                  cache: dict | None = None) -> dict[str, tuple]:
    """Per variant: (views with the selected stage's spatial maps, selected block, its chart).
    ``cache`` keeps what was drawn for the same variant, block and style (the column fill after
    /compare reuses the API's images instead of drawing them again)."""
    out = {}
    for i, (name, r) in enumerate(results.items()):
        b = C.block_at(r, slot, slots)
        key = (name, None if b is None else b.name, alpha, cmap)
        if cache is not None and key in cache and Path(cache[key][0].input).exists():
            out[name] = cache[key]
            continue
        stage_blocks = [] if b is None or b.stage is None else [x.name for x in r.spatial_blocks if x.stage == b.stage]
        col = folder / str(i)
        views = L.inspect_views(r, col, alpha=alpha, colormap=cmap, spatial_blocks=stage_blocks)
        out[name] = (views, b, None if b is None else L.block_chart(r, b.name, col))
        if cache is not None:
            cache[key] = out[name]
    return out


def _slot_value(slot: str | None, slots) -> str:
    slot = slot or ""
    names = [n for n, _ in slots]
    if slot and slot not in names:
        raise gr.Error(f"unknown block {slot!r} for this comparison; choose one of: {', '.join(names)} "
                       "(or leave it empty for each variant's deepest block)")
    return slot


def compare_variants(image, variants=COMPARE_DEFAULT, block="", opacity=DEFAULT_ALPHA, colormap=DEFAULT_CMAP,
                     timm_models="", progress=gr.Progress(track_tqdm=True), request: gr.Request = None):
    """One image on 2 to 5 models side by side: do their predictions and attention agree?

    Args:
        image: the image (a URL or base64 data URL for MCP).
        variants: variant names, e.g. ["cbam_resnet50", "se_resnet50"].
        block: block or stage shown for every variant (empty: each variant's deepest block).
        opacity: overlay opacity, 0 to 1.
        colormap: heat-map colormap.
        timm_models: more models as comma-separated timm:NAME (any timm model, e.g.
            "timm:efficientnet_b0" beside SE-ResNet-50); with ``variants``, 2 to 5 in all.
    Returns:
        summary JSON (per variant: predictions, weights, the shown block; whether top-1 agrees),
        the gate statistics along depth (one line per variant), and galleries of Grad-CAMs,
        channel-weight charts and depth overviews, one per variant."""
    path = S.image_path(image)
    alpha, cmap = S.check_style(opacity, colormap)
    typed = [n.strip() for n in (timm_models or "").split(",") if n.strip()]
    names = list(dict.fromkeys([*(variants or []), *typed]))
    if not 2 <= len(names) <= L.MAX_COMPARE_VARIANTS:
        raise gr.Error(f"Choose 2 to {L.MAX_COMPARE_VARIANTS} variants to compare (got {len(names)}).")
    results: dict[str, Inspection] = {}
    for i, name in enumerate(names):
        progress((i, len(names)), desc=f"{name}: loading and running ({i + 1}/{len(names)})…")
        results[name] = S.inspect_one(path, S.load_variant(name, progress))
    slots = C.shared_slots(results)
    slot = _slot_value(block, slots)
    folder = S.scratch_dir()
    cache: dict = {}
    cols = _column_views(results, slots, slot, alpha, cmap, folder, cache)
    gradcams, charts, overviews = [], [], []
    for i, (name, (views, b, chart)) in enumerate(cols.items()):
        p = results[name].predictions[0]
        gradcams.append((views.gradcam or views.input, f"{name}: {p.label} ({100 * p.probability:.1f}%)"))
        if chart is None:
            chart = L.save_png(render.depth_overview([]), folder / f"nochart{i}.png")
        charts.append((chart, f"{name}: {b.name if b is not None else 'no block'}"))
        overviews.append((views.overview, name))
    summary = C.compare_summary(results, slots, slot)
    stats = L.save_png(C.compare_stats_chart(results, slots), folder / "stats.png")
    light = {name: light_inspection(r, L.VIEW_SIZE) for name, r in results.items()}
    kept = {"results": light, "slots": slots, "views": cache}
    state = {"key": S.RESULTS.put(kept, sum(inspection_nbytes(r) for r in light.values()),
                                  owner=S.result_owner(request, "compare"))}
    return summary, stats, gradcams, charts, overviews, state


def fill_columns(state, slot, opacity, colormap):
    """UI-only: the side-by-side columns and the shared selector, from the kept results."""
    n_out = 2 + 7 * L.MAX_COMPARE_VARIANTS
    kept = S.kept_result(state, "Compare")
    if kept is None:
        return (gr.skip(),) * n_out
    alpha, cmap = S.check_style(opacity, colormap)
    results, slots = kept["results"], kept["slots"]
    slot = slot if slot in [n for n, _ in slots] else ""
    choices = [("deepest block of each variant", "")] + [
        (f"{n} (stage {st})" if st is not None else n, n) for n, st in slots]
    out: list[Any] = [gr.update(choices=choices, value=slot), C.agreement_markdown(results)]
    cache = kept["views"]
    if len(cache) > 4 * L.MAX_COMPARE_VARIANTS:  # one user trying many blocks / styles: keep it bounded
        cache.clear()
    folder = S.scratch_dir()
    items = list(_column_views(results, slots, slot, alpha, cmap, folder, cache).items())
    width = CV.column_width(len(items))  # charts drawn for the width of their column: legible text
    for i in range(L.MAX_COMPARE_VARIANTS):
        if i >= len(items):
            out += [gr.update(visible=False)] + [None] * 6
            continue
        name, (views, b, _) = items[i]
        out += _column_outputs(results[name], name, views, b, folder / f"col{i}", width)
    return tuple(out)


def _column_outputs(r: Inspection, name: str, views: L.InspectViews, b, folder: Path, width: int) -> list[Any]:
    """One visible column: its head, top-5, Grad-CAM, the selected stage's spatial maps, the
    selected block's chart and the depth overview (the last three hidden when there are none)."""
    if b is not None:
        selected = f"**{b.name}** ({b.kind})"
    else:
        selected = "none (no attention block in this stage)" if r.blocks else "none (no attention blocks: baseline)"
    head = f"### {name}\n{r.weights} · {r.device}  \nselected block: {selected}"
    # the spatial maps of the selected block's stage (all of a ResNet-50's would be 16 per column)
    stage = None if b is None else b.stage
    spatial = views.spatial
    chart = CV.column_chart(r, None if b is None else b.name, folder, width)
    overview = CV.column_overview(r, folder, width) if r.channel_blocks else None
    return [gr.update(visible=True), head, L.label_dict(r), views.gradcam,
            gr.update(value=spatial, visible=bool(spatial), label=f"Spatial maps of stage {stage}"),
            gr.update(value=chart, visible=chart is not None),
            gr.update(value=overview, visible=overview is not None)]


# ----------------------------------------------------------------------------------------------
# Compare images


def compare_images(images, variant=EXAMPLE_VARIANT or DEFAULT_VARIANT, progress=gr.Progress(track_tqdm=True),
                   request: gr.Request = None):
    """2 to 8 images on one variant: per-block channel-weight profiles and how similar they are.

    Args:
        images: 2 to 8 image files (URLs or base64 data URLs for MCP).
        variant: model variant name with channel attention (see /inspect).
    Returns:
        summary JSON (each image's predictions, the blocks, cosine and Pearson similarity per
        block), the similarity-by-depth chart, every block's profile heat map, and thumbnails of
        the images as the model saw them with their top-1."""
    paths = [str(p) for p in (images or []) if p]
    if not 2 <= len(paths) <= L.MAX_COMPARE_IMAGES:
        raise gr.Error(f"Upload 2 to {L.MAX_COMPARE_IMAGES} images ({L.ACCEPTED_TEXT}) to compare "
                       f"(got {len(paths)}).")
    loaded = S.load_variant(variant, progress)
    progress(0.6, desc=f"Running {loaded.name} on {len(paths)} images…")
    results = S.inspect_images(paths, loaded)
    if not results[0].channel_blocks:
        raise gr.Error(f"{loaded.name} has no channel attention; choose a variant with SE, ECA, CBAM or BAM blocks.")
    names = unique_stems([Path(p).name for p in paths])
    mats = C.channel_matrix(results)
    sim = C.profile_similarity(results, mats)
    folder = S.scratch_dir()
    profiles = [(L.save_png(CV.profile_view(mats[b.name], names, b.name, b.kind), folder / f"profile{i}.png"),
                 L.block_caption(b)) for i, b in enumerate(results[0].channel_blocks)]
    profiles_kept = CV.keep_profiles(names, {b.name: b.kind for b in results[0].channel_blocks}, mats)
    nbytes = sum(m.nbytes for m in profiles_kept["mats"].values())
    kept = {"key": S.RESULTS.put(profiles_kept, nbytes,  # for the view control
                                 owner=S.result_owner(request, "compare_images"))}
    summary = {
        "variant": loaded.name, "weights": loaded.weights, "device": str(loaded.device),
        "images": [{"name": n, "predictions": [p.__dict__ for p in r.predictions]} for n, r in zip(names, results)],
        "blocks": [b.name for b in results[0].channel_blocks],
        "similarity": sim,
    }
    thumbs = [C.thumbnail(r, n, folder, i) for i, (n, r) in enumerate(zip(names, results))]
    sim_chart = L.save_png(C.similarity_chart(sim, loaded.name), folder / "similarity.png")
    return summary, sim_chart, profiles, thumbs, kept


def after_compare_images(summary, profiles, current, view, kept):
    if not summary:
        return gr.skip(), gr.skip()
    names = summary["blocks"]
    block = current if current in names else (names[-1] if names else None)
    return gr.update(choices=names, value=block), select_profile(block, view, kept, summary, profiles)


def _pick_from_gallery(gallery: Any, names: list[str], name: str | None) -> Any:
    """The gallery image (path) belonging to block ``name``; galleries list blocks in ``names`` order."""
    if not gallery or not name or name not in names:
        return None
    i = names.index(name)
    if i >= len(gallery):
        return None
    item = gallery[i]
    return item[0] if isinstance(item, (list, tuple)) else item


def select_profile(block, view, state, summary=None, profiles=None):
    """UI-only: the selected block's profiles in the chosen view, drawn from the kept matrices."""
    kept = S.kept_result(state, "Compare images", expected=summary is None)
    if not kept or block not in kept["mats"]:
        return _pick_from_gallery(profiles, summary["blocks"], block) if summary and profiles else None
    image = CV.profile_view(kept["mats"][block], kept["names"], block, kept["kinds"][block],
                            view or CV.DEFAULT_PROFILE_VIEW)
    return L.save_png(image, S.scratch_dir() / "profile.png")
