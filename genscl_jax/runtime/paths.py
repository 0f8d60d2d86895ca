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
