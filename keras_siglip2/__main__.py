"""Command line: `python -m keras_siglip2 {presets,convert} ...` (also `keras-siglip2`)."""

import argparse
import sys


def _presets(args):
    from keras_siglip2.param_count import count_params
    from keras_siglip2.presets import PRESETS

    print(f"{'preset':34} {'image':>12} {'params':>14}  sources")
    for name, preset in PRESETS.items():
        image = preset["image"]
        pipeline = (
            f"naflex≤{image['max_num_patches']}" if "max_num_patches" in image
            else f"{image['image_size']}px"
        )
        params = count_params(preset["backbone"])
        print(f"{name:34} {pipeline:>12} {params:>14,}  {', '.join(preset['sources'])}")


def _convert(args):
    from keras_siglip2.preset_loader import load_backbone, tokenizer_proto
    from keras_siglip2.tokenizer import SigLIP2Tokenizer

    backbone = load_backbone(args.source, source=args.from_source)
    backbone.save_to_preset(args.destination)
    proto = tokenizer_proto(args.source, source=args.from_source)
    if proto is None:
        print(f"note: {args.source} holds no tokenizer vocabulary.", file=sys.stderr)
    else:
        SigLIP2Tokenizer(proto=str(proto)).save_to_preset(args.destination)
    print(f"saved {backbone.count_params():,} weights to {args.destination}")


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="keras_siglip2", description="SigLIP 2 for Keras 3: presets and conversion."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser(
        "presets", help="list the released checkpoints with their parameter counts"
    ).set_defaults(run=_presets)
    convert = commands.add_parser(
        "convert",
        help="convert a checkpoint (preset name, hf://, kaggle://, .npz, directory) "
        "into a Keras preset directory, once; it then loads offline",
    )
    convert.add_argument("source", help="preset name, hf:// or kaggle:// handle, URL or path")
    convert.add_argument("destination", help="directory to write the Keras preset to")
    convert.add_argument(
        "--from", dest="from_source", choices=("big_vision", "huggingface", "keras_hub"),
        help="which published copy a preset name is read from (default: big_vision)",
    )
    convert.set_defaults(run=_convert)
    args = parser.parse_args(argv)
    try:
        args.run(args)
    except (ValueError, OSError) as e:
        parser.exit(2, f"error: {e}\n")


if __name__ == "__main__":
    main()
