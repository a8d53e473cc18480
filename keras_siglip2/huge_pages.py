"""Huge pages for training: `train` on the command line restarts itself with glibc's malloc
set to back its large blocks with 2 MiB pages.

Every training step, XLA's worker threads map a block of a few hundred MB afresh (351 MB in
the main job) and unmap it after the step. glibc cannot keep a block that size in a worker
thread's arena, whatever its thresholds. The first write to each 4 KiB page of the block
faults into the kernel: in the main job, about 100 M faults and a quarter of the CPU time.
With `GLIBC_TUNABLES=glibc.malloc.hugetlb=1` (glibc >= 2.35), glibc asks for transparent
huge pages on the blocks it maps. The main job then ran in 9 min 35 s instead of 13 min 59 s,
with the same figures to the last digit (docs/performance.md).

glibc reads `GLIBC_TUNABLES` only as a process starts. So `keras_siglip2.startup` calls
`restart_with_huge_pages()` for `train` before anything else loads. It replaces the process
with the same command, the variable added (`os.execve`). It does so only where the setting
can work: Linux with glibc >= 2.35, and transparent huge pages not `never`. It leaves the
variable alone where it already names `glibc.malloc.hugetlb`: `glibc.malloc.hugetlb=0` keeps
4 KiB pages. A program that trains through the library (`model.fit`, `main_job.train`) can
set the variable before Python starts.
"""

import os
import sys

TUNABLE = "glibc.malloc.hugetlb"
_THP_SETTING = "/sys/kernel/mm/transparent_hugepage/enabled"


def _glibc_version():
    try:
        return os.confstr("CS_GNU_LIBC_VERSION")  # "glibc 2.36"; fails off glibc
    except (AttributeError, ValueError, OSError):
        return None


def _transparent_huge_pages():
    try:
        with open(_THP_SETTING) as f:
            return f.read()  # "always [madvise] never": the chosen mode in brackets
    except OSError:
        return None


def environment_with_huge_pages(environ, glibc_version, transparent_huge_pages):
    """The environment to restart with, or None where huge pages cannot be had or the
    environment already says (`GLIBC_TUNABLES` names the tunable).

    Example:
    >>> environment_with_huge_pages({}, "glibc 2.36", "always [madvise] never")
    {'GLIBC_TUNABLES': 'glibc.malloc.hugetlb=1'}
    >>> environment_with_huge_pages({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"},
    ...                             "glibc 2.36", "[always] madvise never")
    {'GLIBC_TUNABLES': 'glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1'}
    >>> environment_with_huge_pages({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"},
    ...                             "glibc 2.36", "always [madvise] never")
    >>> environment_with_huge_pages({}, "glibc 2.31", "always [madvise] never")
    >>> environment_with_huge_pages({}, "glibc 2.36", "always madvise [never]")
    """
    if not glibc_version or not transparent_huge_pages or "[never]" in transparent_huge_pages:
        return None
    name, _, version = glibc_version.partition(" ")
    try:
        if name != "glibc" or tuple(int(v) for v in version.split(".")[:2]) < (2, 35):
            return None
    except ValueError:
        return None
    tunables = environ.get("GLIBC_TUNABLES", "")
    if any(t.split("=")[0] == TUNABLE for t in tunables.split(":")):
        return None
    return {**environ, "GLIBC_TUNABLES": ":".join(filter(None, [tunables, f"{TUNABLE}=1"]))}


def restart_with_huge_pages():
    """Replaces this process with the same command line and huge pages, where they can be
    had and the environment does not say otherwise; otherwise returns."""
    if not sys.platform.startswith("linux") or not sys.executable or not sys.orig_argv:
        return
    environ = environment_with_huge_pages(
        os.environ, _glibc_version(), _transparent_huge_pages())
    if environ is None:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execve(sys.executable, sys.orig_argv, environ)
    except OSError:  # cannot start again (a sandbox): go on with 4 KiB pages
        pass
