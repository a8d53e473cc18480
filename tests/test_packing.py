"""NaFlex sequence packing: valid packing, outputs equal to the unpacked tower, clear errors."""

import numpy as np
import pytest

import keras

from conftest import TINY_NAFLEX, naflex_batch
from keras_siglip2 import SigLIP2NaFlexVisionEncoder
from keras_siglip2.models import PackedNaFlexVisionEncoder, pack_naflex_batch

# Mixed aspect ratios and sizes, at most 16 patches each (grid shapes rows x cols).
SHAPES = [(4, 4), (1, 3), (2, 5), (3, 1), (2, 2), (1, 1), (3, 5), (4, 2), (1, 7)]
MAX_PATCHES = 16


def test_packing_is_valid():
    batch = naflex_batch(SHAPES, MAX_PATCHES)
    packed = pack_naflex_batch(batch, MAX_PATCHES)
    segments, index = packed["segment_ids"], packed["image_index"]
    per_row = len(packed["slot_ids"])
    lengths = np.prod(SHAPES, axis=1)
    # Fewer rows than images, and every image's patches, in order, in exactly one segment.
    assert segments.shape[0] < len(SHAPES)
    assert sorted(index.tolist()) == sorted(set(index.tolist()))
    for i, n in enumerate(lengths):
        row, slot = divmod(int(index[i]), per_row)
        where = segments[row] == slot + 1
        assert where.sum() == n
        np.testing.assert_array_equal(packed["patches"][row, where], batch["patches"][i, :n])
        np.testing.assert_array_equal(packed["patch_coords"][row, where],
                                      batch["patch_coords"][i, :n])
        assert (packed["spatial_shapes"][row, where] == SHAPES[i]).all()
    assert (segments > 0).sum() == lengths.sum()


def test_fixed_rows_and_slots_pad_the_rest():
    packed = pack_naflex_batch(
        naflex_batch(SHAPES[:3], MAX_PATCHES), MAX_PATCHES, num_rows=4, max_images_per_row=3
    )
    assert packed["segment_ids"].shape == (4, MAX_PATCHES)
    assert packed["slot_ids"].tolist() == [1, 2, 3]
    assert (packed["segment_ids"][2:] == 0).all()


def test_packed_equals_unpacked():
    keras.utils.set_random_seed(0)
    encoder = SigLIP2NaFlexVisionEncoder(**TINY_NAFLEX)
    batch = naflex_batch(SHAPES, MAX_PATCHES)
    expected = keras.ops.convert_to_numpy(encoder(batch)["pooled_output"])
    packed = pack_naflex_batch(batch, MAX_PATCHES, num_rows=6, max_images_per_row=4)
    got = keras.ops.convert_to_numpy(PackedNaFlexVisionEncoder(encoder)(packed))
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    "change, kwargs, message",
    [
        (lambda b: b["spatial_shapes"].__setitem__(0, [2, 3]), {}, "spatial_shapes"),
        (lambda b: b["patch_mask"][1].__setitem__(slice(None), b["patch_mask"][1][::-1]), {},
         "real patches first"),
        (lambda b: None, {"max_num_patches": 8}, "more than max_num_patches"),
        (lambda b: None, {"num_rows": 1}, "more than num_rows"),
    ],
)
def test_bad_inputs_raise(change, kwargs, message):
    batch = naflex_batch(SHAPES[:3], MAX_PATCHES)
    change(batch)
    with pytest.raises(ValueError, match=message):
        pack_naflex_batch(batch, **{"max_num_patches": MAX_PATCHES, **kwargs})
