"""What the command line does first, before any backend loads.

`python -m keras_siglip2` and `keras-siglip2` import the package first, and its `__init__`
imports this module before anything else. Under the command line it:

- restarts `train` with huge pages where they help (`keras_siglip2.huge_pages`);
- keeps the backends' log lines off the terminal unless `--verbose` comes before the command
  (`keras_siglip2.quiet`).

In any other program (a script or notebook that imports keras_siglip2, the tests) it does
nothing.
"""

import os
import sys

from keras_siglip2 import huge_pages, quiet


def started_from_command_line(argv=None, orig_argv=None):
    """True while `python -m keras_siglip2 ...` or the `keras-siglip2` script starts.

    Example:
    >>> started_from_command_line(["-m", "train"], ["python", "-m", "keras_siglip2", "train"])
    True
    >>> started_from_command_line(["-m"], ["python", "-m", "pytest"])
    False
    >>> started_from_command_line(["/venv/bin/keras-siglip2", "train"], [])
    True
    """
    argv = getattr(sys, "argv", []) if argv is None else argv
    orig_argv = getattr(sys, "orig_argv", []) if orig_argv is None else orig_argv
    if argv[:1] == ["-m"]:  # `python -m <module>` while Python imports the module's package
        pairs = zip(orig_argv, [*orig_argv[1:], ""])
        return any(a == "-mkeras_siglip2" or (a, b) == ("-m", "keras_siglip2") for a, b in pairs)
    return bool(argv) and os.path.basename(argv[0]) == "keras-siglip2"


def split_command(args):
    """The options before the command, and the command (None if there is none yet), in
    `args` (the arguments after the program). The options there take no values.

    Example:
    >>> split_command(["--verbose", "train", "--steps", "10"])
    (['--verbose'], 'train')
    >>> split_command(["--help"])
    (['--help'], None)
    """
    for i, arg in enumerate(args):
        if not arg.startswith("-"):
            return list(args[:i]), arg
    return list(args), None


def on_command_line_start():
    """Restarts with huge pages and quiets the backends, if the command line is starting."""
    if not started_from_command_line():
        return
    options, command = split_command(sys.argv[1:])
    if command == "train":
        huge_pages.restart_with_huge_pages()  # returns only where it does not restart
    if "--verbose" not in options:
        quiet.quiet_backends()


on_command_line_start()
