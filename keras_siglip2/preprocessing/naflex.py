"""NaFlex image pipeline, as big_vision's `pp/proj/image_text/ops_naflex.py` and SigLIP 2 demo.

value_range(-1, 1) → resize_to_sequence (aspect-preserving bilinear antialiased resize to whole
patches, at most `max_num_patches`) → patchify (row-major, each patch flattened (P, P, 3)) →
pad to `max_num_patches` with zeros (mask 0, coords (0, 0)). The first two run in the other
order here, which gives the same values (the resize is linear, its weights sum to one).
"""

import keras
import keras_hub
import numpy as np

from keras_siglip2.preprocessing.image_converter import _call_pipeline, _preset_image_config
from keras_siglip2.preprocessing.image_io import tf_to_rgb


def naflex_target_size(height, width, patch_size, max_num_patches, eps=1e-5):
    """The (height, width) in pixels big_vision's `resize_to_sequence` resizes an image to.

    Binary search, in float32 as big_vision's (eager) TF ops do it, for the largest scale s in
    (eps / 10, 100) with ceil(height·s / P) · ceil(width·s / P) ≤ max_num_patches, each side at
    least one patch; returns both sides rounded up to whole patches (so the aspect ratio is kept
    up to that rounding). Images so small that s reaches 100 get fewer than max_num_patches.

    >>> naflex_target_size(480, 640, patch_size=16, max_num_patches=256)
    (224, 288)
    """
    if min(height, width) < 1 or patch_size < 1 or max_num_patches < 1:
        raise ValueError(
            f"Need height, width, patch_size and max_num_patches >= 1, got {height}, {width}, "
            f"{patch_size}, {max_num_patches}."
        )
    hw, p = np.array([height, width], np.float32), np.float32(patch_size)
    lb, rb, eps = np.float32(eps / 10), np.float32(100), np.float32(eps)

    def target(ratio):
        return np.maximum(p * np.ceil(hw * ratio / p), p).astype(np.int64)

    while rb - lb >= eps:
        mid = (lb + rb) / np.float32(2)
        rows, cols = target(mid) // patch_size
        lb, rb = (mid, rb) if rows * cols <= max_num_patches else (lb, mid)
    if lb <= eps:
        raise ValueError(
            f"No scale above {eps} fits a {height}x{width} image in {max_num_patches} patches "
            f"of {patch_size} pixels: crop or pre-shrink the image."
        )
    h, w = target(lb)
    return int(h), int(w)


def _tf_target_size(image_hw, patch_size, max_num_patches):
    """`naflex_target_size` for images of unknown size inside tf.data.

    Runs the numpy search rather than TF ops: in graphs grappler rewrites x / P into
    x * (1 / P), which moves float32 rounding and, for rare sizes (e.g. 3x15 with P=14,
    1024 patches), the result away from big_vision's as its eager demo computes it.
    """
    import tensorflow as tf

    def search(hw):
        return np.array(naflex_target_size(*hw.tolist(), patch_size, max_num_patches), np.int32)

    size = tf.numpy_function(search, [image_hw], tf.int32, stateful=False)
    return tf.ensure_shape(size, [2])


