"""Stand-ins for tests, docstring examples, guides and benchmarks: tiny random models and data.

Nothing here is part of the model: the models are random, their outputs meaningless. Not
imported by `keras_siglip2` itself; import `keras_siglip2.testing` where you need it.
"""

import keras
import numpy as np

from keras_siglip2.checkpoint import save_checkpoint
from keras_siglip2.datasets import scenes
from keras_siglip2.models.backbone import SigLIP2Backbone
from keras_siglip2.models.naflex_vision_encoder import SigLIP2NaFlexVisionEncoder
from keras_siglip2.models.text_encoder import SigLIP2TextEncoder
from keras_siglip2.models.vision_encoder import SigLIP2VisionEncoder
from keras_siglip2.preprocessing import NaFlexImageConverter, SigLIP2ImageConverter


def toy_backbone(image_size=16, patch_size=8, vocabulary_size=32, sequence_length=4):
    """A randomly initialised fixed-resolution `SigLIP2Backbone` of width 8, for examples.

    One block per tower with 2 heads and an MLP of 16, embeddings of 8; seconds to build on
    any backend. Seed it with `keras.utils.set_random_seed` for reproducible weights.

    Example:
    >>> backbone = toy_backbone()
    >>> backbone.encode_text(np.ones((3, 4), "int32")).shape
    (3, 8)
    >>> backbone.encode_images(np.zeros((2, 16, 16, 3), "float32")).shape
    (2, 8)
    """
    width = dict(hidden_dim=8, num_layers=1, num_heads=2, intermediate_dim=16)
    return SigLIP2Backbone(
        SigLIP2VisionEncoder(image_size=image_size, patch_size=patch_size, **width),
        SigLIP2TextEncoder(vocabulary_size=vocabulary_size, sequence_length=sequence_length,
                           embedding_dim=8, **width),
    )


def save_tiny_random_checkpoint(directory, naflex=False, seed=0):
    """Writes a tiny, randomly initialised model as a checkpoint; returns its path as a str.

    An offline stand-in for a released preset (every `from_preset` of the package reads it,
    as `keras_siglip2.checkpoint.load_checkpoint` does): a two-block tower of width 32 per
    side, patches of 16 px (fixed resolution: 64 px images; NaFlex: 64 patches by default),
    and the `scenes` dataset's tokenizer (32 tokens). Its scores are meaningless; the guides
    run on it when `GUIDE_STEPS` is set.

    Example:
    >>> import tempfile
    >>> path = save_tiny_random_checkpoint(tempfile.mkdtemp(), naflex=True)
    >>> NaFlexImageConverter.from_preset(path).max_num_patches
    64
    >>> SigLIP2Backbone.from_preset(path).is_naflex
    True
    """
    keras.utils.set_random_seed(seed)
    tokenizer = scenes.tokenizer(sequence_length=32)
    width = dict(hidden_dim=32, num_layers=2, num_heads=2, intermediate_dim=64)
    if naflex:
        vision = SigLIP2NaFlexVisionEncoder(patch_size=16, position_grid_size=8, **width)
        converter = NaFlexImageConverter(patch_size=16, max_num_patches=64)
    else:
        vision = SigLIP2VisionEncoder(image_size=64, patch_size=16, **width)
        converter = SigLIP2ImageConverter(image_size=64)
    text = SigLIP2TextEncoder(vocabulary_size=tokenizer.vocabulary_size(), sequence_length=32,
                              embedding_dim=32, **width)
    save_checkpoint(directory, SigLIP2Backbone(vision, text), tokenizer, converter)
    return str(directory)


def random_naflex_batch(grids, max_num_patches, patch_size, seed=0):
    """A padded NaFlex batch of uniform [-1, 1) patches for images of the given patch grids.

    What `NaFlexImageConverter` returns for a batch, with random pixels: for smoke runs, tests
    and benchmarks that need a batch of chosen grids (rows, cols) without images.

    Example:
    >>> batch = random_naflex_batch([(2, 3), (4, 4)], max_num_patches=16, patch_size=8)
    >>> batch["patches"].shape, batch["patch_mask"].sum(1).tolist(), batch["patch_coords"][0, 3]
    ((2, 16, 192), [6, 16], array([1, 0], dtype=int32))
    """
    rng = np.random.default_rng(seed)
    dim = patch_size * patch_size * 3
    batch = {
        "patches": np.zeros((len(grids), max_num_patches, dim), "float32"),
        "patch_coords": np.zeros((len(grids), max_num_patches, 2), "int32"),
        "patch_mask": np.zeros((len(grids), max_num_patches), "int32"),
        "spatial_shapes": np.array(grids, "int32").reshape(len(grids), 2),
    }
    for i, (rows, cols) in enumerate(grids):
        n = rows * cols
        if n > max_num_patches:
            raise ValueError(f"Grid {rows}x{cols} has more than {max_num_patches} patches.")
        batch["patches"][i, :n] = rng.uniform(-1, 1, (n, dim))
        batch["patch_coords"][i, :n] = np.stack(np.divmod(np.arange(n), cols), -1)
        batch["patch_mask"][i, :n] = 1
    return batch
