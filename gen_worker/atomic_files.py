"""Writes that a crash or kill can never leave half-done under the final name."""
import json
import os
from typing import IO, Any, Callable

from gen_worker.naming import temp_name


def _write_temp(path: str, write: Callable[[IO[bytes]], object]) -> str:
    folder, name = os.path.split(path)
    temp = os.path.join(folder, temp_name(name, os.getpid()))
    try:
        with open(temp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
    except OSError as err:  # ENOSPC from write() names no file: name the one being written
        _remove_quietly(temp)
        if err.filename in (None, temp):
            err.filename = path
        raise
    except BaseException:
        _remove_quietly(temp)
        raise
    return temp


def _remove_quietly(path: str) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


def replace_file(path: str, data: bytes) -> None:
    """Write data to path atomically, replacing any older version (for reports and records)."""
    temp = _write_temp(path, lambda f: f.write(data))
    try:
        os.replace(temp, path)
    except BaseException:
        _remove_quietly(temp)
        raise


def replace_json(path: str, obj: Any) -> None:
    # allow_nan=False: NaN or Infinity would make the file no JSON; a value that has one is a bug to see
    replace_file(path, (json.dumps(obj, indent=2, ensure_ascii=False, allow_nan=False) + "\n").encode("utf-8"))


def read_json_if_any(path: str) -> Any:
    """A JSON file another process writes with replace_json: its content, or None if not there yet."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (FileNotFoundError, ValueError):
        return None


def create_once(path: str, write: Callable[[IO[bytes]], object]) -> bool:
    """Write a new file atomically, never replacing an existing one.

    `write(fileobj)` fills a temporary file; a hard link then gives it its final name, which fails
    if the name exists (another run made it first): an existing image is never overwritten.
    Returns False when the file already existed.
    """
    temp = _write_temp(path, write)
    try:
        try:
            os.link(temp, path)
        except FileExistsError:
            return False
        except OSError:
            # Some file systems have no hard links: fall back to a checked rename.
            if os.path.exists(path):
                return False
            os.rename(temp, path)
            return True
        return True
    finally:
        _remove_quietly(temp)
