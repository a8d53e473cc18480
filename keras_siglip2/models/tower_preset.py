"""`from_preset` for a single tower: the tower of any two-tower SigLIP 2 checkpoint."""

from keras_siglip2 import preset_registry


class TowerFromPreset:
    """Mixin for the image and text towers (before `keras_hub.models.Backbone`)."""

    @classmethod
    def from_preset(cls, preset, source=None, dtype=None, remat=None):
        """This tower of any checkpoint `SigLIP2Backbone.from_preset` loads.

        `source`, `dtype` and `remat` are as there; a tower saved on its own
        (`save_to_preset`) loads too. An image tower of the other kind (fixed-resolution
        or NaFlex) than the checkpoint's is an error naming the class to use.

        Example:
        >>> import tempfile
        >>> from keras_siglip2 import SigLIP2NaFlexVisionEncoder, SigLIP2TextEncoder
        >>> from keras_siglip2.testing import save_tiny_random_checkpoint
        >>> path = save_tiny_random_checkpoint(tempfile.mkdtemp(), naflex=True)
        >>> text = SigLIP2TextEncoder.from_preset(path, dtype="bfloat16", remat=True)
        >>> text.dtype_policy.name, text.remat
        ('bfloat16', True)
        >>> type(SigLIP2NaFlexVisionEncoder.from_preset(path)).__name__
        'SigLIP2NaFlexVisionEncoder'
        """
        return preset_registry.load_tower(cls, preset, source=source, dtype=dtype, remat=remat)
