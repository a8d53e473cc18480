"""Preset definitions of every released SigLIP 2 checkpoint, one JSON file each.

Each file gives the backbone's architecture (`backbone`), the image pipeline
the checkpoint was released with (`image`) and where its weights are
published (`sources`).
"""

import json
import pathlib

PRESETS = {
    path.stem: json.loads(path.read_text())
    for path in sorted(pathlib.Path(__file__).parent.glob("*.json"))
}
