"""Parameter counts of a backbone configuration, computed without building it."""


def _encoder(width, num_layers, intermediate_dim):
    attention = 4 * (width * width + width)
    mlp = 2 * width * intermediate_dim + intermediate_dim + width
    return num_layers * (attention + mlp + 4 * width) + 2 * width


def count_params(backbone_config):
    """Number of weights of `build_backbone(backbone_config)`, as `count_params()`.

    Example:
    >>> from keras_siglip2.presets import PRESETS
    >>> count_params(PRESETS["siglip2_base_patch16_224"]["backbone"])
    375187970
    """
    v, t = backbone_config["vision_encoder"], backbone_config["text_encoder"]
    width, p = v["hidden_dim"], v["patch_size"]
    if backbone_config["naflex"]:
        positions = v["position_grid_size"] ** 2
    else:
        positions = (v["image_size"] // p) ** 2
    vision = (
        (p * p * 3 + 1) * width  # patch embedding
        + positions * width
        + _encoder(width, v["num_layers"], v["intermediate_dim"])
        + width  # MAP probe
        + _encoder(width, 1, v["intermediate_dim"]) - 2 * width * 2  # MAP block, 1 norm
    )
    tw = t["hidden_dim"]
    text = (
        (t["vocabulary_size"] + t["sequence_length"]) * tw
        + _encoder(tw, t["num_layers"], t["intermediate_dim"])
        + (tw + 1) * t["embedding_dim"]
    )
    return vision + text + 2  # + logit scale and bias
