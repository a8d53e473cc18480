"""big_vision `.npz` loading, checked against a numpy transcription of big_vision's forward pass.

The checkpoints are built here, in big_vision's naming, from random values; the
reference forward pass reads them directly (no Keras), so a mapping error in
the converter (a transposed kernel, a swapped LayerNorm) shows as a mismatch.
"""

import functools
import http.server
import io
import math
import re
import threading
import time

import numpy as np
import pytest

import keras

from conftest import naflex_batch
from keras_siglip2.converters import big_vision
from keras_siglip2.converters.download import DownloadError, cached_path, download
from keras_siglip2.converters.file_errors import CorruptFileError
from keras_siglip2.converters.weight_loader import WeightLoadingError
from keras_siglip2.preset_loader import image_config
from keras_siglip2.preset_loader import load_backbone as load_any_backbone

IMG = dict(width=16, depth=2, heads=4, mlp=24)
TXT = dict(width=12, depth=3, heads=3, mlp=20, vocab=50, length=7)
EMBED = IMG["width"]  # The image tower has no head: its width is the embedding dim.
FIXED_PATCH, FIXED_GRID = 4, 3
NAFLEX_PATCH, NAFLEX_GRID = 4, 4


# ---------------------------------------------------------------------------
# Tiny checkpoints in big_vision naming.


def _normal(rng, *shape, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype("float32")


def _block(rng, d, heads, mlp):
    hd = d // heads
    p = {}
    for ln in ("LayerNorm_0", "LayerNorm_1"):
        p[f"{ln}/scale"] = 1 + _normal(rng, d, scale=0.1)
        p[f"{ln}/bias"] = _normal(rng, d, scale=0.1)
    att = "MultiHeadDotProductAttention_0"
    for name in ("query", "key", "value"):
        p[f"{att}/{name}/kernel"] = _normal(rng, d, heads, hd, scale=d**-0.5)
        p[f"{att}/{name}/bias"] = _normal(rng, heads, hd, scale=0.1)
    p[f"{att}/out/kernel"] = _normal(rng, heads, hd, d, scale=d**-0.5)
    p[f"{att}/out/bias"] = _normal(rng, d, scale=0.1)
    p["MlpBlock_0/Dense_0/kernel"] = _normal(rng, d, mlp, scale=d**-0.5)
    p["MlpBlock_0/Dense_0/bias"] = _normal(rng, mlp, scale=0.1)
    p["MlpBlock_0/Dense_1/kernel"] = _normal(rng, mlp, d, scale=mlp**-0.5)
    p["MlpBlock_0/Dense_1/bias"] = _normal(rng, d, scale=0.1)
    return p


def _encoder(rng, root, d, depth, heads, mlp):
    p = {}
    for i in range(depth):
        for k, v in _block(rng, d, heads, mlp).items():
            p[f"{root}/encoderblock_{i}/{k}"] = v
    p[f"{root}/encoder_norm/scale"] = 1 + _normal(rng, d, scale=0.1)
    p[f"{root}/encoder_norm/bias"] = _normal(rng, d, scale=0.1)
    return p


def make_checkpoint(naflex, seed=0):
    """A two-tower checkpoint (numbered blocks, no prefix) as a flat dict."""
    rng = np.random.default_rng(seed)
    d = IMG["width"]
    p = {}
    if naflex:
        fan_in = NAFLEX_PATCH * NAFLEX_PATCH * 3
        p["img/embedding/kernel"] = _normal(rng, fan_in, d, scale=fan_in**-0.5)
        p["img/pos_embedding"] = _normal(rng, NAFLEX_GRID, NAFLEX_GRID, d, scale=d**-0.5)
    else:
        fan_in = FIXED_PATCH * FIXED_PATCH * 3
        p["img/embedding/kernel"] = _normal(
            rng, FIXED_PATCH, FIXED_PATCH, 3, d, scale=fan_in**-0.5
        )
        p["img/pos_embedding"] = _normal(rng, 1, FIXED_GRID**2, d, scale=d**-0.5)
    p["img/embedding/bias"] = _normal(rng, d, scale=0.1)
    p.update(_encoder(rng, "img/Transformer", d, IMG["depth"], IMG["heads"], IMG["mlp"]))
    p["img/MAPHead_0/probe"] = _normal(rng, 1, 1, d)
    for k, v in _block(rng, d, IMG["heads"], IMG["mlp"]).items():
        if not k.startswith("LayerNorm_1"):  # The MAP head has one LayerNorm.
            p[f"img/MAPHead_0/{k}"] = v

    dt = TXT["width"]
    p["txt/Embed_0/embedding"] = _normal(rng, TXT["vocab"], dt)
    p["txt/pos_embedding"] = _normal(rng, 1, TXT["length"], dt, scale=dt**-0.5)
    p.update(_encoder(rng, "txt/Encoder_0", dt, TXT["depth"], TXT["heads"], TXT["mlp"]))
    p["txt/head/kernel"] = _normal(rng, dt, EMBED, scale=dt**-0.5)
    p["txt/head/bias"] = _normal(rng, EMBED, scale=0.1)
    p["t"] = np.array([math.log(10.0) + 0.3], "float32")
    p["b"] = np.array([-9.5], "float32")
    return p


def to_scan(params):
    """big_vision's pyloop_to_scan: stack encoderblock_{i} under `encoderblock`."""
    out, stacks = {}, {}
    for k, v in params.items():
        parts = k.split("/")
        idx = next((j for j, s in enumerate(parts) if s.startswith("encoderblock_")), None)
        if idx is None:
            out[k] = v
            continue
        key = "/".join(parts[:idx] + ["encoderblock"] + parts[idx + 1:])
        stacks.setdefault(key, {})[int(parts[idx].split("_")[1])] = v
    for key, blocks in stacks.items():
        out[key] = np.stack([blocks[i] for i in range(len(blocks))])
    return out


def save(tmp_path, params, name="ckpt.npz", scan=False, prefix=True):
    if scan:
        params = to_scan(params)
    if prefix:
        params = {f"params/{k}": v for k, v in params.items()}
    path = tmp_path / name
    np.savez(path, **params)
    return path


# ---------------------------------------------------------------------------
# big_vision's forward pass, transcribed in numpy (float64).


def _ln(p, name, x):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + 1e-6) * p[f"{name}/scale"] + p[f"{name}/bias"]


