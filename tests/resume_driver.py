"""`python tests/resume_driver.py POINT TRAIN_ARGS...`: `python -m keras_siglip2 train
TRAIN_ARGS` that SIGKILLs itself at POINT, for tests/test_resume.py.

POINT is `begin:N` (as step N is about to run), `end:N` (step N has run and been logged),
`backup:E` (half-way through writing epoch E's backup), or `checkpoint` (half-way through
writing the final checkpoint).
"""

import os
import signal
import sys

import keras

from keras_siglip2 import main_job
from keras_siglip2.__main__ import main


def die():
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def step(model):
    return int(keras.ops.convert_to_numpy(model.optimizer.iterations))


point, argv = sys.argv[1], sys.argv[2:]
kind, _, value = point.partition(":")
if kind in ("begin", "end"):

    class Killer(main_job.StepLog):
        def on_train_batch_begin(self, batch, logs=None):
            super().on_train_batch_begin(batch, logs)
            if kind == "begin" and step(self.model) == int(value) - 1:
                die()

        def on_train_batch_end(self, batch, logs=None):
            super().on_train_batch_end(batch, logs)
            if kind == "end" and step(self.model) == int(value):
                die()

    main_job.StepLog = Killer
elif kind == "backup":
    save_weights = keras.Model.save_weights

    def save_half_and_die(self, filepath, *args, **kwargs):
        save_weights(self, filepath, *args, **kwargs)
        if f"epoch-{int(value):05d}" in os.fspath(filepath):
            with open(filepath, "rb+") as f:
                f.truncate(os.path.getsize(filepath) // 2)
            die()

    keras.Model.save_weights = save_half_and_die
elif kind == "checkpoint":
    save_checkpoint = main_job.save_checkpoint

    def save_and_die(directory, backbone, *args):
        backbone.save_to_preset(str(directory))
        die()

    main_job.save_checkpoint = save_and_die
else:
    raise SystemExit(f"unknown kill point {point!r}")
main(["train", *argv])
raise SystemExit(f"{point} was never reached")
