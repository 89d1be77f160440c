"""Batch inputs and outputs on local paths or fsspec URLs (s3://, gs://, ...), committed atomically.

Local paths use the os module; a URL goes through fsspec, imported only when a URL is used, so
shared/ stays importable with the standard library alone (the add-on vendors it). S3 has no
rename, so an output becomes visible in one step instead: a single file is one PUT (readers see
all of it or nothing), and a folder is uploaded with its marker file (meta.json) last, because
"the marker exists" is the whole done test. Credentials and endpoints come the usual way
(AWS_* / FSSPEC_S3_* variables, ~/.aws). s3fs caches listings, so existence checks ask the
store itself.
"""
from __future__ import annotations

import os
import posixpath
import shutil
from typing import Callable, Iterable, Iterator

from .errors import BackendError


def is_url(path) -> bool:
    return "://" in str(path)


def iter_list(path: str, read_text: Callable[[str], Iterable[str]] | None = None) -> Iterator[str]:
    """Entries of a list file, one per line ('#' comments allowed), read line by line; relative
    entries are relative to the list file."""
    base = os.path.dirname(path)
    lines = read_text(path) if read_text else open(path, encoding="utf-8")
    try:
        for line in lines:
            entry = line.strip()
            if entry and not entry.startswith("#"):
                yield entry if is_url(entry) or os.path.isabs(entry) else relative_to(base, entry)
    except UnicodeDecodeError:
        raise BackendError("input_unreadable", f"{path}: not a text list of paths") from None
    finally:
        close = getattr(lines, "close", None)
        if close:
            close()


def iter_folder(root: str, suffixes: Iterable[str]) -> Iterator[str]:
    """Files under `root` whose suffix is one of `suffixes` (with the dot, lower case), in a
    stable order, one directory at a time."""
    suffixes = {s.lower() for s in suffixes}
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(files):
            if os.path.splitext(name)[1].lower() in suffixes:
                yield os.path.join(folder, name)


def _fs(url: str):
    from fsspec.core import url_to_fs

    return url_to_fs(url)


def relative_to(base: str, entry: str) -> str:
    """A list entry relative to the list's folder (a path or a URL, `..` resolved in URLs)."""
    if not is_url(base):
        return os.path.join(base, entry)
    protocol, rest = str(base).split("://", 1)
    return f"{protocol}://{posixpath.normpath(posixpath.join(rest, entry))}"


def join(root: str, *parts: str) -> str:
    if is_url(root):
        return "/".join([str(root).rstrip("/"), *parts])
    return os.path.join(root, *parts)


def exists(path: str) -> bool:
    if not is_url(path):
        return os.path.exists(path)
    fs, p = _fs(path)
    fs.invalidate_cache()
    return fs.exists(p)


def makedirs(path: str) -> None:
    if is_url(path):
        fs, p = _fs(path)
        fs.makedirs(p, exist_ok=True)  # a no-op below a bucket on object stores
    else:
        os.makedirs(path, exist_ok=True)


def read_lines(path: str):
    """Text lines of a local file or a URL, streamed."""
    if not is_url(path):
        return open(path, encoding="utf-8")
    import fsspec

    return fsspec.open(path, "rt", encoding="utf-8").open()


def is_dir(path: str) -> bool:
    if not is_url(path):
        return os.path.isdir(path)
    fs, p = _fs(path)
    return fs.isdir(p)


def walk_files(root: str, suffixes) -> Iterator[str]:
    """Files below a URL prefix with one of `suffixes`, in a stable order (one listing call
    per page on object stores)."""
    fs, p = _fs(root)
    protocol = root.split("://", 1)[0]
    suffixes = {s.lower() for s in suffixes}
    for found in sorted(fs.find(p)):
        if os.path.splitext(found)[1].lower() in suffixes:
            yield f"{protocol}://{found}"


def fetch(url: str, folder: str) -> str:
    """Download `url` into `folder` (same file name); returns the local path."""
    fs, p = _fs(url)
    local = os.path.join(folder, p.rstrip("/").rsplit("/", 1)[-1])
    fs.get_file(p, local)
    return local


def publish_file(local: str, url: str) -> None:
    """One PUT: the object appears whole or not at all."""
    fs, p = _fs(url)
    fs.put_file(local, p)


def publish_tree(local_dir: str, url: str, marker: str) -> None:
    """Upload every file of `local_dir` under `url`, the marker file last."""
    fs, p = _fs(url)
    files = []
    for folder, _, names in os.walk(local_dir):
        for name in names:
            rel = os.path.relpath(os.path.join(folder, name), local_dir).replace(os.sep, "/")
            files.append(rel)
    files.sort(key=lambda rel: rel == marker)
    if marker not in files:
        raise FileNotFoundError(f"{local_dir} has no {marker}")
    for rel in files:
        fs.put_file(os.path.join(local_dir, rel), f"{p.rstrip('/')}/{rel}")


def copy_out(local: str, dest: str) -> None:
    """Put a finished local file at `dest` (a path or URL) atomically."""
    if is_url(dest):
        publish_file(local, dest)
        return
    os.makedirs(os.path.dirname(dest) or ".", exist_ok=True)
    tmp = f"{dest}.tmp-{os.getpid()}"
    shutil.copyfile(local, tmp)
    os.replace(tmp, dest)


def iter_source(source: str, suffixes) -> Iterator[str]:
    """Input paths or URLs, streamed: an asset file, a folder or URL prefix (searched
    recursively for `suffixes`), a list file with one entry per line, or a JSON array (read
    whole: use a text list for millions of entries)."""
    import json

    source = str(source)
    suffixes = {s.lower() for s in suffixes}
    ext = os.path.splitext(source)[1].lower()
    if not exists(source):
        raise BackendError("input_not_found", f"{source} is neither a folder nor a list file")
    if is_dir(source):
        return walk_files(source, suffixes) if is_url(source) else iter_folder(source, suffixes)
    if ext in suffixes:
        return iter([source])
    if ext == ".json":
        try:
            with read_lines(source) as f:
                entries = json.loads(f.read())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise BackendError("input_unreadable", f"{source}: invalid JSON: {exc}") from None
        if not isinstance(entries, list) or not all(isinstance(e, str) for e in entries):
            raise BackendError("input_unreadable", f"{source}: expected a JSON array of paths")
        base = source.rsplit("/", 1)[0] if is_url(source) else os.path.dirname(source)
        return iter([e if is_url(e) or os.path.isabs(e) else relative_to(base, e) for e in entries])
    return iter_list(source, read_lines)
