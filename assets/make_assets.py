"""Regenerate the example images in assets/: ``python assets/make_assets.py``.

Synthetic examples come from :mod:`attnviz.synthetic` (seed 2024, neither the training stream
nor the validation set of the built-in models); the photos are scikit-image's bundled sample
data (see LICENSES.md).
"""
from __future__ import annotations

import sys
from pathlib import Path

from PIL import Image

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from attnviz import synthetic  # noqa: E402

SEED = 2024
CLASSES = ("red circle", "green square", "blue triangle", "yellow cross", "green circle", "yellow triangle")
PHOTOS = ("chelsea", "astronaut", "coffee", "rocket")


def main() -> None:
    wanted = {synthetic.CLASSES.index(c): c for c in CLASSES}
    i = 0
    while wanted:
        s = synthetic.generate(i, seed=SEED)
        if s.label in wanted and len(s.distractors) >= 3:
            name = wanted.pop(s.label).replace(" ", "_")
            Image.fromarray(s.image).save(HERE / f"synthetic_{name}.png", optimize=True)
            print(f"synthetic_{name}.png: sample {i} of seed {SEED}")
        i += 1

    import skimage.data

    for name in PHOTOS:
        img = Image.fromarray(getattr(skimage.data, name)())
        path = HERE / f"{name}.jpg"
        img.save(path, quality=90, optimize=True)
        print(f"{path.name}: {img.size[0]}x{img.size[1]}, {path.stat().st_size // 1024} KB")


if __name__ == "__main__":
    main()
