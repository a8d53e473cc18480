"""Command line: `python -m keras_siglip2 {train,eval,zero-shot,embed,presets,convert,export}`
(also installed as `keras-siglip2`). `--help` on each command says what it takes.

Before any backend loads (`keras_siglip2.startup`, run by the package's `__init__`):
- `train` restarts itself with huge pages where glibc can give them
  (`keras_siglip2.huge_pages`; `GLIBC_TUNABLES=glibc.malloc.hugetlb=0` keeps 4 KiB pages);
- the backends' own log lines (TensorFlow's and XLA's start-up notices, SentencePiece's) are
  kept off the terminal (`keras_siglip2.quiet`); `--verbose` before the command leaves them
  be."""

import argparse
import json
import os
import pathlib
import re
import shutil
import string
import sys
import tempfile


class _Parser(argparse.ArgumentParser):
    """Argument errors as one line, `error: <message>`, exit status 2 (no usage block)."""

    def error(self, message):
        self.exit(2, f"error: {_one_line(message)} (see `{self.prog} --help`)\n")


def _one_line(message):
    return re.sub(r"\s*\n\s*", " ", str(message).strip())


# Argument types: each raises argparse.ArgumentTypeError with the reason, which argparse
# reports as "argument --name: <reason>" before any work is done.


def _int_at_least(minimum):
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            value = minimum - 1
        if value < minimum:
            raise argparse.ArgumentTypeError(
                f"must be a whole number >= {minimum}; got {text!r}")
        return value

    return parse


_positive_int = _int_at_least(1)


def _template(text):
    """A prompt template with exactly one empty `{}` field (and no other format fields)."""
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(text) if f is not None]
        if fields == [""]:
            text.format("label")  # a format spec that str.format refuses fails here
    except (ValueError, IndexError, KeyError) as e:
        raise argparse.ArgumentTypeError(f"{text!r} is not a valid template ({e})") from None
    if fields != [""]:
        found = ", ".join(f"{{{f}}}" for f in fields) or "none"
        raise argparse.ArgumentTypeError(
            f"needs exactly one '{{}}' for the class name and no other fields; {text!r} "
            f"has {found} (write a literal brace as '{{{{' or '}}}}')"
        )
    return text


