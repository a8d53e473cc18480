"""Loading the authors' big_vision `.npz` SigLIP 2 checkpoints into Keras.

The architecture is read off the tensor shapes, so any released size (B, L,
So400m, g-opt; fixed resolution or NaFlex) loads without a config. Every
tensor must be used and every Keras weight set, or `WeightLoadingError` says
which ones did not match.
"""

import math
import os
import re
import zipfile
from collections.abc import Mapping

import numpy as np

from keras_siglip2.converters.download import download, is_url
from keras_siglip2.converters.file_errors import reading
from keras_siglip2.converters.tower_walker import (
    heads_layout,
    load_tensors,
    scalar,
    tower_tensors,
)
from keras_siglip2.converters.weight_loader import WeightLoader, WeightLoadingError
from keras_siglip2.models.backbone import SigLIP2Backbone
from keras_siglip2.models.naflex_vision_encoder import SigLIP2NaFlexVisionEncoder
from keras_siglip2.models.text_encoder import SigLIP2TextEncoder
from keras_siglip2.models.vision_encoder import SigLIP2VisionEncoder

_PREFIX = "params/"


class NpzCheckpoint(Mapping):
    """Read-only view of an `.npz`: names without the `params/` prefix → arrays.

    Shapes come from the `.npy` headers, so inferring the architecture reads no
    data; an array is read from the file each time it is indexed. Object
    (pickled) arrays are refused before anything is loaded; a file that is not a
    readable zip, or a member that fails its CRC check, is a `CorruptFileError`.
    """

    def __init__(self, source, name):
        self.name = name
        # np.load reads a file that is neither .npy nor zip (an empty or cut-short
        # download) as a pickle, and refuses: `reading` says the file is corrupt instead.
        with reading(name, "npz"):
            self._npz = np.load(source, allow_pickle=False)
        if not isinstance(self._npz, np.lib.npyio.NpzFile):
            raise WeightLoadingError(f"{name} holds a single array, not a checkpoint.")
        self.shapes = {}
        for member in self._npz.zip.namelist():
            if not member.endswith(".npy"):
                continue
            with reading(name, "npz"):
                shape, dtype = self._header(member)
            if dtype.hasobject:
                raise WeightLoadingError(
                    f"{name}: '{member[:-4]}' is an object array, which only pickle "
                    "can read; refusing to unpickle (it can run arbitrary code). A "
                    "big_vision checkpoint holds numeric arrays only."
                )
            self.shapes[member[:-4]] = shape
        if self.shapes and all(k.startswith(_PREFIX) for k in self.shapes):
            self._prefix = _PREFIX
            self.shapes = {k[len(_PREFIX):]: s for k, s in self.shapes.items()}
        else:
            self._prefix = ""

    def _header(self, member):
        with self._npz.zip.open(member) as f:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(f)
            elif version == (2, 0):
                shape, _, dtype = np.lib.format.read_array_header_2_0(f)
            else:
                raise WeightLoadingError(
                    f"{self.name}: '{member}' uses .npy format {version}, not 1.0/2.0."
                )
        return tuple(shape), dtype

    def __getitem__(self, key):
        if key not in self.shapes:
            raise KeyError(key)
        with reading(self.name, "npz"):  # a damaged member fails its CRC check here
            array = self._npz[self._prefix + key]
        if array.dtype.type is np.void and array.dtype.itemsize == 2:
            # np.save writes bfloat16 as raw 2-byte voids (as big_vision's
            # recover_dtype notes); reinterpret the bits.
            import ml_dtypes

            array = array.view(ml_dtypes.bfloat16)
        return array

    def __contains__(self, key):  # Mapping's default would read the array.
        return key in self.shapes

    def __iter__(self):
        return iter(self.shapes)

    def __len__(self):
        return len(self.shapes)

    def close(self):
        self._npz.close()


