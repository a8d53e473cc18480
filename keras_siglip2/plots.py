"""Line plots as PNG with PIL alone (no plotting library), for the CLI and the guides."""

import numpy as np
from PIL import Image, ImageDraw


def plot_curves(curves, path, width=640, height=160):
    """Saves one panel per named curve (a dict name → sequence of numbers) to `path`.

    Each panel is scaled to its own min..max, written in its title.

    Example:
    >>> import tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "curves.png")
    >>> plot_curves({"loss": [3.0, 2.0, 1.5], "accuracy": [0.1, 0.5, 0.9]}, path)
    >>> Image.open(path).size
    (640, 320)
    """
    canvas = Image.new("RGB", (width, height * len(curves)), "white")
    draw = ImageDraw.Draw(canvas)
    for row, (name, values) in enumerate(curves.items()):
        top, values = row * height, np.asarray(values, "float64")
        lo, hi = float(values.min()), float(values.max())
        span = (hi - lo) or 1.0
        points = [
            (40 + (width - 60) * i / max(1, len(values) - 1),
             top + 20 + (height - 40) * (1 - (v - lo) / span))
            for i, v in enumerate(values)
        ]
        draw.text((40, top + 4), f"{name}: {lo:.3f} .. {hi:.3f}", fill="black")
        draw.line(points, fill=(30, 90, 200), width=2)
    canvas.save(path)
