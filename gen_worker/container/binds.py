"""Which host paths a container sees, and where: binds, path translation, visibility checks.

Every path a worker needs is bound at the same path inside (SRC:SRC), so nothing has to be
translated. A --container_bind SRC:DST that covers one of them moves it to DST instead: the
worker is then given the translated path. Plain functions over absolute, normalized paths.
"""
import os
from dataclasses import dataclass
from typing import Iterable, Iterator, Sequence
from gen_worker.errors import T2IError

# Binding one of these (or a parent, such as / or /opt) would hide the image's own files.
RESERVED = ("/bin", "/dev", "/etc", "/lib", "/lib64", "/opt/t2i-batch", "/proc", "/sbin", "/sys", "/usr")
MAX_SCANNED_FILES = 10000  # symlink scan of a model folder: diffusers folders have tens of files


class BindError(T2IError):
    pass


@dataclass(frozen=True)
class Bind:
    src: str  # host path (absolute)
    dst: str  # path inside the container (absolute)


def is_under(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def parse_bind(text: str) -> Bind:
    """--container_bind SRC[:DST] -> Bind; SRC must exist on this host."""
    src, _, dst = text.partition(":")
    if not src or ":" in dst:
        raise BindError(f"--container_bind {text!r}: expected SRC or SRC:DST (paths without ':')")
    src = os.path.abspath(os.path.expanduser(src))
    if not os.path.exists(src):
        raise BindError(f"--container_bind {text!r}: {src} does not exist")
    if dst and not os.path.isabs(dst):
        raise BindError(f"--container_bind {text!r}: DST must be an absolute path")
    return Bind(src, os.path.normpath(dst) if dst else src)


def _longest(binds: Iterable[Bind], path: str, side: str) -> Bind | None:
    matches = [b for b in binds if is_under(path, getattr(b, side))]
    return max(matches, key=lambda b: len(getattr(b, side)), default=None)


def to_container(path: str, binds: Iterable[Bind]) -> str | None:
    """Where host `path` is inside the container (None: not bound)."""
    bind = _longest(binds, path, "src")
    return None if bind is None else bind.dst + path[len(bind.src):] if path != bind.src else bind.dst


def to_host(path: str, binds: Iterable[Bind]) -> str | None:
    """Which host path the container's `path` shows (None: the image's own file)."""
    bind = _longest(binds, path, "dst")
    return None if bind is None else bind.src + path[len(bind.dst):] if path != bind.dst else bind.src


def plan_binds(needed: Iterable[str], user_binds: Iterable[Bind]) -> list[Bind]:
    """The user's binds, then SRC:SRC for every needed path no bind covers yet (parents first)."""
    binds = list(user_binds)
    for path in sorted(set(needed), key=len):
        if to_container(path, binds) is None:
            binds.append(Bind(path, path))
    return binds


def _same(a: str | None, b: str) -> bool:
    return a is not None and os.path.realpath(a) == os.path.realpath(b)


def check_binds(binds: Sequence[Bind]) -> None:
    for b in binds:
        if ":" in b.src or ":" in b.dst or "," in b.src or "," in b.dst:
            raise BindError(f"cannot bind {b.src}: container runtimes split bind specs at ':' and ','; "
                            "rename the folder or bind a parent with --container_bind")
        hidden = [r for r in RESERVED if is_under(r, b.dst)]
        if hidden or any(is_under(b.dst, r) for r in ("/proc", "/sys", "/dev")):
            raise BindError(f"cannot bind {b.src} at {b.dst} inside the container: it would hide the image's "
                            f"{hidden[0] if hidden else b.dst}; move it with --container_bind {b.src}:/data/NAME")
        for other in binds:
            if other.dst == b.dst and not _same(other.src, b.src):
                raise BindError(f"--container_bind: {b.src} and {other.src} are both bound at {b.dst}")


def check_visible(path: str, binds: Sequence[Bind]) -> None:
    """The container must see host `path` (a file or folder) where to_container puts it, whole."""
    inside = to_container(path, binds)
    if inside is None or not _same(to_host(inside, binds), path):
        raise BindError(f"{path} is not visible inside the container (a --container_bind hides it)")
    for b in binds:  # a bind inside it must show the same files there, or it hides part of it
        if b.dst != inside and is_under(b.dst, inside) and not _same(b.src, path + b.dst[len(inside):]):
            raise BindError(f"--container_bind {b.src}:{b.dst} hides part of {path} inside the container")


def _symlinks(folder: str) -> Iterator[str]:
    count = 0
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            count += 1
            if count > MAX_SCANNED_FILES:
                return
            full = os.path.join(root, name)
            if os.path.islink(full):
                yield full


def check_links(folder: str, binds: Sequence[Bind]) -> None:
    """Symlinks under `folder` (e.g. a Hugging Face snapshot's links to ../../blobs) must lead, inside
    the container, to the same files as on this host."""
    # `folder` itself may be a link: a bind mount resolves it on the host.
    for link in _symlinks(folder) if os.path.isdir(folder) else ():
        target = os.readlink(link)
        if not os.path.isabs(target):
            target = os.path.join(os.path.dirname(to_container(link, binds) or link), target)
        if not _same(to_host(os.path.normpath(target), binds), link):
            where = os.path.dirname(os.path.realpath(link))
            raise BindError(f"{link} links to {os.path.realpath(link)}, which the container cannot see; "
                            f"add --container_bind {where}")
