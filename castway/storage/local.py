"""Archive storage in a local directory (the embedded default).

Objects are plain files at ``root/<key>``, so the directory can be served or copied as
is. Writes are atomic: the bytes go to a temporary file in the destination directory,
are fsynced, and ``os.replace`` moves them over the old object, so a reader opens
either the whole old object or the whole new one; the directory is fsynced after the
rename. A content type or Cache-Control other than the defaults for the key
(``content_type_for(key)``, ``IMMUTABLE``) is kept in a sidecar ``.<name>.meta.json``
beside the object. Names starting with ``.`` are castway's own (temporary files,
sidecars): keys may not use them and listings skip them.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from castway.storage.base import IMMUTABLE, ObjectInfo, StorageError, content_type_for
from castway.storage.keys import check_key, check_prefix

logger = logging.getLogger(__name__)

_FILE_MODE = 0o644
_COPY_CHUNK = 1024 * 1024
_PUT_ATTEMPTS = 20  # a concurrent delete_prefix may prune the directory each time


def _check_range(start: int, end: int | None) -> None:
    if start < 0 or (end is not None and end < start):
        raise ValueError(f"invalid byte range {start}-{'' if end is None else end}")


class LocalStorage:
    """:class:`castway.storage.base.Storage` in the directory ``root`` (created if absent)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).expanduser().resolve()
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StorageError(f"cannot create storage directory {self.root}: {e}") from e

    def __repr__(self) -> str:
        return f"LocalStorage({str(self.root)!r})"

    # -- paths --

    def _path(self, key: str) -> Path:
        return self.root.joinpath(*check_key(key).split("/"))

    @staticmethod
    def _meta_path(path: Path) -> Path:
        return path.with_name(f".{path.name}.meta.json")

    def _key_of(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()

    # -- writing --

    def _write_atomic(self, path: Path, data: bytes | Path) -> None:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                if isinstance(data, Path):
                    with data.open("rb") as src:
                        shutil.copyfileobj(src, f, _COPY_CHUNK)
                else:
                    f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, _FILE_MODE)  # mkstemp makes 0600; objects are meant to be served
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    @staticmethod
    def _fsync_dir(directory: Path) -> None:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def put(self, key: str, data: bytes, *, content_type: str | None = None,
            cache_control: str | None = IMMUTABLE) -> None:
        self._put(key, data, content_type, cache_control)

    def put_file(self, key: str, path: Path, *, content_type: str | None = None,
                 cache_control: str | None = IMMUTABLE) -> None:
        """Copies the file in (the source stays); a missing or unreadable source is a
        StorageError like any failed write."""
        self._put(key, Path(path), content_type, cache_control)

    def _put(self, key: str, data: bytes | Path, content_type: str | None,
             cache_control: str | None) -> None:
        path = self._path(key)
        content_type = content_type or content_type_for(key)
        meta: bytes | None = None
        if content_type != content_type_for(key) or cache_control != IMMUTABLE:
            meta = json.dumps({"content_type": content_type,
                               "cache_control": cache_control}).encode()
        try:
            for attempt in range(_PUT_ATTEMPTS):
                try:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    self._write_atomic(path, data)
                    break
                except (FileNotFoundError, FileExistsError):
                    # A concurrent delete pruned the (then empty) directory between our
                    # mkdir and our write (or inside mkdir's own exists check): again.
                    if attempt == _PUT_ATTEMPTS - 1:
                        raise
            try:
                if meta is not None:
                    self._write_atomic(self._meta_path(path), meta)
                else:
                    self._meta_path(path).unlink(missing_ok=True)
                self._fsync_dir(path.parent)
            except FileNotFoundError:
                # A concurrent delete removed the new object and pruned its directory
                # after the rename: that delete is the later operation and stands.
                pass
        except OSError as e:
            logger.error("local storage write failed", extra={"key": key, "error": str(e)})
            raise StorageError(f"cannot write {key!r}: {e}") from e

    # -- reading --

    def get(self, key: str) -> bytes | None:
        path = self._path(key)
        try:
            return path.read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return None
        except OSError as e:
            raise StorageError(f"cannot read {key!r}: {e}") from e

    def get_range(self, key: str, start: int, end: int | None) -> bytes | None:
        _check_range(start, end)
        path = self._path(key)
        try:
            with path.open("rb") as f:
                f.seek(start)
                return f.read(-1 if end is None else end - start + 1)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return None
        except OSError as e:
            raise StorageError(f"cannot read {key!r}: {e}") from e

    def head(self, key: str) -> ObjectInfo | None:
        path = self._path(key)
        try:
            st = path.stat()
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as e:
            raise StorageError(f"cannot stat {key!r}: {e}") from e
        if not path.is_file():
            return None
        content_type: str | None = content_type_for(key)
        cache_control: str | None = IMMUTABLE
        try:
            meta = json.loads(self._meta_path(path).read_bytes())
            content_type = meta["content_type"]
            cache_control = meta["cache_control"]
        except FileNotFoundError:
            pass
        except (OSError, ValueError, KeyError, TypeError) as e:
            logger.warning("unreadable storage metadata; using defaults",
                           extra={"key": key, "error": str(e)})
        return ObjectInfo(key=key, size=st.st_size, content_type=content_type,
                          cache_control=cache_control)

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        check_prefix(prefix)
        base = self.root.joinpath(*prefix.split("/")[:-1])
        return self._list(prefix, base)

    def _list(self, prefix: str, base: Path) -> Iterator[ObjectInfo]:
        found: list[tuple[str, int]] = []

        def fail(e: OSError) -> None:
            if not isinstance(e, (FileNotFoundError, NotADirectoryError)):
                raise StorageError(f"cannot list {prefix!r}: {e}") from e

        # The last, possibly partial, segment of the prefix narrows the first level, so
        # listing "broadcasts/b1" does not walk every other broadcast.
        partial = prefix.rsplit("/", 1)[-1]
        for dirpath, dirnames, filenames in os.walk(base, onerror=fail):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            directory = Path(dirpath)
            if directory == base and partial:
                dirnames[:] = [d for d in dirnames if d.startswith(partial)]
                filenames = [f for f in filenames if f.startswith(partial)]
            for name in filenames:
                if name.startswith("."):
                    continue
                key = self._key_of(directory / name)
                if not key.startswith(prefix):
                    continue
                try:
                    found.append((key, (directory / name).stat().st_size))
                except FileNotFoundError:
                    continue  # deleted while listing
        # Code point order of str equals the UTF-8 byte order S3 lists in.
        found.sort()
        for key, size in found:
            yield ObjectInfo(key=key, size=size)

    # -- deleting --

    def _prune(self, directory: Path) -> None:
        """Remove now-empty directories up to (not including) the root."""
        while directory != self.root and self.root in directory.parents:
            try:
                directory.rmdir()
            except OSError:
                return
            directory = directory.parent

    def delete(self, key: str) -> None:
        path = self._path(key)
        try:
            path.unlink(missing_ok=True)
            self._meta_path(path).unlink(missing_ok=True)
        except (NotADirectoryError, IsADirectoryError):
            return
        except OSError as e:
            raise StorageError(f"cannot delete {key!r}: {e}") from e
        self._prune(path.parent)

    def delete_prefix(self, prefix: str) -> int:
        """Removes every object whose key starts with ``prefix`` (non-empty: wiping the
        whole store takes an explicit loop)."""
        check_prefix(prefix)
        if prefix == "":
            raise ValueError("refusing to delete every object: give a non-empty prefix")
        count = 0
        for info in list(self.list(prefix)):
            self.delete(info.key)
            count += 1
        return count

    # -- misc --

    def url_for(self, key: str) -> str | None:
        return self._path(key).as_uri()

    def ping(self) -> bool:
        return self.root.is_dir() and os.access(self.root, os.W_OK | os.X_OK)
