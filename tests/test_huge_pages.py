"""`train` on the command line restarts itself with huge pages (keras_siglip2.huge_pages)."""

import os
import subprocess
import sys

import pytest

from keras_siglip2 import huge_pages

# Each Python process started with this folder on its path appends its GLIBC_TUNABLES (or
# "-") to the file named by STARTS_FILE: one line per start, so a restart shows as two.
_SITECUSTOMIZE = """\
import os
with open(os.environ["STARTS_FILE"], "a") as f:
    f.write(os.environ.get("GLIBC_TUNABLES", "-") + "\\n")
"""


def _starts(tmp_path, args, **environ):
    (tmp_path / "site").mkdir(exist_ok=True)
    (tmp_path / "site" / "sitecustomize.py").write_text(_SITECUSTOMIZE)
    starts = tmp_path / f"starts_{len(list(tmp_path.glob('starts_*')))}.txt"
    env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
    env.update(environ, STARTS_FILE=str(starts),
               PYTHONPATH=os.pathsep.join(
                   filter(None, [str(tmp_path / "site"), os.environ.get("PYTHONPATH")])))
    result = subprocess.run([sys.executable, "-m", "keras_siglip2", *args], env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return starts.read_text().splitlines()


def test_train_restarts_once_with_huge_pages_where_glibc_can(tmp_path):
    environ = huge_pages.environment_with_huge_pages(
        {}, huge_pages._glibc_version(), huge_pages._transparent_huge_pages())
    if environ is None:
        pytest.skip("no glibc >= 2.35 with transparent huge pages here")
    assert _starts(tmp_path, ["train", "--help"]) == ["-", "glibc.malloc.hugetlb=1"]
    # Other tunables are kept; the user's own choice of the tunable is left alone.
    assert _starts(tmp_path, ["--verbose", "train", "--help"],
                   GLIBC_TUNABLES="glibc.malloc.arena_max=4") == [
        "glibc.malloc.arena_max=4", "glibc.malloc.arena_max=4:glibc.malloc.hugetlb=1"]
    assert _starts(tmp_path, ["train", "--help"], GLIBC_TUNABLES="glibc.malloc.hugetlb=0") == [
        "glibc.malloc.hugetlb=0"]
    # Only `train` restarts.
    assert _starts(tmp_path, ["presets"]) == ["-"]


def test_no_restart_where_glibc_cannot_give_huge_pages():
    thp = "always [madvise] never"
    assert huge_pages.environment_with_huge_pages({}, None, thp) is None  # not glibc
    assert huge_pages.environment_with_huge_pages({}, "glibc 2.34", thp) is None
    assert huge_pages.environment_with_huge_pages({}, "glibc 2.36", None) is None  # no THP
    assert huge_pages.environment_with_huge_pages({}, "glibc 2.36", "[never]") is None
    assert huge_pages.environment_with_huge_pages({}, "glibc 3.0", thp) == {
        "GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"}
    assert huge_pages.environment_with_huge_pages(
        {"GLIBC_TUNABLES": "glibc.malloc.hugetlb=2"}, "glibc 2.36", thp) is None