def _gelu_tanh(x):
    return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))


def _softmax(x):
    x = x - x.max(-1, keepdims=True)
    e = np.exp(x)
    return e / e.sum(-1, keepdims=True)


def _mha(p, name, xq, xkv, key_mask=None):
    def proj(x, which):
        kernel, bias = p[f"{name}/{which}/kernel"], p[f"{name}/{which}/bias"]
        return np.einsum("btd,dhk->bthk", x, kernel) + bias

    q, k, v = proj(xq, "query"), proj(xkv, "key"), proj(xkv, "value")
    scores = np.einsum("bqhk,bthk->bhqt", q / np.sqrt(q.shape[-1]), k)
    if key_mask is not None:
        scores = np.where(key_mask[:, None, None, :], scores, np.finfo("float32").min)
    out = np.einsum("bhqt,bthk->bqhk", _softmax(scores), v)
    return np.einsum("bqhk,hkd->bqd", out, p[f"{name}/out/kernel"]) + p[f"{name}/out/bias"]


def _mlp(p, name, x):
    h = _gelu_tanh(x @ p[f"{name}/Dense_0/kernel"] + p[f"{name}/Dense_0/bias"])
    return h @ p[f"{name}/Dense_1/kernel"] + p[f"{name}/Dense_1/bias"]


def _encode(p, root, x, key_mask=None):
    i = 0
    while f"{root}/encoderblock_{i}/LayerNorm_0/scale" in p:
        blk = f"{root}/encoderblock_{i}"
        y = _ln(p, f"{blk}/LayerNorm_0", x)
        x = x + _mha(p, f"{blk}/MultiHeadDotProductAttention_0", y, y, key_mask)
        x = x + _mlp(p, f"{blk}/MlpBlock_0", _ln(p, f"{blk}/LayerNorm_1", x))
        i += 1
    return _ln(p, f"{root}/encoder_norm", x)


def _map_head(p, x, key_mask=None):
    probe = np.tile(p["img/MAPHead_0/probe"], (x.shape[0], 1, 1))
    y = _mha(p, "img/MAPHead_0/MultiHeadDotProductAttention_0", probe, x, key_mask)
    y = y + _mlp(p, "img/MAPHead_0/MlpBlock_0", _ln(p, "img/MAPHead_0/LayerNorm_0", y))
    return y[:, 0]


