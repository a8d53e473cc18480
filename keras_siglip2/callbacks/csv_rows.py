"""The CSV files the training callbacks append to: one row at a time, read back as columns."""

import csv
import os


def append_row(path, row):
    """Appends the dict `row` to the CSV at `path`, writing the header first if it is new."""
    new = not os.path.exists(path)
    with open(path, "a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(row))
        if new:
            writer.writeheader()
        writer.writerow(row)


def read_columns(path, index, integers=()):
    """The CSV at `path` as a dict of columns, one row per value of the int column `index`
    (the last row written for it), in `index` order; `integers` columns are ints, the others
    floats.

    Example:
    >>> import tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "log.csv")
    >>> for row in ({"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.5}, {"step": 1, "loss": 3}):
    ...     append_row(path, row)
    >>> read_columns(path, "step")
    {'step': [1, 2], 'loss': [3.0, 1.5]}
    """
    with open(path, newline="") as f:
        rows = {int(r[index]): r for r in csv.DictReader(f)}
    keys = sorted(rows)
    columns = {index: keys}
    for key in rows[keys[0]] if keys else ():
        if key != index:
            convert = int if key in integers else float
            columns[key] = [convert(rows[k][key]) for k in keys]
    return columns
