"""Why a trained main-job checkpoint's referring boxes are (or are not) better than chance.

    KERAS_BACKEND=jax python benchmarks/localisation.py siglip2_run/checkpoint [--examples 300]

Three tables on the embedded dataset's training scenes (English), where a failure cannot be
blamed on generalisation:

1. Referring box IoU of the LocCa decoder (greedy, as `evaluate` decodes) against the constant
   box at the mean of the very targets scored (a baseline that knows their average), on
   single-object scenes (finding "the object" needs no language) and on one to four objects.
2. Teacher-forced loss of each box token (y0, x0, y1, x1) against the entropy of that
   coordinate's location bins over the same examples: a decoder that reads nothing of
   position from the image does no better than that entropy on y0 and x0 (beyond what
   relations such as "left of" in the expression tell).
3. How linearly the image tokens hold their own patch position: R² of a least-squares fit of
   (row, col) / grid size from each real token (fitted on half the images, scored on the
   other half), for the position embedding alone, after adding it to the patch embedding, and
   after each transformer block. The last row is what the LocCa decoder reads.
"""

import argparse

import numpy as np

from keras_siglip2.checkpoint import load_checkpoint
from keras_siglip2.datasets import scenes
from keras_siglip2.evaluation import box_iou, referring_box_iou
from keras_siglip2.evaluation.batches import encode_image_batch, numpy_batches
from keras_siglip2.locca_targets import make_locca_example, strip_text_ids
from keras_siglip2.losses import token_cross_entropy
from keras_siglip2.pipelines import referring_batches

BOX_TOKENS = ("y0", "x0", "y1", "x1")


def _objects(num_objects, count):
    return scenes.load("train", count, seed=0, language="en", num_objects=num_objects)


def referring_sets(model, count):
    """{scenes: numpy referring batches (one row per object) of `count` training scenes}."""
    return {
        name: list(numpy_batches(referring_batches(
            _objects(num_objects, count), model["tokenizer"], model["image_converter"], 64
        )))
        for name, num_objects in (("1 object", (1, 1)), ("1-4 objects", (1, 4)))
    }


def box_rows(model, sets):
    """[(scenes, boxes, decoder IoU, IoU of the constant mean-target box)]."""
    rows = []
    for name, batches in sets.items():
        decoded = referring_box_iou(
            model["backbone"], model["decoder"], model["vocabulary"], batches
        )
        boxes = np.concatenate([b["box"] for b in batches])
        mean_box = box_iou(boxes.mean(0), boxes).mean()
        rows.append((name, decoded["num_examples"], decoded["mean_iou"], mean_box))
    return rows


def box_token_losses(model, batches):
    """(mean teacher-forced loss, entropy of the target bins) per box token, causal layout."""
    decoder, vocab = model["decoder"], model["vocabulary"]
    positions = np.arange(decoder.sequence_length)[None]
    losses, bins = [], []
    for batch in batches:
        examples = [
            make_locca_example("aref", None, box, strip_text_ids(ids), True, vocab,
                               decoder.sequence_length)
            for box, ids in zip(batch["box"], batch["prompt_ids"])
        ]
        inputs, targets, masks = (
            np.stack([e[k] for e in examples])
            for k in ("decoder_input_ids", "decoder_target_ids", "decoder_loss_mask")
        )
        backbone = model["backbone"]
        image = encode_image_batch(backbone, batch)
        places = backbone.vision_encoder.token_positions(backbone.image_inputs(batch))
        logits = decoder(inputs, image["tokens"], image_mask=image.get("token_mask"),
                         image_positions=places if decoder.image_position_codes else None)
        # The 4 box tokens are the first 4 loss positions of each row (the 5th is eos).
        first = masks.argmax(-1)[:, None] + np.arange(4)
        losses.append(np.stack([
            np.asarray(token_cross_entropy(logits, targets, positions == first[:, [j]]))
            for j in range(4)
        ], -1))
        bins.append(np.take_along_axis(targets, first, -1))
    entropies = []
    for column in np.concatenate(bins).T:
        p = np.unique(column, return_counts=True)[1] / len(column)
        entropies.append(float(-(p * np.log(p)).sum()))
    return list(zip(BOX_TOKENS, np.concatenate(losses).mean(0), entropies))


def position_r2(model, count):
    """[(stage, R² of row, R² of col)] for the image tokens of `count` scenes."""
    vision, converter = model["backbone"].vision_encoder, model["image_converter"]
    batch = next(numpy_batches(_objects((1, 4), count).map(
        lambda ex: converter(ex["image"])).batch(count)))
    real = batch["patch_mask"].astype(bool)
    target = (batch["patch_coords"] / batch["spatial_shapes"][:, None, :])[real]
    image_index = np.broadcast_to(np.arange(count)[:, None], real.shape)[real]
    fit, score = image_index < count // 2, image_index >= count // 2

    def r2(tokens):
        x = np.asarray(tokens, "float64")[real]
        x = np.concatenate([x, np.ones((len(x), 1))], 1)
        weights = np.linalg.lstsq(x[fit], target[fit], rcond=None)[0]
        residual = ((x[score] @ weights - target[score]) ** 2).mean(0)
        return 1 - residual / target[score].var(0)

    stages = [("position embedding alone", vision.position_embedding(
        batch["patch_coords"], batch["spatial_shapes"]))]
    tokens, key_mask = vision.embed(batch)
    stages.append(("patch + position embedding", tokens))
    for i, block in enumerate(vision.encoder.blocks):
        tokens = block(tokens, key_mask=key_mask)
        stages.append((f"after block {i + 1}", tokens))
    stages.append(("sequence_output (final norm)", vision.encoder.final_norm(tokens)))
    return [(name, *r2(t)) for name, t in stages]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", help="a directory written by `python -m keras_siglip2 "
                        "train` (its `checkpoint` subdirectory)")
    parser.add_argument("--examples", type=int, default=300, help="scenes per table")
    args = parser.parse_args()
    if args.examples < 2:
        parser.error("--examples must be at least 2 (the position fit needs 2 halves).")
    try:
        model = load_checkpoint(args.checkpoint)
    except (OSError, ValueError) as error:
        parser.error(f"cannot load {args.checkpoint}: {error}")
    if model["decoder"] is None:
        parser.error(f"{args.checkpoint} has no LocCa decoder: train with LocCa on.")
    if not model["backbone"].is_naflex:
        parser.error(f"{args.checkpoint} has a fixed-resolution image tower; the position "
                     "probe reads NaFlex `patch_coords` (as `train` writes).")
    sets = referring_sets(model, args.examples)
    print("| scenes | boxes | decoder IoU | mean-target-box IoU |\n|---|---:|---:|---:|")
    for name, n, decoded, mean_box in box_rows(model, sets):
        print(f"| {name} | {n} | {decoded:.3f} | {mean_box:.3f} |")
    print("\n| box token | teacher-forced loss | entropy of its bins |\n|---|---:|---:|")
    for name, loss, entropy in box_token_losses(model, sets["1-4 objects"]):
        print(f"| {name} | {loss:.2f} | {entropy:.2f} |")
    print("\n| image tokens | R² row | R² col |\n|---|---:|---:|")
    for name, row, col in position_r2(model, args.examples):
        print(f"| {name} | {row:.3f} | {col:.3f} |")


if __name__ == "__main__":
    main()