def _numbers(text):
    """Comma-separated numbers, e.g. `1,2,1` (their meaning is checked where they are used)."""
    try:
        return tuple(float(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"needs comma-separated numbers, e.g. 1,2,1; got {text!r}") from None


def _compiled(text):
    """`--compiled` as `encode_images`' `compiled`: on → True, max → "max", off → False."""
    modes = {"on": True, "max": "max", "off": False}
    if text not in modes:
        raise argparse.ArgumentTypeError(f"is on, max or off; got {text!r}")
    return modes[text]


def _labels(text):
    labels = [label.strip() for label in text.split(",") if label.strip()]
    if not labels:
        raise argparse.ArgumentTypeError(
            f"needs at least one class name (comma-separated); got {text!r}"
        )
    return labels


def _image_file(text):
    if not os.path.exists(text):
        raise argparse.ArgumentTypeError(f"image file {text!r} does not exist")
    if not os.path.isfile(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a file")
    return text


def _checkpoint_dir(text):
    if not os.path.isdir(text):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a directory (give the checkpoint directory `train` wrote)"
        )
    return text


def _output_file(text):
    parent = os.path.dirname(os.path.abspath(text))
    if os.path.isdir(text) or not os.path.isdir(parent):
        raise argparse.ArgumentTypeError(
            f"cannot write {text!r}: "
            + ("it is a directory" if os.path.isdir(text) else f"{parent!r} is not a directory")
        )
    return text


def _new_directory(text):
    if os.path.exists(text) and (not os.path.isdir(text) or os.listdir(text)):
        raise argparse.ArgumentTypeError(
            f"{text!r} already exists and is not an empty directory: choose a new path, or "
            "remove it first"
        )
    return text


class _Texts(argparse.Action):
    """`--texts`: every item must be UTF-8 text (Linux argv can hold other bytes)."""

    def __call__(self, parser, namespace, values, option_string=None):
        for i, value in enumerate(values, 1):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise argparse.ArgumentError(
                    self, f"item {i} is not valid UTF-8 text: {value!r}"
                ) from None
        setattr(namespace, self.dest, values)


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
    """Writes into `<destination>.partial-XXXX` beside it, renamed at the end: a failure
    leaves nothing behind (nor the parent folders it created)."""
    from keras_siglip2.preset_loader import load_backbone, tokenizer_proto
    from keras_siglip2.tokenizer import SigLIP2Tokenizer

    destination = pathlib.Path(args.destination).absolute()
    created = None  # the outermost parent folder this command creates
    for parent in destination.parents:
        if parent.exists():
            break
        created = parent
    partial = None
    try:
        destination.parent.mkdir(parents=True, exist_ok=True)
        partial = pathlib.Path(
            tempfile.mkdtemp(prefix=f"{destination.name}.partial-", dir=destination.parent)
        )
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(partial, 0o777 & ~umask)  # mkdtemp's folder is private; the preset is not
        proto = tokenizer_proto(args.source, source=args.from_source)  # fails fast offline
        backbone = load_backbone(args.source, source=args.from_source)
        backbone.save_to_preset(str(partial))
        if proto is not None:
            SigLIP2Tokenizer(proto=str(proto)).save_to_preset(str(partial))
        if destination.is_dir():
            destination.rmdir()  # empty (checked up front); rename cannot replace it everywhere
        os.replace(partial, destination)
    except BaseException:
        if created or partial:
            shutil.rmtree(created or partial, ignore_errors=True)
        raise
    if proto is None:
        print(f"note: {args.source} holds no tokenizer vocabulary.", file=sys.stderr)
    print(f"saved {backbone.count_params():,} weights to {args.destination}")


def _train(args):
    import dataclasses

    from keras_siglip2.checkpoint import load_checkpoint
    from keras_siglip2.gallery import prediction_gallery
    from keras_siglip2.main_job import MainJobConfig, evaluate, format_results, train

    overrides = {f.name: getattr(args, f.name) for f in dataclasses.fields(MainJobConfig)
                 if getattr(args, f.name, None) is not None}
    if args.tpu and not args.distribution:
        overrides["distribution"] = "tpu"
    config = MainJobConfig(**overrides)
    workdir = pathlib.Path(args.workdir)
    train(config, workdir, restart=args.restart, tensorboard=args.tensorboard)
    plots = ["losses.png", *(["evaluation.png"] if (workdir / "evaluation.png").is_file()
                             else [])]
    print(f"checkpoint: {workdir / 'checkpoint'}  plots: "
          + ", ".join(str(workdir / name) for name in plots))
    if args.eval_examples > 0:
        model = load_checkpoint(workdir / "checkpoint")
        results = evaluate(model, num_examples=args.eval_examples,
                           probe_examples=max(1, args.eval_examples // 2), seed=config.seed)
        (workdir / "results.json").write_text(json.dumps(results, indent=1))
        print(format_results(results))
        prediction_gallery(model, workdir / "gallery.png", seed=config.seed)
        print(f"gallery: {workdir / 'gallery.png'}")


def _eval(args):
    from keras_siglip2.checkpoint import load_checkpoint
    from keras_siglip2.gallery import prediction_gallery
    from keras_siglip2.main_job import evaluate, format_results

    model = load_checkpoint(args.checkpoint)
    results = evaluate(model, num_examples=args.num_examples,
                       probe_examples=args.probe_examples, seed=args.seed)
    print(format_results(results))
    if args.gallery is not None:
        path = args.gallery or os.path.join(
            os.path.dirname(os.path.abspath(args.checkpoint)), "gallery.png")
        prediction_gallery(model, path, seed=args.seed)
        print(f"gallery: {path}")


def _model(handle):
    from keras_siglip2.checkpoint import load_checkpoint

    return load_checkpoint(handle)


def _zero_shot(args):
    import keras
    import numpy as np

    labels = args.labels
    model = _model(args.preset)
    backbone = model["backbone"]
    images = model["image_converter"](list(args.images))
    texts = model["tokenizer"]([args.template.format(label) for label in labels])
    # L2-normalised (numpy unless --compiled off); the logit head is one small product.
    image_embeddings = backbone.encode_images(images, compiled=args.compiled)
    text_embeddings = backbone.encode_text(texts, compiled=args.compiled)
    logits = backbone.logits_head(image_embeddings, text_embeddings)
    probabilities = keras.ops.convert_to_numpy(keras.ops.sigmoid(logits))
    for path, row in zip(args.images, probabilities):
        order = np.argsort(-row)
        print(path)
        for i in order[: args.top]:
            print(f"  {row[i]:7.2%}  {labels[i]}")


def _embed(args):
    import keras
    import numpy as np

    model = _model(args.preset)
    backbone = model["backbone"]
    if args.images:
        embeddings = backbone.encode_images(model["image_converter"](list(args.images)),
                                            compiled=args.compiled)
    else:
        embeddings = backbone.encode_text(model["tokenizer"](list(args.texts)),
                                          compiled=args.compiled)
    embeddings = keras.ops.convert_to_numpy(embeddings).astype("float32")
    np.save(args.output, embeddings)
    print(f"saved {embeddings.shape[0]} embeddings of width {embeddings.shape[1]} to "
          f"{args.output}")


def _export(args):
    import pathlib

    from keras_siglip2.export import export_encoders

    paths = export_encoders(
        args.preset, args.destination, format=args.format,
        max_num_patches=args.max_num_patches, encoders=args.encoders,
    )
    for name, path in paths.items():
        print(f"{name} encoder: {path}")
    if "text" in paths and not (pathlib.Path(args.destination) / "tokenizer.model").is_file():
        print(f"note: {args.preset} holds no tokenizer vocabulary: the text encoder takes "
              "token ids only.", file=sys.stderr)


def main(argv=None):
    parser = _Parser(
        prog="keras_siglip2",
        description="SigLIP 2 for Keras 3: train, evaluate, zero-shot, embed, convert, export.",
    )
    parser.add_argument("--debug", action="store_true",
                        help="show the full traceback of an error, not one line")
    parser.add_argument("--verbose", action="store_true",
                        help="show the backends' log lines (TensorFlow, XLA, SentencePiece) "
                        "as the environment's log levels let them through; without it "
                        "they are hidden (keras_siglip2.quiet)")
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser(
        "train",
        help="train a small SigLIP 2 with the whole recipe on the embedded dataset, then "
        "evaluate it (defaults: the README's run)",
    )
    train.add_argument("--workdir", default="siglip2_run",
                       help="directory for the checkpoint, logs and plots; an interrupted run "
                       "there resumes (default: siglip2_run)")
    from keras_siglip2.main_job import MainJobConfig

    for name, kind, text in (
        ("steps", int, "optimizer steps"), ("epochs", int, "backups (resumption points)"),
        ("batch_size", int, "examples per step"),
        ("learning_rate", float, "peak learning rate"), ("seed", int, "seed of data and init"),
        ("width", int, "width of the towers and decoder"), ("depth", int, "image tower layers"),
        ("max_num_patches", int, "NaFlex patches per image"),
        ("english_fraction", float, "share of English captions in training"),
        ("locca_causal_probability", float, "share of LocCa examples in the causal "
         "(teacher-forced) layout, the rest predicted in parallel"),
        ("pool_size", int, "training scenes drawn once and reused with fresh draws per pass "
         "(0: every example drawn anew)"),
        ("validation_scenes", int, "validation scenes measured after every epoch (zero-shot, "
         "retrieval, box IoU) into validation.csv and evaluation.png; 0: none"),
    ):
        default = MainJobConfig.__dataclass_fields__[name].default
        train.add_argument(f"--{name.replace('_', '-')}", dest=name, type=kind,
                           help=f"{text} (default: {default})")
    for name, text in (
        ("locca_position_codes", "the LocCa decoder adds sine-cosine codes of each patch's "
         "place to the image tokens"),
        ("locca_all_tasks", "every image trains all three LocCa tasks each step, not one "
         "drawn task"),
        ("locca_length_groups", "draw the LocCa tasks by batch (a fixed number of captions), "
         "so the decoder skips the padding of the short referring examples (with the scene "
         "pool and one drawn task per image)"),
    ):
        default = "on" if MainJobConfig.__dataclass_fields__[name].default else "off"
        train.add_argument(f"--{name.replace('_', '-')}", dest=name,
                           action=argparse.BooleanOptionalAction,
                           help=f"{text} (default: {default})")
    train.add_argument("--locca-task-weights", dest="locca_task_weights", type=_numbers,
                       metavar="CAP,AREF,GCAP",
                       help="odds of the LocCa task drawn for an image with objects: "
                       "captioning, referring expression -> box, box -> referring expression; "
                       "not used with --locca-all-tasks (default: "
                       + ",".join(f"{w:g}" for w in MainJobConfig().locca_task_weights) + ")")
    train.add_argument("--distribution", choices=("none", "data_parallel", "mirrored", "tpu"),
                       help="multi-device training: data_parallel (JAX, every local device), "
                       "mirrored or tpu (TensorFlow) (default: none)")
    train.add_argument("--tpu", help="the TPU for --distribution tpu: 'local' on a TPU VM "
                       "(default), a TPU name or grpc:// address")
    train.add_argument("--restart", action="store_true",
                       help="delete the run in --workdir (backup, checkpoint, logs) and start "
                       "over; without it, a run there resumes where it stopped")
    train.add_argument("--tensorboard", action="store_true",
                       help="write TensorBoard logs of every epoch (loss terms, validation "
                       "measures) to WORKDIR/tensorboard")
    train.add_argument("--eval-examples", type=_int_at_least(0), default=1000,
                       help="test images for the evaluation after training, which also "
                       "writes gallery.png; 0 skips both (default: 1000)")
    train.set_defaults(run=_train)
    evaluate = commands.add_parser(
        "eval", help="evaluate a trained checkpoint on the embedded dataset's test split"
    )
    evaluate.add_argument("checkpoint", type=_checkpoint_dir,
                          help="the checkpoint directory `train` wrote")
    evaluate.add_argument("--num-examples", type=_positive_int, default=1000,
                          help="test images for zero-shot, the linear probe (fitted on as "
                          "many validation images) and retrieval (default: 1000)")
    evaluate.add_argument("--probe-examples", type=_positive_int, default=500,
                          help="images for the referring and dense-probe evaluations "
                          "(default: 500)")
    evaluate.add_argument("--seed", type=int, default=0, help="dataset seed (default: 0)")
    evaluate.add_argument("--gallery", nargs="?", const="", type=_output_file, metavar="PATH",
                          help="also draw the prediction gallery (8 test scenes: caption, "
                          "zero-shot top-3, ground-truth and LocCa boxes) to PATH; without "
                          "PATH to gallery.png in the checkpoint's parent directory (the "
                          "run's workdir)")
    evaluate.set_defaults(run=_eval)
    zero_shot = commands.add_parser(
        "zero-shot", help="score images against class names (sigmoid probabilities)"
    )
    zero_shot.add_argument("images", nargs="+", type=_image_file, help="image files")
    zero_shot.add_argument("--labels", required=True, type=_labels,
                           help="comma-separated class names")
    zero_shot.add_argument("--preset", required=True,
                           help="a trained checkpoint directory, a preset name or handle")
    zero_shot.add_argument("--template", default="a photo of a {}.", type=_template,
                           help="prompt with one {} for the class name (default: 'a photo of "
                           "a {}.'; use '{}' for checkpoints of `train`)")
    zero_shot.add_argument("--top", type=_positive_int, default=5,
                           help="classes shown per image (default: 5)")
    zero_shot.set_defaults(run=_zero_shot)
    embed = commands.add_parser("embed", help="embed images or texts into a .npy file")
    embed.add_argument("--preset", required=True,
                       help="a trained checkpoint directory, a preset name or handle")
    embed.add_argument("--images", nargs="+", type=_image_file, help="image files")
    embed.add_argument("--texts", nargs="+", action=_Texts, help="texts")
    embed.add_argument("--output", "-o", required=True, type=_output_file,
                       help="the .npy file to write")
    embed.set_defaults(run=_embed)
    for command in (zero_shot, embed):
        command.add_argument(
            "--compiled", type=_compiled, default=True, metavar="{on,max,off}",
            help="how the towers run: on, one compiled program per input shape; max, on "
            "PyTorch also torch.compile, faster calls after a first call of half a minute "
            "(elsewhere the same as on); off, the layers op by op, for debugging "
            "(default: on)")
    commands.add_parser(
        "presets", help="list the released checkpoints with their parameter counts"
    ).set_defaults(run=_presets)
    convert = commands.add_parser(
        "convert",
        help="convert a checkpoint (preset name, hf://, kaggle://, .npz, directory) "
        "into a Keras preset directory, once; it then loads offline",
    )
    convert.add_argument("source", help="preset name, hf:// or kaggle:// handle, URL or path")
    convert.add_argument("destination", type=_new_directory,
                         help="directory to write the Keras preset to (new or empty)")
    convert.add_argument(
        "--from", dest="from_source", choices=("big_vision", "huggingface", "keras_hub"),
        help="which published copy a preset name is read from (default: big_vision)",
    )
    convert.set_defaults(run=_convert)
    export = commands.add_parser(
        "export",
        help="export the image and text encoders for serving (TF SavedModel, ONNX, LiteRT) "
        "into DESTINATION; see keras_siglip2.export for the layout",
    )
    export.add_argument("destination", help="directory to write the artefacts to")
    export.add_argument(
        "--preset", required=True,
        help="preset name, hf:// or kaggle:// handle, URL or path of the checkpoint",
    )
    export.add_argument(
        "--format", default="tf_saved_model", choices=("tf_saved_model", "onnx", "litert"),
        help="artefact format (default: tf_saved_model), from any Keras backend: where the "
        "current one cannot write it, a TensorFlow child process does "
        "(keras_siglip2.export.support)",
    )
    export.add_argument(
        "--max-num-patches", type=_positive_int,
        help="NaFlex only: the fixed number of patches per image (default: the preset's)",
    )
    export.add_argument(
        "--encoders", nargs="+", choices=("image", "text"), default=("image", "text"),
        help="which towers to export (default: both)",
    )
    export.set_defaults(run=_export)
    args = parser.parse_args(argv)
    if args.command == "embed" and bool(args.images) == bool(args.texts):
        embed.error("give either --images or --texts (not both)")
    try:
        args.run(args)
    except KeyboardInterrupt:
        if args.debug:
            raise
        parser.exit(130, "error: interrupted\n")
    except Exception as e:  # every error is one line; --debug shows the traceback
        if args.debug:
            raise
        message = _one_line(e)
        if not isinstance(e, (ValueError, OSError, RuntimeError, ArithmeticError)):
            message = f"{type(e).__name__}: {message} (rerun with --debug for the traceback)"
        parser.exit(2, f"error: {message}\n")


if __name__ == "__main__":
    main()