def _naflex_posemb(grid, coords):
    """big_vision's _pos_emb_resize: resize the grid to each image, gather at coords."""
    jax = pytest.importorskip("jax")
    shapes = coords.max(axis=1) + 1  # As big_vision: padding sits at (0, 0).
    out = []
    for shape, c in zip(shapes, coords):
        resized = np.asarray(
            jax.image.resize(grid, (*shape, grid.shape[-1]), "bilinear", antialias=True)
        )
        out.append(resized[c[:, 0], c[:, 1]])
    return np.stack(out).astype("float64")


def reference(params, image_inputs, token_ids):
    p = {k: v.astype("float64") for k, v in params.items()}
    if "patches" in image_inputs:
        mask = image_inputs["patch_mask"].astype(bool)
        x = image_inputs["patches"] @ p["img/embedding/kernel"] + p["img/embedding/bias"]
        x = x + _naflex_posemb(params["img/pos_embedding"], image_inputs["patch_coords"])
        zimg = _map_head(p, _encode(p, "img/Transformer", x, mask), mask)
    else:
        images = image_inputs["images"].astype("float64")
        kernel = p["img/embedding/kernel"]
        ps = kernel.shape[0]
        b, g = images.shape[0], images.shape[1] // ps
        patches = images[:, : g * ps, : g * ps].reshape(b, g, ps, g, ps, 3)
        patches = patches.transpose(0, 1, 3, 2, 4, 5).reshape(b, g * g, ps, ps, 3)
        x = np.einsum("bnijc,ijcd->bnd", patches, kernel) + p["img/embedding/bias"]
        x = x + p["img/pos_embedding"]
        zimg = _map_head(p, _encode(p, "img/Transformer", x))
    pos = p["txt/pos_embedding"] + p.get("txt/Encoder_0/pos_embedding", 0)
    x = p["txt/Embed_0/embedding"][token_ids] + pos
    x = _encode(p, "txt/Encoder_0", x)
    ztxt = x[:, -1] @ p["txt/head/kernel"] + p["txt/head/bias"]
    zimg = zimg / (np.linalg.norm(zimg, axis=1, keepdims=True) + 1e-8)
    ztxt = ztxt / (np.linalg.norm(ztxt, axis=1, keepdims=True) + 1e-8)
    logits = zimg @ ztxt.T * np.exp(p["t"][0]) + p["b"][0]
    return {"image_embeddings": zimg, "text_embeddings": ztxt, "logits": logits}


def _inputs(naflex, image_size=FIXED_PATCH * FIXED_GRID, seed=1):
    rng = np.random.default_rng(seed)
    token_ids = rng.integers(0, TXT["vocab"], (3, TXT["length"])).astype("int32")
    token_ids[:, -2:] = [1, 0]  # An EOS then padding, as the tokenizer makes them.
    if naflex:
        images = naflex_batch([(2, 3), (4, 4), (1, 5)], 16, NAFLEX_PATCH, seed=seed)
    else:
        images = {"images": rng.uniform(-1, 1, (3, image_size, image_size, 3)).astype("float32")}
    return images, token_ids


MAX_DIFF = {}  # Filled by the parity tests; printed with -s.


def _check(backbone, params, naflex, image_size=FIXED_PATCH * FIXED_GRID, tag=""):
    images, token_ids = _inputs(naflex, image_size)
    out = backbone({**images, "token_ids": token_ids})
    out = {k: keras.ops.convert_to_numpy(v) for k, v in out.items()}
    want = reference(params, images, token_ids)
    diffs = {k: float(np.abs(out[k] - want[k]).max()) for k in want}
    MAX_DIFF[tag] = diffs
    print(tag, diffs)
    assert diffs["image_embeddings"] <= 1e-5, diffs
    assert diffs["text_embeddings"] <= 1e-5, diffs
    assert diffs["logits"] <= 1e-4, diffs


# ---------------------------------------------------------------------------
# Tests.


