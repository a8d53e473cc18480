"""Fetching checkpoint files by URL into a local cache, with a fast offline failure."""

import os
import pathlib
import socket
import tempfile
import threading
import urllib.parse

import keras

CACHE_ENV_VAR = "KERAS_SIGLIP2_CACHE"


class DownloadError(OSError):
    """A remote checkpoint could not be fetched."""


def is_url(path):
    """Whether `path` names a remote file (`http(s)://` or `gs://`).

    >>> is_url("gs://big_vision/siglip2/siglip2_b16_224.npz"), is_url("/tmp/x.npz")
    (True, False)
    """
    return isinstance(path, str) and path.startswith(("http://", "https://", "gs://"))


def to_https(url):
    """Maps `gs://bucket/object` to its public HTTPS address; other URLs unchanged.

    >>> to_https("gs://big_vision/siglip2/siglip2_b16_224.npz")
    'https://storage.googleapis.com/big_vision/siglip2/siglip2_b16_224.npz'
    """
    if url.startswith("gs://"):
        return "https://storage.googleapis.com/" + url[len("gs://"):]
    return url


def cache_dir():
    """`$KERAS_SIGLIP2_CACHE`, else `~/.cache/keras_siglip2`."""
    return pathlib.Path(
        os.environ.get(CACHE_ENV_VAR) or pathlib.Path.home() / ".cache" / "keras_siglip2"
    )


def cached_path(url, cache=None):
    """Where `download(url)` keeps the file: `<cache>/<host>/<path of the URL>`.

    >>> import pathlib
    >>> cached_path("gs://big_vision/siglip2/a.npz", cache="/c").as_posix()
    '/c/storage.googleapis.com/big_vision/siglip2/a.npz'
    """
    parts = urllib.parse.urlsplit(to_https(url))
    relative = [p for p in parts.path.split("/") if p not in ("", ".", "..")]
    if not parts.hostname or not relative:
        raise ValueError(f"Cannot derive a file name from the URL {url!r}.")
    return pathlib.Path(cache if cache is not None else cache_dir(), parts.hostname, *relative)


def check_reachable(host, port, timeout):
    """Resolves `host` and connects to `port`, raising `OSError` after about `timeout` s.

    A download is only started after this, so an offline machine fails fast.
    """
    _resolve_host(host, port, timeout)
    socket.create_connection((host, port), timeout).close()


def _resolve_host(host, port, timeout):
    """Resolves `host`, raising `OSError` after `timeout` s (getaddrinfo has no timeout)."""
    # getaddrinfo ignores socket timeouts; on a machine with a stalled resolver
    # it can block for a minute, so it runs in a thread we stop waiting for.
    result = {}

    def resolve():
        try:
            result["ok"] = socket.getaddrinfo(host, port)
        except OSError as e:
            result["error"] = e

    thread = threading.Thread(target=resolve, daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise OSError(f"resolving {host!r} took more than {timeout:g} s")
    if "error" in result:
        raise result["error"]


def download(url, cache=None, timeout=10.0):
    """Returns a local path to the file at `url`, downloading it once into the cache.

    `gs://` URLs are read over HTTPS from storage.googleapis.com (public
    buckets only). The file is fetched with `keras.utils.get_file` under a
    temporary name and renamed when complete, so an interrupted download never
    leaves a truncated file behind. The host is resolved and connected to
    first, so without network access this fails within about `timeout`
    seconds with a `DownloadError` that says where to put a copy fetched
    elsewhere.

    Args:
        url: `https://...`, `http://...` or `gs://bucket/...`.
        cache: cache folder; default `$KERAS_SIGLIP2_CACHE` or `~/.cache/keras_siglip2`.
        timeout: seconds allowed for resolving the host and connecting to it.

    Example:
    >>> path = download("gs://big_vision/siglip2/siglip2_b16_224.npz")  # doctest: +SKIP
    >>> path.name  # doctest: +SKIP
    'siglip2_b16_224.npz'
    """
    https_url = to_https(url)
    target = cached_path(url, cache)
    if target.is_file():
        return target
    parts = urllib.parse.urlsplit(https_url)
    try:
        check_reachable(
            parts.hostname, parts.port or (443 if parts.scheme == "https" else 80), timeout
        )
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, partial = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
        os.close(fd)
        try:
            # An absolute `cache_subdir` is where get_file puts the file; it deletes
            # a partial file itself when the transfer fails.
            keras.utils.get_file(
                fname=os.path.basename(partial), origin=https_url,
                cache_subdir=str(target.parent), force_download=True,
            )
            os.replace(partial, target)
        finally:
            pathlib.Path(partial).unlink(missing_ok=True)
    except Exception as e:  # get_file reports HTTP and URL errors as a bare Exception.
        raise DownloadError(
            f"Could not download {https_url}: {e}. If this machine is offline, "
            f"download the file elsewhere (e.g. `curl -O {https_url}`), copy it "
            f"here and pass its local path instead of the URL, or put it at "
            f"{target} (the cache folder is set by ${CACHE_ENV_VAR})."
        ) from e
    return target
