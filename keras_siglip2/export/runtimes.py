"""Running an exported encoder with its format's own runtime (no Keras needed)."""


def load_exported(format, path):
    """One artefact of `export_encoders`, loaded by TensorFlow (`tf_saved_model`),
    onnxruntime (`onnx`) or the LiteRT interpreter (`litert`), as a function from a dict of
    numpy inputs to a dict of numpy outputs (names as in `export.json`).

    Example:
    >>> import tempfile
    >>> from keras_siglip2.export import export_encoders
    >>> from keras_siglip2.testing import toy_backbone
    >>> backbone = toy_backbone(image_size=32, patch_size=16, sequence_length=8)
    >>> format = "onnx" if keras.config.backend() == "torch" else "tf_saved_model"
    >>> paths = export_encoders(backbone, tempfile.mkdtemp(), format, encoders=("text",))
    >>> text_encoder = load_exported(format, paths["text"])
    >>> text_encoder({"token_ids": np.ones((2, 8), "int32")})["embeddings"].shape
    (2, 8)
    """
    if format == "tf_saved_model":
        import tensorflow as tf

        loaded = tf.saved_model.load(str(path))
        return lambda inputs: {k: v.numpy() for k, v in loaded.serve(inputs).items()}
    if format == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path))
        names = [o.name for o in session.get_outputs()]
        return lambda inputs: dict(zip(names, session.run(None, inputs)))
    if format == "litert":
        from ai_edge_litert.interpreter import Interpreter

        runner = Interpreter(model_path=str(path)).get_signature_runner()
        return lambda inputs: runner(**inputs)
    raise ValueError(f"Unknown format {format!r}: use 'tf_saved_model', 'onnx' or 'litert'.")