@pytest.mark.parametrize(
    "naflex, scan, prefix",
    [(False, False, True), (False, True, False), (True, False, False), (True, True, True)],
    ids=["fixed-loop-prefix", "fixed-scan", "naflex-loop", "naflex-scan-prefix"],
)
def test_matches_big_vision_reference(tmp_path, naflex, scan, prefix):
    params = make_checkpoint(naflex)
    path = save(tmp_path, params, scan=scan, prefix=prefix)
    assert big_vision.is_big_vision_checkpoint(path)
    backbone = big_vision.load_backbone(path)
    assert backbone.is_naflex == naflex
    vision_config = backbone.vision_encoder.get_config()
    assert image_config(str(path)) == (
        {"patch_size": vision_config["patch_size"], "max_num_patches": 256} if naflex
        else {"image_size": vision_config["image_size"]}
    )
    vision, text = backbone.vision_encoder, backbone.text_encoder
    assert (vision.hidden_dim, vision.num_layers, vision.num_heads, vision.intermediate_dim) == (
        IMG["width"], IMG["depth"], IMG["heads"], IMG["mlp"]
    )
    assert (text.vocabulary_size, text.sequence_length, text.hidden_dim, text.num_layers,
            text.num_heads, text.intermediate_dim, text.embedding_dim) == (
        TXT["vocab"], TXT["length"], TXT["width"], TXT["depth"], TXT["heads"], TXT["mlp"], EMBED
    )
    if naflex:
        assert (vision.patch_size, vision.position_grid_size) == (NAFLEX_PATCH, NAFLEX_GRID)
    else:
        assert (vision.patch_size, vision.image_size) == (FIXED_PATCH, FIXED_PATCH * FIXED_GRID)
    _check(backbone, params, naflex, tag=f"naflex={naflex} scan={scan}")


def test_image_size_from_file_name_and_legacy_text_posemb(tmp_path):
    # As So400m/14 at 384 px (27×27 patches, 6 px dropped): 3×3 patches of 4 at 14 px.
    params = make_checkpoint(False, seed=3)
    params["txt/Encoder_0/pos_embedding"] = _normal(
        np.random.default_rng(4), 1, TXT["length"], TXT["width"], scale=0.3
    )
    path = save(tmp_path, params, name="tiny_p4_14.npz")
    with open(path, "rb") as f:  # An open file has a name too.
        backbone = big_vision.load_backbone(f)
    assert backbone.vision_encoder.image_size == 14
    _check(backbone, params, False, image_size=14, tag="legacy posemb, 14 px")
    assert big_vision.load_backbone(path, image_size=12).vision_encoder.image_size == 12
    with pytest.raises(ValueError, match="patch grid"):
        big_vision.load_backbone(path, image_size=16)


def test_bfloat16_checkpoint_and_dtype(tmp_path):
    ml_dtypes = pytest.importorskip("ml_dtypes")
    params = make_checkpoint(False, seed=5)
    rounded = {k: v.astype(ml_dtypes.bfloat16) for k, v in params.items()}
    path = save(tmp_path, rounded)  # np.savez stores bfloat16 as 2-byte voids.
    exact = {k: v.astype("float32") for k, v in rounded.items()}
    _check(big_vision.load_backbone(path), exact, False, tag="bfloat16 file")
    mixed = big_vision.load_backbone(path, dtype="mixed_bfloat16")
    for tower in (mixed.vision_encoder, mixed.text_encoder):
        assert tower.dtype_policy.name == "mixed_bfloat16"
        assert tower.encoder.blocks[0].mlp.fc1.compute_dtype == "bfloat16"


def test_missing_tensor_is_named(tmp_path):
    params = make_checkpoint(False)
    del params["img/MAPHead_0/MlpBlock_0/Dense_1/bias"]
    with pytest.raises(WeightLoadingError, match="MlpBlock_0/Dense_1/bias"):
        big_vision.load_backbone(save(tmp_path, params))


def test_missing_block_is_named(tmp_path):
    params = make_checkpoint(False)
    params = {k: v for k, v in params.items() if "txt/Encoder_0/encoderblock_1/" not in k}
    with pytest.raises(WeightLoadingError, match=r"lacks blocks \[1\]"):
        big_vision.load_backbone(save(tmp_path, params))


def test_extra_tensor_is_named(tmp_path):
    params = make_checkpoint(True)
    params["img/head/kernel"] = np.zeros((EMBED, 4), "float32")
    with pytest.raises(WeightLoadingError, match="img/head/kernel"):
        big_vision.load_backbone(save(tmp_path, params))


def test_pickled_arrays_are_refused(tmp_path):
    params = make_checkpoint(False)
    params["config"] = np.array([{"evil": "payload"}], dtype=object)
    path = save(tmp_path, params)
    with pytest.raises(WeightLoadingError, match="unpickle"):
        big_vision.load_backbone(path)


def test_unreadable_files(tmp_path):
    (tmp_path / "text.npz").write_text("not a zip")
    with pytest.raises(WeightLoadingError, match="not a readable .npz"):
        big_vision.load_backbone(tmp_path / "text.npz")
    with pytest.raises(FileNotFoundError):
        big_vision.load_backbone(tmp_path / "absent.npz")
    np.savez(tmp_path / "other.npz", weights=np.zeros(3))
    with pytest.raises(WeightLoadingError, match="img/embedding/kernel"):
        big_vision.load_backbone(tmp_path / "other.npz")