def is_big_vision_checkpoint(path):
    """Whether `path` is a big_vision SigLIP `.npz` (a local file or a URL).

    A local file is recognised by its tensor names (`img/embedding/kernel` or
    `txt/Embed_0/embedding`, with or without the `params/` prefix), read from
    the zip directory only. A URL is taken on its `.npz` suffix.

    Example:
    >>> is_big_vision_checkpoint("gs://big_vision/siglip2/siglip2_b16_224.npz")
    True
    >>> is_big_vision_checkpoint("/nonexistent.npz")
    False
    """
    if not isinstance(path, (str, os.PathLike)):
        return False
    path = os.fspath(path)
    if is_url(path):
        return path.lower().endswith(".npz")
    if not (path.lower().endswith(".npz") and os.path.isfile(path)):
        return False
    try:
        with zipfile.ZipFile(path) as z:
            names = {n[:-4] for n in z.namelist() if n.endswith(".npy")}
    except (OSError, zipfile.BadZipFile):
        return False
    names |= {n[len(_PREFIX):] for n in names if n.startswith(_PREFIX)}
    return bool(names & {"img/embedding/kernel", "txt/Embed_0/embedding"})


# ---------------------------------------------------------------------------
# Architecture inference.


def _need(shapes, key, ndim, source):
    if key not in shapes:
        raise WeightLoadingError(
            f"{source}: tensor '{key}' is missing, so this is not a complete "
            "big_vision SigLIP two-tower checkpoint."
        )
    shape = shapes[key]
    if len(shape) not in ndim:
        raise WeightLoadingError(
            f"{source}: '{key}' has shape {shape}, expected {'/'.join(map(str, ndim))} axes."
        )
    return shape


def _encoder_layout(shapes, root, source):
    """(depth, scanned, heads, mlp_dim) of the transformer under `root`."""
    scan_key = f"{root}/encoderblock/LayerNorm_0/scale"
    pattern = re.compile(rf"{re.escape(root)}/encoderblock_(\d+)/")
    indices = {int(m.group(1)) for k in shapes if (m := pattern.match(k))}
    scanned = scan_key in shapes
    if scanned and indices:
        raise WeightLoadingError(
            f"{source}: '{root}' holds both a scan-stacked 'encoderblock' and "
            f"numbered 'encoderblock_i' blocks."
        )
    if scanned:
        depth = shapes[scan_key][0]
        block = f"{root}/encoderblock"
    elif indices:
        depth = max(indices) + 1
        if indices != set(range(depth)):
            missing = sorted(set(range(depth)) - indices)
            raise WeightLoadingError(
                f"{source}: '{root}' lacks blocks {missing} of encoderblock_0..{depth - 1}."
            )
        block = f"{root}/encoderblock_0"
    else:
        raise WeightLoadingError(f"{source}: no transformer blocks found under '{root}'.")
    lead = 1 if scanned else 0
    query = _need(
        shapes, f"{block}/MultiHeadDotProductAttention_0/query/kernel", (3 + lead,), source
    )
    mlp = _need(shapes, f"{block}/MlpBlock_0/Dense_0/kernel", (2 + lead,), source)
    return depth, scanned, query[lead + 1], mlp[-1]


def _image_size_from_name(name, grid, patch_size):
    # A So400m/14 checkpoint for 384 px has a 27×27 grid (378 px): the VALID
    # conv drops the remaining pixels, so 384 px images must go in. The grid
    # cannot tell 378 from 384; the released file name (…_384.npz) can.
    stem = os.path.splitext(os.path.basename(name or ""))[0]
    for size in map(int, re.findall(r"[_-](\d+)(?![^_-])", stem)):
        if size // patch_size == grid:
            return size
    return grid * patch_size


