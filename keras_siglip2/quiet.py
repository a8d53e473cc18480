"""A quiet command line: no backend log lines on the terminal unless `--verbose`.

Under `python -m keras_siglip2` and `keras-siglip2`, unless `--verbose` comes before the
command, `keras_siglip2.startup` calls `quiet_backends()` before any backend loads. It:

- sets the log levels the backends read as they load, each only where the environment does
  not set it already: TF_CPP_MIN_LOG_LEVEL=3 (TensorFlow, and XLA inside jaxlib: errors
  that matter reach Python as exceptions) and the Python loggers of absl, TensorFlow and
  JAX (errors only; JAX_LOGGING_LEVEL keeps JAX's);
- filters stderr for what no setting reaches (`NOISE`). TensorFlow 2.21 logs its oneDNN and
  CUDA notices through absl while it loads, before it reads TF_CPP_MIN_LOG_LEVEL; the
  SentencePiece inside tensorflow-text prints `normalizer.cc(51) LOG(INFO)
  precompiled_charsmap is empty` to stderr whenever a tokenizer op loads a vocabulary with
  identity normalisation (the embedded dataset's, Gemma's), from tf.data's threads, and has
  no log-level setting (the `sentencepiece` package's `set_min_log_level` sets its own copy
  only, which does not print these). Only a file-descriptor-level filter reaches them.
"""

import atexit
import logging
import os
import re
import subprocess
import sys

# Lines the backends' C++ code writes to stderr by itself: absl/glog INFO and WARNING lines
# ("I0000 00:00:1796569276.774821   30099 port.cc:153] oneDNN custom operations are on...";
# before absl's InitializeLog the seconds count from 1970), absl's note on them, and
# SentencePiece's INFO and WARNING lines. Errors (E, F) and everything else (Python's
# warnings and tracebacks, our own messages) pass.
NOISE = re.compile(
    r"(?:[IW]\d{4} \d\d:\d\d:\d+\.\d+ +\d+ \S+:\d+\] "
    r"|WARNING: All log messages before absl::InitializeLog\(\) is called"
    r"|\w+\.cc\(\d+\) LOG\((?:INFO|WARNING)\) )"
)

# The filter: a child process, so that what a crash writes last (a fatal log line, a
# traceback) still comes through after this process is gone.
_FILTER = """\
import re, signal, sys
signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C stops the command, which reports it
noise = re.compile(sys.argv[1].encode())
for line in sys.stdin.buffer:
    if not noise.match(line):
        sys.stdout.buffer.write(line)
        sys.stdout.buffer.flush()
"""


def quiet_backends(filter_stderr=True):
    """Sets the backends' log levels, where the environment leaves them unset, and filters
    their log lines out of stderr for the rest of the process (`filter_stderr`)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import absl.logging

    absl.logging.set_verbosity(absl.logging.ERROR)
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    if "JAX_LOGGING_LEVEL" not in os.environ:
        logging.getLogger("jax").setLevel(logging.ERROR)
    if filter_stderr:
        _filter_stderr()


def _filter_stderr():
    """Sends file descriptor 2 through the `_FILTER` child until this process exits."""
    if os.name != "posix":
        return
    try:
        sys.stderr.flush()
        read, write = os.pipe()
        child = subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", _FILTER, NOISE.pattern], stdin=read, stdout=2,
        )
    except (OSError, ValueError):  # no stderr, no processes: leave stderr as it is
        return
    os.close(read)
    stderr = os.dup(2)
    os.dup2(write, 2)
    os.close(write)

    def restore():
        try:
            sys.stderr.flush()
        except (OSError, ValueError):
            pass
        os.dup2(stderr, 2)  # the pipe's last writer: the child reads to its end and exits
        os.close(stderr)
        try:
            child.wait(timeout=10)
        except subprocess.TimeoutExpired:  # a process this one started still holds the pipe
            pass

    atexit.register(restore)

