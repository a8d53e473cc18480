"""Local views for SILC self-distillation, made inside `tf.data`."""

import keras


@keras.saving.register_keras_serializable(package="keras_siglip2")
class LocalViews(keras.layers.Layer):
    """`num_views` random crops of an image, each run through `image_converter`.

    Crops cover `scale` of the image area (SILC's local views: 0.05–0.4) with
    aspect ratios in `ratio`. They are drawn with stateless random ops from a
    per-example `seed` (2 ints), so a pipeline is reproducible and resumable.
    Returns the converter's output stacked on a leading (num_views) axis: an
    array for `SigLIP2ImageConverter`, a dict for `NaFlexImageConverter`.

    Example:
    >>> import tensorflow as tf
    >>> from keras_siglip2.preprocessing import SigLIP2ImageConverter
    >>> views = LocalViews(SigLIP2ImageConverter(16), num_views=3)
    >>> image = tf.zeros((40, 60, 3), tf.uint8)
    >>> tuple(views(image, seed=tf.constant([0, 7])).shape)
    (3, 16, 16, 3)
    """

    def __init__(self, image_converter, num_views, scale=(0.05, 0.4), ratio=(3 / 4, 4 / 3),
                 **kwargs):
        super().__init__(**kwargs)
        self.image_converter = image_converter
        self.num_views = num_views
        self.scale = tuple(scale)
        self.ratio = tuple(ratio)
        self._convert_input_args = False
        self._allow_non_tensor_positional_args = True
        self.built = True

    def crops(self, image, seed):
        """The `num_views` random crops of `image` (H, W, C), before conversion."""
        import tensorflow as tf

        image = tf.convert_to_tensor(image)
        crops = []
        for i in range(self.num_views):
            begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
                tf.shape(image), tf.zeros((1, 0, 4)), seed=tf.stack([seed[0], seed[1] + i]),
                min_object_covered=0.0, aspect_ratio_range=self.ratio,
                area_range=self.scale, use_image_if_no_bounding_boxes=True,
            )
            crops.append(tf.slice(image, begin, size))
        return crops

    def call(self, image, seed):
        import tensorflow as tf

        views = [self.image_converter(crop) for crop in self.crops(image, seed)]
        return tf.nest.map_structure(lambda *v: tf.stack(v), *views)

    def get_config(self):
        return {
            **super().get_config(),
            "image_converter": keras.layers.serialize(self.image_converter),
            "num_views": self.num_views,
            "scale": self.scale,
            "ratio": self.ratio,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["image_converter"] = keras.layers.deserialize(config["image_converter"])
        return cls(**config)
