"""TensorFlow SavedModel of one encoder, with a raw-string endpoint for the text tower."""

import keras


def write_saved_model(model, path, tokenizer=None):
    """Writes `model` (from `encoders.py`) as a SavedModel directory at `path`.

    Endpoints: `serve` (and `serving_default`), taking the model's dict of named inputs;
    with `tokenizer` (a `SigLIP2Tokenizer`, text tower only) also `serve_text`, taking a
    1-D `tf.string` tensor `text` and tokenizing inside the graph. Both return the model's
    output dict.

    Example:
    >>> import tempfile, tensorflow as tf
    >>> inputs = {"x": keras.Input((3,), name="x")}
    >>> model = keras.Model(inputs, {"y": keras.layers.Dense(2)(inputs["x"])})
    >>> path = tempfile.mkdtemp()
    >>> if keras.config.backend() != "torch":  # Keras writes SavedModels from TF and JAX
    ...     write_saved_model(model, path)
    ...     reloaded = tf.saved_model.load(path)
    ...     assert reloaded.serve({"x": tf.zeros((4, 3))})["y"].shape == (4, 2)
    """
    import tensorflow as tf

    archive = keras.export.ExportArchive()
    specs = keras.tree.map_structure(
        lambda x: tf.TensorSpec((None, *x.shape[1:]), x.dtype, name=x.name), model.input
    )
    serve = archive.track_and_add_endpoint("serve", model, [specs])
    if tokenizer is not None:
        if set(specs) != {"token_ids"}:
            raise ValueError("A tokenizer endpoint only goes with the text encoder.")

        @tf.function(input_signature=[tf.TensorSpec((None,), tf.string, name="text")])
        def serve_text(text):
            return serve({"token_ids": tokenizer.tokenize(text)})

        serve_text.get_concrete_function()
        archive.add_endpoint("serve_text", serve_text)
        # The SentencePiece model is a TF resource the graph refers to; it must be saved.
        archive.track(tokenizer._sentence_piece)
    archive.write_out(str(path), verbose=False)
