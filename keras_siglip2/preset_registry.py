"""The loader layer's entry points, for the modules below it: models, tokenizer, converters.

`keras_siglip2.preset_loader` reads any handle (preset name, `hf://`, `kaggle://`, a
directory, a big_vision `.npz`); it imports the converters, which import the models. So the
models, the tokenizer and the image converters do not import it: their `from_preset`s call
the functions here, which `preset_loader` registers when it is imported. The package's
`__init__` imports it, so it has run before any `keras_siglip2` module can be used.
"""


class PresetError(ValueError):
    """A handle that names no usable SigLIP 2 checkpoint."""


_LOADERS = {}


def register(**functions):
    """Registers the loader layer's functions by name (`preset_loader` does, on import)."""
    _LOADERS.update(functions)


def _loader(name):
    if name not in _LOADERS:
        raise RuntimeError(
            f"No preset loader is registered for `{name}`: import keras_siglip2 (its "
            "__init__ imports keras_siglip2.preset_loader, which registers it)."
        )
    return _LOADERS[name]


def load_backbone(handle, source=None, load_weights=True, dtype=None, remat=None):
    """`preset_loader.load_backbone`: a `SigLIP2Backbone` from any handle."""
    return _loader("load_backbone")(
        handle, source=source, load_weights=load_weights, dtype=dtype, remat=remat
    )


def load_tower(tower_cls, handle, source=None, dtype=None, remat=None):
    """`preset_loader.load_tower`: the `tower_cls` tower of any handle."""
    return _loader("load_tower")(tower_cls, handle, source=source, dtype=dtype, remat=remat)


def tokenizer_proto(handle, source=None):
    """`preset_loader.tokenizer_proto`: the SentencePiece model of `handle`, or None."""
    return _loader("tokenizer_proto")(handle, source=source)


def image_config(handle, source=None):
    """`preset_loader.image_config`: the image pipeline settings of `handle`."""
    return _loader("image_config")(handle, source=source)
