"""The private Keras and keras-hub internals the package relies on, all in one place.

Neither library exports these. They are tested with the Keras and keras-hub versions that
pyproject.toml allows; a release that moves or changes one breaks this module only, and
the fix belongs here.
"""

from keras.src.backend.common import global_state
from keras.src.backend.common.stateless_scope import in_stateless_scope
from keras.src.backend.common.symbolic_scope import in_symbolic_scope
from keras_hub.src.utils.preset_utils import (
    PREPROCESSOR_CONFIG_FILE,
    TASK_CONFIG_FILE,
    TASK_WEIGHTS_FILE,
    KerasPresetLoader,
    get_file,
)

__all__ = [
    "PREPROCESSOR_CONFIG_FILE",
    "TASK_CONFIG_FILE",
    "TASK_WEIGHTS_FILE",
    "KerasPresetLoader",
    "get_file",
    "in_keras_call_or_scope",
]


def in_keras_call_or_scope():
    """Whether a layer's call, a `keras.StatelessScope` or a symbolic scope is running.

    Example:
    >>> import keras
    >>> in_keras_call_or_scope()
    False
    >>> with keras.StatelessScope():
    ...     in_keras_call_or_scope()
    True
    """
    return (
        global_state.get_global_attribute("current_call_ctx") is not None
        or in_stateless_scope()
        or in_symbolic_scope()
    )