def _tf_naflex(image, target_hw, patch_size, max_num_patches):
    """One (H, W, 3) image, [0, 255] → padded patch dict with static shapes."""
    import tensorflow as tf

    p, n_max = patch_size, max_num_patches
    # big_vision scales to [-1, 1] before resizing; the resize is linear with weights summing
    # to one, so scaling after it gives the same values (to float32 rounding) at half the cost.
    x = tf.image.resize(image, target_hw, method="bilinear", antialias=True) / 255.0 * 2.0 - 1.0
    rows, cols = target_hw[0] // p, target_hw[1] // p
    patches = tf.reshape(x, (rows, p, cols, p, 3))
    patches = tf.reshape(tf.transpose(patches, (0, 2, 1, 3, 4)), (rows * cols, p * p * 3))
    n = rows * cols
    index = tf.range(n, dtype=tf.int32)
    coords = tf.stack([index // cols, index % cols], axis=-1)
    pad = [[0, n_max - n], [0, 0]]
    return {
        "patches": tf.ensure_shape(tf.pad(patches, pad), (n_max, p * p * 3)),
        "patch_coords": tf.ensure_shape(tf.pad(coords, pad), (n_max, 2)),
        "patch_mask": tf.cast(tf.range(n_max) < n, tf.int32),
        "spatial_shapes": tf.ensure_shape(tf.cast(tf.stack([rows, cols]), tf.int32), (2,)),
    }


# `keras_hub.layers.ImageConverter` arguments that have no meaning here.
_IMAGE_CONVERTER_OPTIONS = {
    "image_size", "scale", "offset", "crop_to_aspect_ratio", "pad_to_aspect_ratio",
    "interpolation", "antialias", "bounding_box_format", "data_format",
}


@keras.saving.register_keras_serializable(package="keras_siglip2")
class NaFlexImageConverter(keras_hub.layers.ImageConverter):
    """Images → padded NaFlex patch sequences, exactly as big_vision's SigLIP 2 demo.

    The image is scaled to [-1, 1], resized with `tf.image.resize` (bilinear, antialiased) to
    `naflex_target_size(...)` (aspect ratio kept up to whole patches, at most `max_num_patches`
    patches), split row-major into patches flattened as (P, P, 3), and padded to
    `max_num_patches`. The output is the dict `SigLIP2NaFlexVisionEncoder` takes:

    - `patches` (N, P·P·3) float32, `patch_coords` (N, 2) int32 (row, col),
      `patch_mask` (N,) int32 (1 real, 0 padding), `spatial_shapes` (2,) int32 (rows, cols),
      with N = `max_num_patches`; a batch gets a leading B axis.

    Input: one image (numpy/tensor (H, W[, C]), PIL image, file path; see `load_image`) or a
    batch (a list of such images of any sizes, or a (B, H, W, C) array). Called eagerly it
    returns numpy arrays, on every Keras backend. Inside `tf.data` (`dataset.map(converter)`)
    it takes a (H, W, C) or (B, H, W, C) tf tensor of any size and returns tf tensors with
    static shapes.

    Input values follow the same rules as `SigLIP2ImageConverter`, eagerly and inside
    `tf.data` (details in `keras_siglip2.preprocessing.image_io`): uint8 as it is; uint16 and
    16-bit PIL images rescaled from [0, 65535]; other integers and floats must lie in
    [0, 255] (floats finite), else a ValueError (inside `tf.data`, an InvalidArgumentError);
    alpha composited onto white; PIL modes I and F rejected; files decoded in full (truncated
    or corrupt: a ValueError naming the file) under a pixel limit checked from the header
    (`image_io.MAX_IMAGE_PIXELS`).

    A keras-hub `ImageConverter`, so it saves with a preset (`save_to_preset(dir)` writes
    `image_converter.json`) and `SigLIP2Preprocessor` holds it. It has no fixed output size:
    `image_size` is None and setting it is an error (set `max_num_patches`); keras-hub's
    resize / scale / offset options do not apply (the pipeline is big_vision's, above).

    Example:
    >>> converter = NaFlexImageConverter(patch_size=16, max_num_patches=256)
    >>> out = converter(np.zeros((480, 640, 3), "uint8"))
    >>> out["patches"].shape, out["spatial_shapes"], int(out["patch_mask"].sum())
    ((256, 768), array([14, 18], dtype=int32), 252)
    """

    _graph_takes_batches = False

    def __init__(self, patch_size, max_num_patches, **kwargs):
        if patch_size < 1 or max_num_patches < 1:
            raise ValueError(
                f"patch_size and max_num_patches must be >= 1, got {patch_size}, "
                f"{max_num_patches}."
            )
        unused = sorted(set(kwargs) & _IMAGE_CONVERTER_OPTIONS)
        if unused:  # keras-hub's resize/rescale options: `call` is the pipeline above
            raise TypeError(
                f"NaFlexImageConverter does not take {unused}: it resizes each image to keep "
                "its aspect ratio within `max_num_patches` patches and scales to [-1, 1], as "
                "big_vision's NaFlex pipeline."
            )
        super().__init__(image_size=None, crop_to_aspect_ratio=False, **kwargs)
        self.patch_size = int(patch_size)
        self.max_num_patches = int(max_num_patches)

    @property
    def image_size(self):
        """None: NaFlex keeps each image's aspect ratio (see `max_num_patches`)."""
        return None

    @image_size.setter
    def image_size(self, value):
        if value is not None:
            raise ValueError(
                f"NaFlexImageConverter has no fixed image size (got image_size={value}): "
                "each image keeps its aspect ratio within `max_num_patches` patches; set "
                "`max_num_patches` instead."
            )

    def _one_eager(self, image):
        size = naflex_target_size(*image.shape[:2], self.patch_size, self.max_num_patches)
        return _tf_naflex(image, size, self.patch_size, self.max_num_patches)

    def _one_graph(self, image):
        import tensorflow as tf

        image = tf_to_rgb(image.to_tensor() if isinstance(image, tf.RaggedTensor) else image)
        size = _tf_target_size(tf.shape(image)[:2], self.patch_size, self.max_num_patches)
        return _tf_naflex(image, size, self.patch_size, self.max_num_patches)

    def _output_signature(self):
        import tensorflow as tf

        n, d = self.max_num_patches, self.patch_size**2 * 3
        return {
            "patches": tf.TensorSpec((n, d), tf.float32),
            "patch_coords": tf.TensorSpec((n, 2), tf.int32),
            "patch_mask": tf.TensorSpec((n,), tf.int32),
            "spatial_shapes": tf.TensorSpec((2,), tf.int32),
        }

    def call(self, inputs):
        return _call_pipeline(self, inputs)

    def get_config(self):
        return {  # the base layer's config: keras-hub's resize options do not apply
            **keras.layers.Layer.get_config(self),
            "patch_size": self.patch_size,
            "max_num_patches": self.max_num_patches,
        }

    @classmethod
    def from_preset(cls, preset, **kwargs):
        """The converter for a checkpoint: a preset name (e.g. `"siglip2_base_patch16_naflex"`),
        or any handle `SigLIP2Backbone.from_preset` takes (read without loading weights).

        `kwargs` override the preset's settings (e.g. `max_num_patches=1024`).
        """
        config = _preset_image_config(cls, preset, "max_num_patches")
        return cls(**{**config, **kwargs})