def test_is_big_vision_checkpoint(tmp_path):
    other = tmp_path / "other.npz"
    np.savez(other, weights=np.zeros(3))
    (tmp_path / "text.npz").write_text("not a zip")
    assert not big_vision.is_big_vision_checkpoint(other)
    assert not big_vision.is_big_vision_checkpoint(tmp_path / "text.npz")
    assert not big_vision.is_big_vision_checkpoint(tmp_path / "absent.npz")
    assert not big_vision.is_big_vision_checkpoint("hf://google/siglip2-base-patch16-224")
    assert big_vision.is_big_vision_checkpoint("gs://big_vision/siglip2/siglip2_b16_224.npz")


# ---------------------------------------------------------------------------
# Downloads.


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9/siglip2_b16_224.npz",  # Closed port: refused at once.
        "https://nonexistent-host.invalid/siglip2_b16_224.npz",
        "gs://big_vision-no-such-bucket-for-tests/siglip2_b16_224.npz",
    ],
)
def test_download_fails_fast_with_instructions(tmp_path, monkeypatch, url):
    monkeypatch.setenv("KERAS_SIGLIP2_CACHE", str(tmp_path))
    start = time.monotonic()
    with pytest.raises(DownloadError) as info:
        big_vision.load_backbone(url)
    assert time.monotonic() - start < 15
    message = str(info.value)
    https = url.replace("gs://", "https://storage.googleapis.com/")
    assert https in message and "local path" in message
    assert str(tmp_path) in message
    assert not any(p.is_file() for p in tmp_path.rglob("*"))  # Nothing half-written.


@pytest.fixture
def http_server(tmp_path):
    """Serves tmp_path/"served" on a local port; yields (base_url, request_log)."""
    root = tmp_path / "served"
    root.mkdir()
    log = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            log.append(self.path)

    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Handler, directory=str(root))
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", root, log
    server.shutdown()
    server.server_close()


def test_load_from_url_is_cached(tmp_path, monkeypatch, http_server):
    base, root, log = http_server
    cache = tmp_path / "cache"
    monkeypatch.setenv("KERAS_SIGLIP2_CACHE", str(cache))
    params = make_checkpoint(False)
    save(root, params, name="tiny.npz")
    url = f"{base}/tiny.npz"
    backbone = big_vision.load_backbone(url)
    _check(backbone, params, False, tag="via URL")
    local = cached_path(url)
    assert local.is_file() and local.is_relative_to(cache)
    assert [p.name for p in local.parent.iterdir()] == ["tiny.npz"]  # No temp file left.
    requests = len(log)
    assert download(url) == local and len(log) == requests  # Served from the cache.


def test_missing_remote_file_is_an_error(tmp_path, http_server):
    base, _, _ = http_server
    with pytest.raises(DownloadError, match="404"):
        download(f"{base}/absent.npz", cache=tmp_path / "cache")
    assert not any(p.is_file() for p in (tmp_path / "cache").rglob("*"))


def test_load_from_bytes():
    params = make_checkpoint(True, seed=7)
    buffer = io.BytesIO()
    np.savez(buffer, **params)
    buffer.seek(0)
    _check(big_vision.load_backbone(buffer), params, True, tag="from BytesIO")


@pytest.mark.parametrize("how", ["empty", "truncated", "overwritten"])
def test_corrupt_or_truncated_npz_is_named(tmp_path, how):
    path = save(tmp_path, make_checkpoint(False))
    data = path.read_bytes()
    half = len(data) // 2
    path.write_bytes({"empty": b"", "truncated": data[:half],
                      "overwritten": data[:half] + bytes(64) + data[half + 64:]}[how])
    message = re.escape(str(path)) + " is corrupt or truncated .*: re-download or re-convert it"
    for load in (big_vision.load_backbone, load_any_backbone):  # the latter detects the format
        with pytest.raises(CorruptFileError, match=message):
            load(str(path))


def test_non_finite_tensor_is_named(tmp_path):
    params = make_checkpoint(False)
    params["t"] = np.array([np.nan], "float32")
    path = save(tmp_path, params)
    with pytest.raises(WeightLoadingError, match=re.escape(f"{path}: tensor 't' is not finite")):
        big_vision.load_backbone(path)
