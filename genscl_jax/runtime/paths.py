"""Every path the project reads or writes, local or a URL (gs://bucket/dir, any scheme etils.epath knows).

One layer, etils.epath, for workdirs, checkpoints, summary.json, teachers and pretrained workdirs. URLs are never
turned into local paths: os.path.abspath("gs://b/run") is "<cwd>/gs:/b/run", a local directory that silently
takes the place of the bucket.

Which client epath uses for gs://: TensorFlow's GCS file system when TensorFlow is installed, else gcsfs
(EPATH_USE_TF=false picks gcsfs too; the tests do, since TensorFlow's client cannot be pointed at a local server).
"""

from __future__ import annotations

import os

from etils import epath


def is_url(path: str | os.PathLike) -> bool:
    """gs://..., s3://...: a location no local file call can reach."""
    return "://" in os.fspath(path)


def join(base: str | os.PathLike, *parts: str) -> str:
    """base/part/...; a URL stays a URL."""
    return os.fspath(epath.Path(base).joinpath(*parts))


def for_orbax(directory: str | os.PathLike) -> str:
    """What orbax is given: a URL unchanged, a local path absolute (orbax requires that)."""
    directory = os.fspath(directory)
    return directory if is_url(directory) else os.path.abspath(directory)


def is_dir(path: str | os.PathLike) -> bool:
    return epath.Path(path).is_dir()


def exists(path: str | os.PathLike) -> bool:
    return epath.Path(path).exists()


def read_text(path: str | os.PathLike) -> str:
    return epath.Path(path).read_text()


def write_text(path: str | os.PathLike, text: str) -> None:
    """Writes `text` so a reader never sees half of it: an object store publishes an object only once its upload
    is complete; a local file is written beside its final name and renamed over it."""
    target = epath.Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    if is_url(path):
        target.write_text(text)
        return
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, target)


def move_dir(source: str | os.PathLike, destination: str | os.PathLike) -> None:
    """Moves the directory `source` to `destination` (which must not exist), creating its parent.

    Locally one rename. An object store has no directories to rename: every object is copied, then the source's
    objects are removed, its commit marker (orbax's commit_success.txt) first, so a move cut short leaves a source
    that no reader takes for a complete checkpoint and a destination that is at worst incomplete.
    """
    source, destination = epath.Path(source), epath.Path(destination)
    if destination.exists():
        raise FileExistsError(f"{destination} exists")
    if not is_url(source):
        destination.parent.mkdir(parents=True, exist_ok=True)
        os.rename(source, destination)
        return
    files = list(_files_under(source))
    for path in files:
        target = destination / path.relative_to(source)
        target.parent.mkdir(parents=True, exist_ok=True)
        path.copy(target)
    for path in sorted(files, key=lambda p: p.name != "commit_success.txt"):
        path.unlink()
    if source.exists():
        source.rmtree()


def _files_under(directory: epath.Path):
    """Every file below `directory`, one listing per folder (epath refuses a recursive glob on object stores)."""
    for path in directory.iterdir():
        if path.is_dir():
            yield from _files_under(path)
        else:
            yield path
