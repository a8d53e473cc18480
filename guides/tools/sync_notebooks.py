"""Regenerates the Colab notebooks in `guides/notebooks/` from the guides' `.py` sources.

A guide is a keras.io-style script: a header docstring (`Title:`, `Author:`, `Description:`,
`Accelerator:` lines), then code, with prose in top-level triple-quoted strings. Each prose
block becomes a markdown cell and each stretch of code between them a code cell. The first
cell says where the package comes from (the project has no public release yet: a checkout of
it, at `./keras_siglip2`) and runs the first `!pip install ...` command that the guide's prose
names in backticks, which must install that checkout (`PACKAGE_INSTALL`, then any extra
packages the guide needs); where the prose names none, it runs `PACKAGE_INSTALL` alone.
Notebooks are written deterministically (no outputs, no execution counts, fixed metadata,
sorted keys), so regenerating them gives the same bytes.

    python guides/tools/sync_notebooks.py           # rewrite every notebook
    python guides/tools/sync_notebooks.py --check   # exit 1 if any is out of date
"""

import argparse
import ast
import json
import pathlib
import re
import sys
import textwrap

GUIDES = pathlib.Path(__file__).resolve().parents[1]
HEADER_KEYS = ("Title", "Author", "Description", "Accelerator")
INSTALL = re.compile(r"`(!pip install [^`]+)`")
# The one place the notebooks' install command is spelled (tests/test_notebooks.py reads it
# from here; a guide's Setup prose may repeat it, and `guide_cells` refuses another). No
# public release or repository address exists yet, so it installs a local checkout; not with
# `-e`, since a running Jupyter kernel only sees an editable install once restarted.
PACKAGE_INSTALL = "!pip install ./keras_siglip2"
SETUP_NOTE = (
    "# keras_siglip2 has no public release yet: this installs a checkout of it found at\n"
    "# ./keras_siglip2 (in Colab, upload a zip of the checkout in the Files pane, then run\n"
    "# `!unzip -q keras_siglip2.zip`). Skip it where these packages are installed already.\n"
)


class GuideFormatError(ValueError):
    """A guide that does not follow the format the notebooks are made from."""


def _header(text, name):
    """The header docstring's `Key: value` fields (a value may continue on the next lines)."""
    fields, key = {}, None
    for line in text.strip().splitlines():
        match = re.match(r"^(\w+): (.*)$", line)
        if match and match.group(1) in HEADER_KEYS:
            key = match.group(1)
            fields[key] = match.group(2).strip()
        elif key is not None and line.strip():
            fields[key] += " " + line.strip()
    missing = [k for k in HEADER_KEYS if k not in fields]
    if missing:
        raise GuideFormatError(
            f"{name}: the first docstring must hold the lines {', '.join(HEADER_KEYS)} "
            f"(`Key: value`); missing {missing}."
        )
    return fields


def _lines(text):
    """A cell's `source`: the text's lines, each but the last ending in a newline."""
    lines = text.split("\n")
    return [line + "\n" for line in lines[:-1]] + [lines[-1]]


def _cell(kind, text):
    if kind == "markdown":
        return {"cell_type": "markdown", "metadata": {}, "source": _lines(text)}
    return {"cell_type": "code", "execution_count": None, "metadata": {}, "outputs": [],
            "source": _lines(text)}


def guide_cells(source, name="guide"):
    """The notebook cells of a guide's source text, in order.

    Example:
    >>> cells = guide_cells('''\"\"\"
    ... Title: T
    ... Author: A
    ... Description: D
    ... Accelerator: None
    ... \"\"\"
    ...
    ... \"\"\"
    ... ## Setup
    ... `!pip install ./keras_siglip2 foo`
    ... \"\"\"
    ...
    ... x = 1
    ... ''')
    >>> [c["source"][-1] for c in cells[::2]]
    ['!pip install ./keras_siglip2 foo', '`!pip install ./keras_siglip2 foo`']
    >>> "".join(cells[-1]["source"])
    'x = 1'
    """
    tree = ast.parse(source)
    lines = source.split("\n")
    prose = [
        node for node in tree.body
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
        and isinstance(node.value.value, str)
    ]
    if not prose or prose[0] is not tree.body[0]:
        raise GuideFormatError(f"{name}: a guide starts with its header docstring.")
    header = _header(prose[0].value.value, name)
    install = " ".join((INSTALL.findall(source) or [PACKAGE_INSTALL])[0].split())
    if install.split()[:3] != PACKAGE_INSTALL.split():
        raise GuideFormatError(
            f"{name}: the first `!pip install ...` in the prose must install the checkout: "
            f"`{PACKAGE_INSTALL}` (then any extra packages), not `{install}`."
        )
    title = (
        f"# {header['Title']}\n\n"
        f"**Author:** {header['Author']}<br>\n"
        f"**Description:** {header['Description']}<br>\n"
        f"**Accelerator:** {header['Accelerator']}\n\n"
        f"Generated from `guides/{name}.py` in the keras_siglip2 checkout."
    )
    cells = [_cell("code", SETUP_NOTE + install), _cell("markdown", title)]
    start = prose[0].end_lineno
    for node in prose[1:] + [None]:
        stop = len(lines) if node is None else node.lineno - 1
        code = "\n".join(lines[start:stop]).strip("\n")
        if code.strip():
            cells.append(_cell("code", code))
        if node is not None:
            text = textwrap.dedent(node.value.value).strip("\n")
            if text.strip():
                cells.append(_cell("markdown", text))
            start = node.end_lineno
    return cells


def notebook(path):
    """The notebook (a dict in nbformat 4) of the guide at `path`."""
    path = pathlib.Path(path)
    cells = guide_cells(path.read_text(encoding="utf-8"), path.stem)
    metadata = {
        "colab": {"name": f"{path.stem}.ipynb", "provenance": [], "toc_visible": True},
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
        "language_info": {"name": "python"},
    }
    return {"cells": cells, "metadata": metadata, "nbformat": 4, "nbformat_minor": 4}


def render(nb):
    """The notebook's file contents: sorted keys, one-space indent, a final newline."""
    return json.dumps(nb, indent=1, sort_keys=True, ensure_ascii=False) + "\n"


def sync(guides=GUIDES, check=False):
    """Writes (or with `check`, compares) every notebook; returns the out-of-date paths.

    Notebooks without a guide count as out of date; `check=False` deletes them.
    """
    guides = pathlib.Path(guides)
    target = guides / "notebooks"
    expected = {
        target / f"{p.stem}.ipynb": render(notebook(p)) for p in sorted(guides.glob("*.py"))
    }
    stale = sorted(set(target.glob("*.ipynb")) - set(expected))
    changed = [
        path for path, text in expected.items()
        if not path.is_file() or path.read_text(encoding="utf-8") != text
    ]
    if not check:
        target.mkdir(exist_ok=True)
        for path in changed:
            path.write_text(expected[path], encoding="utf-8")
        for path in stale:
            path.unlink()
    return sorted(changed + stale)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true",
                        help="only report notebooks that differ from their guides (exit 1)")
    parser.add_argument("--guides", default=str(GUIDES), help="the guides directory")
    args = parser.parse_args(argv)
    out_of_date = sync(args.guides, check=args.check)
    for path in out_of_date:
        done = "wrote" if (pathlib.Path(args.guides) / f"{path.stem}.py").exists() else "removed"
        print(f"{'out of date' if args.check else done}: {path}")
    if args.check and out_of_date:
        print("Run `python guides/tools/sync_notebooks.py` to regenerate the notebooks.")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
