"""Images/s (and texts/s) of the B/16 towers: ours vs keras-hub and transformers, same process.

    KERAS_BACKEND=jax python benchmarks/inference.py [--batches 1 8] [--repeats 3]
    KERAS_BACKEND=torch python benchmarks/inference.py   # ours on torch, same references

Float32, random weights, image tower at 224 px (196 patches), text tower at 64 tokens. Ours
runs on the current Keras backend, keras-hub's `SigLIPVisionEncoder`/`SigLIPTextEncoder` on
the same Keras backend, transformers' `SiglipVisionModel`/`SiglipTextModel` on torch. Keras
models run through `predict_on_batch` (jit on jax, tf.function on tensorflow, no_grad on
torch). The candidates are timed in interleaved rounds; figures are medians. "of matmul" is
the achieved FLOP/s over the machine's float32 matmul rate: the fastest of a 2048³ product and
of the tower's MLP product (batch × tokens, 768, 3072), each in numpy and in the current Keras
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

from keras_siglip2 import SigLIP2TextEncoder, SigLIP2VisionEncoder
from timing import interleaved_with_matmul, markdown_table, median, vit_flops

B16 = dict(hidden_dim=768, num_layers=12, num_heads=12, intermediate_dim=3072)
TOKENS = {"image": 196, "text": 64}  # 224 px in 16 px patches; the text length


def image_candidates(batch):
    images = np.random.default_rng(0).uniform(-1, 1, (batch, 224, 224, 3)).astype("float32")
    ours = SigLIP2VisionEncoder(image_size=224, patch_size=16, **B16)
    hub = keras_hub.models.SigLIPVisionEncoder(patch_size=16, **B16)
    hf = transformers.SiglipVisionModel(transformers.SiglipVisionConfig(
        hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
        image_size=224, patch_size=16)).eval()
    pixels = torch.from_numpy(images.transpose(0, 3, 1, 2).copy())
    return {
        f"ours ({keras.config.backend()})": lambda: ours.predict_on_batch({"images": images}),
        f"keras-hub ({keras.config.backend()})": lambda: hub.predict_on_batch({"images": images}),
        "transformers (torch)": lambda: hf_call(hf, pixel_values=pixels),
    }


def text_candidates(batch, vocabulary_size):
    length = TOKENS["text"]
    ids = np.random.default_rng(0).integers(1, vocabulary_size, (batch, length)).astype("int32")
    ours = SigLIP2TextEncoder(vocabulary_size, length, embedding_dim=768, **B16)
    hub = keras_hub.models.SigLIPTextEncoder(vocabulary_size, embedding_dim=768, **B16)
    hf = transformers.SiglipTextModel(transformers.SiglipTextConfig(
        vocab_size=vocabulary_size, hidden_size=768, num_hidden_layers=12,
        num_attention_heads=12, intermediate_size=3072, max_position_embeddings=length)).eval()
    tokens = torch.from_numpy(ids.astype("int64"))
    return {
        f"ours ({keras.config.backend()})": lambda: ours.predict_on_batch(ids),
        f"keras-hub ({keras.config.backend()})": lambda: hub.predict_on_batch({"token_ids": ids}),
        "transformers (torch)": lambda: hf_call(hf, input_ids=tokens),
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
    for tower in args.towers:
        for batch in args.batches:
            keras.utils.set_random_seed(0)
            candidates = (image_candidates(batch) if tower == "image"
                          else text_candidates(batch, args.vocabulary_size))
            times, rate, fastest = interleaved_with_matmul(
                candidates, args.repeats, [(2048, 2048, 2048), (batch * TOKENS[tower], 768, 3072)]
            )
            best_ref = min(median(t) for n, t in times.items() if not n.startswith("ours"))
            for name, seconds in times.items():
                s = median(seconds)
                rows.append([tower, str(batch), name, f"{batch / s:.2f}",
                             f"{batch * flops[tower] / s / rate:.0%}", f"{best_ref / s:.2f}",
                             f"{rate / 1e9:.0f} ({fastest.removeprefix('matmul ')})"])
            del candidates
    print(markdown_table(
        ["tower", "batch", "model", "examples/s", "of matmul", "vs faster ref",
         "matmul GFLOP/s (fastest probe)"], rows))


if __name__ == "__main__":
    main()