def infer_config(shapes, source="checkpoint", image_size=None):
    """Model sizes of a big_vision two-tower checkpoint, from its tensor shapes.

    Args:
        shapes: mapping of tensor name (without the `params/` prefix) → shape.
        source: name used in error messages (and, for the fixed-resolution
            image size, searched for a resolution such as `_384`).
        image_size: overrides the inferred image size (fixed resolution only).

    Returns:
        A dict with `naflex`, `vision` (kwargs for the image tower), `text`
        (kwargs for `SigLIP2TextEncoder`) and `scanned` ({"img": bool, "txt": bool}).

    Example:
    >>> cfg = infer_config({
    ...     "img/embedding/kernel": (16, 16, 3, 768), "img/pos_embedding": (1, 256, 768),
    ...     "img/Transformer/encoderblock/LayerNorm_0/scale": (12, 768),
    ...     "img/Transformer/encoderblock/MultiHeadDotProductAttention_0/query/kernel":
    ...         (12, 768, 12, 64),
    ...     "img/Transformer/encoderblock/MlpBlock_0/Dense_0/kernel": (12, 768, 3072),
    ...     "txt/Embed_0/embedding": (256000, 768), "txt/pos_embedding": (1, 64, 768),
    ...     "txt/head/kernel": (768, 768),
    ...     "txt/Encoder_0/encoderblock/LayerNorm_0/scale": (12, 768),
    ...     "txt/Encoder_0/encoderblock/MultiHeadDotProductAttention_0/query/kernel":
    ...         (12, 768, 12, 64),
    ...     "txt/Encoder_0/encoderblock/MlpBlock_0/Dense_0/kernel": (12, 768, 3072)})
    >>> cfg["naflex"], cfg["vision"]["image_size"], cfg["vision"]["num_layers"]
    (False, 256, 12)
    """
    kernel = _need(shapes, "img/embedding/kernel", (2, 4), source)
    pos = _need(shapes, "img/pos_embedding", (3,), source)
    width = kernel[-1]
    depth, img_scanned, heads, mlp = _encoder_layout(shapes, "img/Transformer", source)
    vision = dict(hidden_dim=width, num_layers=depth, num_heads=heads, intermediate_dim=mlp)
    naflex = len(kernel) == 2
    if naflex:
        patch_size = math.isqrt(kernel[0] // 3)
        if patch_size**2 * 3 != kernel[0] or pos[0] != pos[1]:
            raise WeightLoadingError(
                f"{source}: NaFlex embedding kernel {kernel} is not (P·P·3, D) or "
                f"position grid {pos} is not (G, G, D)."
            )
        vision.update(patch_size=patch_size, position_grid_size=pos[0])
    else:
        grid = math.isqrt(pos[1])
        if pos[0] != 1 or grid * grid != pos[1] or kernel[0] != kernel[1] or kernel[2] != 3:
            raise WeightLoadingError(
                f"{source}: expected a (P, P, 3, D) embedding kernel and a (1, G², D) "
                f"position embedding, got {kernel} and {pos}."
            )
        patch_size = kernel[0]
        if image_size is None:
            image_size = _image_size_from_name(source, grid, patch_size)
        elif image_size // patch_size != grid:
            raise ValueError(
                f"image_size={image_size} gives a {image_size // patch_size}² patch grid, "
                f"but the checkpoint's position embedding is {grid}²."
            )
        vision.update(image_size=image_size, patch_size=patch_size)

    vocab, text_width = _need(shapes, "txt/Embed_0/embedding", (2,), source)
    text_pos = _need(shapes, "txt/pos_embedding", (3,), source)
    head = _need(shapes, "txt/head/kernel", (2,), source)
    t_depth, txt_scanned, t_heads, t_mlp = _encoder_layout(shapes, "txt/Encoder_0", source)
    text = dict(
        vocabulary_size=vocab, sequence_length=text_pos[1], hidden_dim=text_width,
        num_layers=t_depth, num_heads=t_heads, intermediate_dim=t_mlp,
        embedding_dim=head[1],
    )
    return dict(
        naflex=naflex, vision=vision, text=text,
        scanned={"img": img_scanned, "txt": txt_scanned},
    )


# ---------------------------------------------------------------------------
# Naming of the towers (walked by `tower_walker`).

# Our layer / variable names → big_vision's (unlisted names are the same).
_NAMES = {
    "norm1": "LayerNorm_0", "attention": "MultiHeadDotProductAttention_0",
    "norm2": "LayerNorm_1", "mlp": "MlpBlock_0", "fc1": "Dense_0", "fc2": "Dense_1",
    "norm": "LayerNorm_0", "gamma": "scale", "beta": "bias",
}


def _block_of_stack(i, depth, then):
    def pick(x):
        if x.shape[0] != depth:
            raise ValueError(f"its leading axis should stack the {depth} blocks")
        return x[i] if then is None else then(x[i])

    return pick


def _naming(root, encoder, scanned, num_heads, depth):
    """Names the tensors of the tower under `root` ("img" / "txt"), encoder at `encoder`."""

    def naming(path):
        where, *rest = path
        if where == "block":
            i, *rest = rest
            prefix = f"{root}/{encoder}/" + ("encoderblock" if scanned else f"encoderblock_{i}")
        elif where == "final_norm":
            prefix = f"{root}/{encoder}/encoder_norm"
        else:
            prefix = f"{root}/MAPHead_0"
        transform = heads_layout(path, num_heads)
        if where == "block" and scanned:
            transform = _block_of_stack(i, depth, transform)
        return "/".join([prefix, *(_NAMES.get(name, name) for name in rest)]), transform

    return naming


def _table(layer):
    # keras_hub's PositionEmbedding, NaFlexPositionEmbedding and Embedding
    # each hold a single table (under different attribute names).
    (variable,) = layer.weights
    return variable


def _first(x):  # (1, N, D) position embedding → (N, D)
    return x[0]


def _backbone_tensors(backbone, naflex, scanned):
    vision, text = backbone.vision_encoder, backbone.text_encoder
    vision_naming = _naming(
        "img", "Transformer", scanned["img"], vision.encoder.num_heads, vision.encoder.num_layers
    )
    text_naming = _naming(
        "txt", "Encoder_0", scanned["txt"], text.encoder.num_heads, text.encoder.num_layers
    )
    return [
        ("img/embedding/kernel", vision.patch_embedding.kernel, None),
        ("img/embedding/bias", vision.patch_embedding.bias, None),
        ("img/pos_embedding", _table(vision.position_embedding), None if naflex else _first),
        *tower_tensors(vision_naming, vision.encoder, vision.head),
        ("txt/Embed_0/embedding", _table(text.token_embedding), None),
        *tower_tensors(text_naming, text.encoder),
        ("txt/head/kernel", text.head.kernel, None),
        ("txt/head/bias", text.head.bias, None),
        # `t` is big_vision's log-temperature.
        ("t", backbone.logits_head.logit_scale, scalar),
        ("b", backbone.logits_head.logit_bias, scalar),
    ]


def _load_text_positions(loader, text):
    pos = loader.take("txt/pos_embedding")[0]
    if "txt/Encoder_0/pos_embedding" in loader.tensors:
        # Some older text towers add a second position embedding inside the
        # encoder; big_vision's text_transformer.load sums the two.
        pos = pos + loader.take("txt/Encoder_0/pos_embedding")[0]
    loader.assign(_table(text.position_embedding), pos)


def load_backbone(path_or_file, dtype=None, image_size=None, remat=False):
    """Builds a `SigLIP2Backbone` from a big_vision two-tower `.npz` checkpoint.

    Sizes are inferred from the tensor shapes; both the numbered
    (`encoderblock_{i}`) and the scan-stacked (`encoderblock`) layouts load,
    with or without the `params/` prefix. `t` (big_vision's log-temperature)
    becomes `logits/logit_scale` and `b` `logits/logit_bias`.

    Args:
        path_or_file: a local `.npz` path, an open binary file, or a URL
            (`https://…` or `gs://big_vision/…`), downloaded once into
            `$KERAS_SIGLIP2_CACHE` (default `~/.cache/keras_siglip2`).
        dtype: dtype policy of the model (e.g. `"bfloat16"`); default Keras's.
        image_size: fixed-resolution image size. By default the grid times the
            patch size, or the resolution in the file name when the patch size
            does not divide it (So400m/14 at 384 px has a 27×27 grid).
        remat: the towers' `remat` option.

    Raises:
        WeightLoadingError: a tensor is missing, unused, misshapen or pickled.
        DownloadError: a URL could not be fetched.

    Example:
    >>> backbone = load_backbone("gs://big_vision/siglip2/siglip2_b16_256.npz")  # doctest: +SKIP
    >>> backbone.vision_encoder.image_size  # doctest: +SKIP
    256
    """
    if isinstance(path_or_file, (str, os.PathLike)):
        path_or_file = os.fspath(path_or_file)
        if is_url(path_or_file):
            path_or_file = str(download(path_or_file))
        name = path_or_file
    else:
        name = getattr(path_or_file, "name", None) or "big_vision checkpoint"
    checkpoint = NpzCheckpoint(path_or_file, name)
    try:
        config = infer_config(checkpoint.shapes, name, image_size)
        vision_cls = SigLIP2NaFlexVisionEncoder if config["naflex"] else SigLIP2VisionEncoder
        backbone = SigLIP2Backbone(
            vision_cls(**config["vision"], dtype=dtype, remat=remat),
            SigLIP2TextEncoder(**config["text"], dtype=dtype, remat=remat),
            dtype=dtype,
        )
        loader = WeightLoader(checkpoint, name)
        load_tensors(loader, _backbone_tensors(backbone, config["naflex"], config["scanned"]))
        _load_text_positions(loader, backbone.text_encoder)
        loader.finish(backbone)
    finally:
        checkpoint.close()
    return backbone
