"""Images/s (and texts/s) of the B/16 towers through our public API, against the same tower
compiled by hand, keras-hub and transformers, same process.

    KERAS_BACKEND=jax python benchmarks/inference.py [--batches 1 8] [--repeats 3]
    KERAS_BACKEND=torch python benchmarks/inference.py   # ours on torch, same references

Float32, random weights, image tower at 224 px (196 patches), text tower at 64 tokens.
Candidates, each taking a numpy batch and returning numpy embeddings:
- "ours, encode_images" / "ours, encode_text": `SigLIP2Backbone.encode_images` /
  `encode_text` called as a user calls them (compiled by default: `predict_on_batch`).
- "ours, tower jitted": the same tower's `stateless_call` and the L2 norm under one
  `jax.jit` (on JAX; elsewhere the tower's `predict_on_batch`), what a user could write by hand.
- "keras-hub, jitted": keras-hub's `SigLIPVisionEncoder`/`SigLIPTextEncoder` the same way.
- "transformers (torch)": `SiglipVisionModel`/`SiglipTextModel` under `torch.inference_mode`.
"public speed ×" is that candidate's time over the public call's: the public call's speed
relative to it (targets: ≥ 0.9 against our own jitted tower, ≥ 1.1 against keras-hub). The
candidates are timed in interleaved rounds; figures are medians. "of matmul" is the achieved
FLOP/s over the machine's float32 matmul rate: the fastest of a 2048³ product and of the
tower's MLP product (batch × tokens, 768, 3072), each in numpy and in the current Keras
backend, timed as more candidates in the same rounds (so they see the same load as the models).
"""

import argparse
import os

os.environ.setdefault("KERAS_BACKEND", "jax")

import keras
import keras_hub
import numpy as np
import torch
import transformers

from keras_siglip2 import SigLIP2Backbone, SigLIP2TextEncoder, SigLIP2VisionEncoder
from keras_siglip2.layers.logits import l2_normalize
from timing import interleaved_with_matmul, markdown_table, median, vit_flops

B16 = dict(hidden_dim=768, num_layers=12, num_heads=12, intermediate_dim=3072)
TOKENS = {"image": 196, "text": 64}  # 224 px in 16 px patches; the text length
PUBLIC = {"image": "ours, encode_images", "text": "ours, encode_text"}


def jitted(model, pooled):
    """numpy batch -> numpy L2-normalised `pooled(model outputs)`: a `jax.jit` of `model`'s
    `stateless_call` on JAX (the variables' current values passed in each call, as
    `predict_on_batch` does), `predict_on_batch` on the other backends."""
    if keras.config.backend() != "jax":
        return lambda x: keras.ops.convert_to_numpy(
            l2_normalize(pooled(model.predict_on_batch(x))))
    import jax

    @jax.jit
    def run(trainable, non_trainable, x):
        outputs, _ = model.stateless_call(trainable, non_trainable, x)
        return l2_normalize(pooled(outputs))

    def call(x):
        trainable = [v.value for v in model.trainable_variables]
        non_trainable = [v.value for v in model.non_trainable_variables]
        return np.asarray(run(trainable, non_trainable, x))

    return call


class Models:
    """The B/16 towers, built once: ours (one backbone), keras-hub's, transformers'."""

    def __init__(self, towers, vocabulary_size):
        keras.utils.set_random_seed(0)
        self.vocabulary_size = vocabulary_size
        length = TOKENS["text"]
        self.backbone = SigLIP2Backbone(
            SigLIP2VisionEncoder(image_size=224, patch_size=16, **B16),
            SigLIP2TextEncoder(vocabulary_size, length, embedding_dim=768, **B16),
        )
        self.hub, self.hf = {}, {}
        if "image" in towers:
            self.hub["image"] = keras_hub.models.SigLIPVisionEncoder(patch_size=16, **B16)
            self.hf["image"] = transformers.SiglipVisionModel(transformers.SiglipVisionConfig(
                hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                intermediate_size=3072, image_size=224, patch_size=16)).eval()
        if "text" in towers:
            self.hub["text"] = keras_hub.models.SigLIPTextEncoder(
                vocabulary_size, embedding_dim=768, max_sequence_length=length, **B16)
            self.hf["text"] = transformers.SiglipTextModel(transformers.SiglipTextConfig(
                vocab_size=vocabulary_size, hidden_size=768, num_hidden_layers=12,
                num_attention_heads=12, intermediate_size=3072,
                max_position_embeddings=length)).eval()

    def image_candidates(self, batch):
        images = np.random.default_rng(0).uniform(-1, 1, (batch, 224, 224, 3)).astype("float32")
        tower = jitted(self.backbone.vision_encoder, lambda out: out["pooled_output"])
        hub = jitted(self.hub["image"], lambda out: out)
        pixels = torch.from_numpy(images.transpose(0, 3, 1, 2).copy())
        return {
            PUBLIC["image"]: lambda: self.backbone.encode_images(images),
            "ours, tower jitted": lambda: tower(images),
            "keras-hub, jitted": lambda: hub({"images": images}),
            "transformers (torch)": lambda: hf_call(self.hf["image"], pixel_values=pixels),
        }

    def text_candidates(self, batch):
        ids = np.random.default_rng(0).integers(
            1, self.vocabulary_size, (batch, TOKENS["text"])).astype("int32")
        tower = jitted(self.backbone.text_encoder, lambda out: out["pooled_output"])
        hub = jitted(self.hub["text"], lambda out: out)
        tokens = torch.from_numpy(ids.astype("int64"))
        return {
            PUBLIC["text"]: lambda: self.backbone.encode_text(ids),
            "ours, tower jitted": lambda: tower(ids),
            "keras-hub, jitted": lambda: hub({"token_ids": ids}),
            "transformers (torch)": lambda: hf_call(self.hf["text"], input_ids=tokens),
        }


def hf_call(model, **inputs):
    with torch.inference_mode():
        return model(**inputs).pooler_output


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--vocabulary-size", type=int, default=32_000,
                        help="text tower vocabulary (the lookup's cost does not depend on it)")
    parser.add_argument("--towers", nargs="+", default=["image", "text"])
    args = parser.parse_args()

    print(f"backend {keras.config.backend()}, torch threads {torch.get_num_threads()}\n")
    flops = {
        "image": vit_flops(TOKENS["image"], 768, 12, 3072, input_dim=16 * 16 * 3, map_head=True),
        "text": vit_flops(TOKENS["text"], 768, 12, 3072) + 2 * 768 * 768,
    }
    rows = []
    models = Models(args.towers, args.vocabulary_size)
    for tower in args.towers:
        for batch in args.batches:
            keras.utils.set_random_seed(0)
            candidates = (models.image_candidates(batch) if tower == "image"
                          else models.text_candidates(batch))
            times, rate, fastest = interleaved_with_matmul(
                candidates, args.repeats, [(2048, 2048, 2048), (batch * TOKENS[tower], 768, 3072)]
            )
            public = median(times[PUBLIC[tower]])
            for name, seconds in times.items():
                s = median(seconds)
                rows.append([tower, str(batch), name, f"{batch / s:.2f}",
                             f"{batch * flops[tower] / s / rate:.0%}", f"{s / public:.2f}",
                             f"{rate / 1e9:.0f} ({fastest.removeprefix('matmul ')})"])
            del candidates
    print(markdown_table(
        ["tower", "batch", "model", "examples/s", "of matmul", "public speed ×",
         "matmul GFLOP/s (fastest probe)"], rows))


if __name__ == "__main__":
    main()
