"""A linear classifier fitted in closed form: ridge regression onto one-hot labels.

Features and targets are centred, so the bias is not shrunk; the penalty is
`l2_regularization` × the mean feature variance, so it does not depend on the features'
scale. The fit is deterministic, needs one pass over the training data (the D × D and D × C
moments are accumulated, never the features) and one D × D solve; a class is predicted by the
largest score. Frequent classes pull a least-squares classifier more than a logistic one would.
"""

import numpy as np

from keras_siglip2.evaluation.batches import class_indices


def fit_ridge_classifier(batches, num_classes, l2_regularization=1e-3):
    """(weights (D, C), bias (C,), number of training examples) of the ridge classifier.

    `batches`: an iterable of (features (M, D), labels (M,) int in [0, num_classes)) pairs.
    Predict with `(features @ weights + bias).argmax(-1)`.

    Example:
    >>> features = np.array([[0.0, 1.0], [0.1, 0.9], [1.0, 0.0], [0.9, 0.2]])
    >>> weights, bias, count = fit_ridge_classifier([(features, np.array([0, 0, 1, 1]))], 2)
    >>> (features @ weights + bias).argmax(-1).tolist()
    [0, 0, 1, 1]
    """
    count, moments = 0, None
    for features, labels in batches:
        features = np.asarray(features, "float64")
        targets = np.eye(num_classes)[class_indices(labels, num_classes)]
        if moments is None:
            dim = features.shape[1]
            moments = [np.zeros(dim), np.zeros(num_classes), np.zeros((dim, dim)),
                       np.zeros((dim, num_classes))]
        for total, value in zip(moments, (features.sum(0), targets.sum(0),
                                          features.T @ features, features.T @ targets)):
            total += value
        count += len(targets)
    if count == 0:
        raise ValueError("The linear probe's training set has no labelled examples.")
    sum_x, sum_y, xx, xy = moments
    mean_x, mean_y = sum_x / count, sum_y / count
    covariance = xx - count * np.outer(mean_x, mean_x)
    cross = xy - count * np.outer(mean_x, mean_y)
    scale = max(np.trace(covariance) / len(covariance), np.finfo("float64").tiny)
    weights = np.linalg.solve(covariance + l2_regularization * scale * np.eye(len(covariance)),
                              cross)
    return weights, mean_y - mean_x @ weights, count
