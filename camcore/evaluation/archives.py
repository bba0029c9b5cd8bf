"""A user's own data set: a ``.zip`` unpacked safely into a temporary folder, and its images.

Layouts (:func:`read_folder`, :func:`items_from_folder`), looked for after stepping into single wrapper
folders (a zip of ``mydata/`` holds ``mydata/images/...``):

* DAGM 2007 (:mod:`camcore.dagm`): ``Class<k>/{Train,Test}/`` with ``Label/Labels.txt``;
  both splits of every class, in the index's order.
* MVTec AD (:mod:`camcore.evaluation.mvtec`): ``<category>/test/<defect type>/``,
  ``<category>/ground_truth/<defect type>/<name>_mask.png``, optionally ``train/good/``.
* flat: ``images/`` with the image files (PNG, JPEG, BMP, TIFF; sub-folders allowed) and
  optionally ``masks/``. The mask of ``images/<p>/<name>.<ext>`` is
  ``masks/<p>/<name>.<any image ext>`` (so ``a.jpg`` may have the lossless mask ``a.png``);
  a mask pixel is defect when it is > 0 (0/255 and 0/1 masks both work). An image without
  a mask, or with an all-zero mask, is clean. The sub-folder under ``images/`` is the
  class name (``images/scratch/a.png``: "scratch"; none for an image directly in
  ``images/``). Refused for the whole archive (a naming mistake, which would otherwise
  silently turn defective images into clean ones): a mask that matches no image, two
  masks for one image, one mask matching two images. An image and mask of different
  sizes, or an undecodable file, is found only when the image is decoded: that image is
  skipped by the evaluation with a message naming the files (one bad pair must not stop a
  long run). Other files (README, CSV, ...) are ignored.

Zip safety (:func:`safe_extract`, each refusal a :class:`ArchiveError` naming the
problem): a limit on the archive's size and on the total unpacked size - checked on the
sizes the archive declares before anything is written *and* on the bytes actually
written, since headers can lie - and on the number of entries; no entry may leave the
folder (``..``, absolute names, drive letters, backslash variants of both), be a
symbolic link or other special file, be encrypted or be listed twice. macOS metadata
(``__MACOSX/``, ``._*``, ``.DS_Store``) is skipped. Everything the central directory
shows is checked before the destination folder is created or any entry decompressed. Images are decoded with
:func:`camcore.preprocess.read_image`, which refuses oversized images from their header
(a small PNG can declare gigapixels). Messages name files relative to the archive, never
the server's temporary folder.

Temporary folders (:class:`SessionFolder`): made with :func:`tempfile.mkdtemp` and
removed by ``close()``, when their owner is garbage-collected (``weakref.finalize``: e.g.
a Streamlit session that kept it in ``st.session_state`` ended) or at interpreter exit;
:func:`remove_stale_folders` removes those a crashed process left behind.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import shutil
import stat
import tempfile
import time
import weakref
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO, Callable, Sequence

import numpy as np

from camcore.dagm import read_dagm
from camcore.evaluation.datafiles import IMAGE_EXTENSIONS, ArchiveError
from camcore.evaluation.datafiles import gray as _gray
from camcore.evaluation.datafiles import image_files as _image_files
from camcore.evaluation.datafiles import is_junk as _is_junk
from camcore.evaluation.datafiles import listing as _listing
from camcore.evaluation.datafiles import read_mask as _read_mask
from camcore.evaluation.datafiles import read_pixels as _read_pixels
from camcore.evaluation.datafiles import relative_message as _relative_message
from camcore.evaluation.mvtec import find_categories, is_category, mvtec_set
from camcore.evaluation.sources import EvalItem, LoadedImage, dagm_items

MAX_COMPRESSED = 300 * 2**20  # the dashboard's upload limit (server.maxUploadSize = 300 MB)
MAX_UNCOMPRESSED = 2**30
MAX_FILES = 20_000
IMAGES_DIR, MASKS_DIR = "images", "masks"
UPLOAD_PREFIX = "camstudio-upload-"  # temporary folders of uploaded data sets
RUN_PREFIX = "camstudio-run-"  # temporary folders of in-page runs (their journals)
STALE_HOURS = 24.0
UPLOAD_SOURCE = "upload:"  # ``source`` of an uploaded set's items: "upload:<name>:<sha>"

_CHUNK = 1 << 20
_DRIVE = re.compile(r"^[A-Za-z]:")
_CLASS_DIR = re.compile(r"Class\d+")
_MAX_WRAPPERS = 8


# ------------------------------------------------------------------ temporary folders
class SessionFolder:
    """A fresh temporary folder owned by this object.

    Removed by :meth:`close`, when the object is garbage-collected (``weakref.finalize``,
    which never keeps the object alive) or at interpreter exit, whichever comes first.
    """

    def __init__(self, prefix: str = UPLOAD_PREFIX, parent: str | os.PathLike[str] | None = None) -> None:
        self.path = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
        self._finalizer = weakref.finalize(self, shutil.rmtree, str(self.path), True)

    def close(self) -> None:
        """Remove the folder now (idempotent)."""
        self._finalizer()

    @property
    def closed(self) -> bool:
        return not self._finalizer.alive

    def touch(self) -> None:
        """Mark the folder as in use, so :func:`remove_stale_folders` leaves it alone."""
        try:
            os.utime(self.path)
        except FileNotFoundError:
            pass


def _last_change(folder: Path) -> float:
    """Latest mtime of the folder and its direct children (a run's journal grows inside)."""
    latest = folder.lstat().st_mtime
    for child in folder.iterdir():
        try:
            latest = max(latest, child.lstat().st_mtime)
        except FileNotFoundError:
            continue
    return latest


def remove_stale_folders(
    max_age_hours: float = STALE_HOURS,
    *,
    parent: str | os.PathLike[str] | None = None,
    prefixes: Sequence[str] = (UPLOAD_PREFIX, RUN_PREFIX),
    now: float | None = None,
) -> list[Path]:
    """Remove the temporary folders with one of ``prefixes`` unchanged for ``max_age_hours``
    (left by a process that died before its finalizers ran); return them. A live folder is
    touched on use (:meth:`SessionFolder.touch`) and is never that old."""
    base = Path(parent) if parent is not None else Path(tempfile.gettempdir())
    now = time.time() if now is None else now
    removed = []
    for child in base.iterdir():
        if not child.name.startswith(tuple(prefixes)) or child.is_symlink() or not child.is_dir():
            continue
        try:
            stale = now - _last_change(child) > max_age_hours * 3600
        except OSError:
            continue
        if stale:
            shutil.rmtree(child, ignore_errors=True)
            removed.append(child)
    return removed


# ------------------------------------------------------------------------ extraction
def _megabytes(size: int) -> str:
    return f"{size / 2**20:.1f} MB" if size < 10 * 2**20 else f"{size / 2**20:.0f} MB"


def _stream(archive: bytes | bytearray | memoryview | BinaryIO) -> BinaryIO:
    if isinstance(archive, (bytes, bytearray, memoryview)):
        return io.BytesIO(bytes(archive))
    return archive


def _stream_size(stream: BinaryIO) -> int:
    stream.seek(0, os.SEEK_END)
    size = stream.tell()
    stream.seek(0)
    return size


@dataclass(frozen=True)
class _Member:
    info: zipfile.ZipInfo
    parts: tuple[str, ...]  # the normalized relative path


def _member_parts(info: zipfile.ZipInfo) -> tuple[str, ...]:
    """The entry's path inside the folder, or ArchiveError if it could leave the folder."""
    shown = info.orig_filename
    if "\x00" in info.orig_filename:
        raise ArchiveError(f"refused: entry {shown!r} has a NUL byte in its name")
    name = info.filename.replace("\\", "/")  # Windows tools may write backslashes
    if name.startswith("/"):
        raise ArchiveError(f"refused: entry {shown!r} has an absolute path")
    if _DRIVE.match(name):
        raise ArchiveError(f"refused: entry {shown!r} names a drive")
    parts = tuple(part for part in name.split("/") if part not in ("", "."))
    if ".." in parts:
        raise ArchiveError(f"refused: entry {shown!r} points outside the folder (..)")
    mode = info.external_attr >> 16
    kind = stat.S_IFMT(mode)
    if kind == stat.S_IFLNK:
        raise ArchiveError(f"refused: entry {shown!r} is a symbolic link")
    if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
        raise ArchiveError(f"refused: entry {shown!r} is a special file, not a regular file")
    if info.flag_bits & 0x1:
        raise ArchiveError(f"refused: entry {shown!r} is encrypted")
    return parts


def _checked_members(zf: zipfile.ZipFile, max_uncompressed: int, max_files: int) -> list[_Member]:
    """Every entry checked from the central directory, before anything is written."""
    infos = zf.infolist()
    if len(infos) > max_files:
        raise ArchiveError(f"refused: the archive holds {len(infos)} entries, more than the limit of {max_files}")
    declared = 0
    seen: set[tuple[str, ...]] = set()
    members = []
    for info in infos:
        parts = _member_parts(info)
        if not parts or _is_junk(parts):
            continue
        if not info.is_dir():
            if parts in seen:
                raise ArchiveError(f"refused: {'/'.join(parts)} is listed twice in the archive")
            seen.add(parts)
            declared += info.file_size
            if declared > max_uncompressed:
                raise ArchiveError(
                    f"refused: the archive unpacks to more than {_megabytes(max_uncompressed)} "
                    "(the limit; a zip bomb?)"
                )
        members.append(_Member(info, parts))
    return members


def _inside(root: Path, target: Path) -> bool:
    return target.resolve().is_relative_to(root)


def _write_members(zf: zipfile.ZipFile, members: list[_Member], root: Path, max_uncompressed: int) -> None:
    """Write the entries, counting the bytes really decompressed against each entry's
    declared size and the total against ``max_uncompressed``."""
    written = 0
    for member in members:
        name = "/".join(member.parts)
        target = root.joinpath(*member.parts)
        if not _inside(root, target):  # cannot happen after _member_parts; kept as a guard
            raise ArchiveError(f"refused: entry {name!r} points outside the folder")
        try:
            if member.info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            size = 0
            # "xb": never write through something that already exists
            with zf.open(member.info) as source, open(target, "xb") as out:
                while chunk := source.read(_CHUNK):
                    size += len(chunk)
                    written += len(chunk)
                    if size > member.info.file_size:
                        raise ArchiveError(f"refused: {name} holds more data than its header declares (a zip bomb?)")
                    if written > max_uncompressed:
                        raise ArchiveError(
                            f"refused: the archive unpacks to more than {_megabytes(max_uncompressed)} "
                            "(the limit; a zip bomb?)"
                        )
                    out.write(chunk)
        except (FileExistsError, NotADirectoryError, IsADirectoryError):
            raise ArchiveError(f"refused: {name} clashes with another entry of the same name") from None
        except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
            raise ArchiveError(f"the archive is damaged at {name}: {exc}") from None
        except (NotImplementedError, RuntimeError) as exc:  # unknown compression, encryption
            raise ArchiveError(f"cannot unpack {name}: {exc}") from None


def _empty_folder(dest: Path) -> Path:
    dest = Path(dest)
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise ValueError(f"{dest} must be an empty folder")
    dest.mkdir(parents=True, exist_ok=True)
    return dest.resolve()


def _clear(folder: Path) -> None:
    for child in folder.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)


def _open_checked(
    stream: BinaryIO, max_compressed: int, max_uncompressed: int, max_files: int
) -> tuple[zipfile.ZipFile, list[_Member]]:
    """The open zip and its entries, every check that needs no decompression passed:
    the archive's size, its entry count, names and kinds, and the sizes it declares."""
    size = _stream_size(stream)
    if size > max_compressed:
        raise ArchiveError(
            f"refused: the archive is {_megabytes(size)}, more than the limit of {_megabytes(max_compressed)}"
        )
    try:
        zf = zipfile.ZipFile(stream)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, ValueError):
        raise ArchiveError("not a zip archive (or a damaged one)") from None
    try:
        return zf, _checked_members(zf, max_uncompressed, max_files)
    except BaseException:
        zf.close()
        raise


def _extract_checked(zf: zipfile.ZipFile, members: list[_Member], dest: Path, max_uncompressed: int) -> Path:
    root = _empty_folder(dest)
    try:
        _write_members(zf, members, root, max_uncompressed)
    except BaseException:
        _clear(root)
        raise
    return root


def safe_extract(
    archive: bytes | BinaryIO,
    dest: str | os.PathLike[str],
    *,
    max_compressed: int = MAX_COMPRESSED,
    max_uncompressed: int = MAX_UNCOMPRESSED,
    max_files: int = MAX_FILES,
) -> Path:
    """Unpack the zip ``archive`` (bytes or a binary file) into ``dest`` (created, or an
    empty folder) and return ``dest``, resolved.

    Raises :class:`ArchiveError` naming the problem - see the module docstring for what
    is refused. Whatever the central directory shows (sizes, names, kinds) is refused
    before ``dest`` is created or any entry decompressed; on a later refusal ``dest`` is
    left empty.
    """
    zf, members = _open_checked(_stream(archive), max_compressed, max_uncompressed, max_files)
    with zf:
        return _extract_checked(zf, members, Path(dest), max_uncompressed)


# ---------------------------------------------------------------------------- layouts
def _layout_names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if not _is_junk((p.name,)))


def _data_root(folder: Path) -> Path:
    """Step into single wrapper folders (``mydata/`` ...) until a layout folder shows up."""
    root = folder
    for _ in range(_MAX_WRAPPERS):
        names = _layout_names(root)
        if len(names) != 1 or names[0] in (IMAGES_DIR, MASKS_DIR) or _CLASS_DIR.fullmatch(names[0]) \
                or is_category(root):
            break
        only = root / names[0]
        if only.is_symlink() or not only.is_dir():
            break
        root = only
    return root


def _dagm_loader(
    root: Path, image: Path, mask: Path | None, defective: bool, class_name: str
) -> Callable[[], LoadedImage]:
    image_shown = image.relative_to(root).as_posix()

    def load() -> LoadedImage:
        # DAGM images are gray; like camcore.dagm.load_item, but read through read_image
        # (pixel limit) and with messages relative to the archive
        pixels = _gray(_read_pixels(image, image_shown))
        if mask is None:
            return LoadedImage(pixels, np.zeros(pixels.shape, bool), False, class_name)
        shown = mask.relative_to(root).as_posix()
        labels = _read_mask(mask, shown, pixels.shape, image_shown)
        if defective and not labels.any():
            raise ArchiveError(f"{shown}: the label mask of a defective image is empty")
        return LoadedImage(pixels, labels, defective, class_name)

    return load


def _dagm_items(root: Path, source: str) -> list[EvalItem]:
    try:
        entries = read_dagm(root)
    except ValueError as exc:
        raise ArchiveError(f"DAGM layout: {_relative_message(str(exc), root)}") from None
    items = []
    for index, entry in enumerate(entries):
        relative = entry.image_path.relative_to(root).as_posix()
        loader = _dagm_loader(root, entry.image_path, entry.mask_path, entry.defective, entry.class_name)
        items.append(EvalItem(relative, source, index, loader, relative, entry.class_name, entry.defective))
    return items


def _flat_loader(root: Path, image: Path, mask: Path | None, class_name: str) -> Callable[[], LoadedImage]:
    image_shown = image.relative_to(root).as_posix()

    def load() -> LoadedImage:
        pixels = _read_pixels(image, image_shown)
        if mask is None:
            return LoadedImage(pixels, np.zeros(pixels.shape[:2], bool), False, class_name)
        labels = _read_mask(mask, mask.relative_to(root).as_posix(), pixels.shape, image_shown)
        return LoadedImage(pixels, labels, bool(labels.any()), class_name)

    return load


def _stem_key(path: Path, folder: Path) -> str:
    return PurePosixPath(path.relative_to(folder).as_posix()).with_suffix("").as_posix()


def _flat_items(root: Path, source: str) -> list[EvalItem]:
    images_dir, masks_dir = root / IMAGES_DIR, root / MASKS_DIR
    images = _image_files(images_dir)
    if not images:
        raise ArchiveError(
            f"no images found in {IMAGES_DIR}/: expected {', '.join(e[1:].upper() for e in IMAGE_EXTENSIONS)} files"
        )
    by_key: dict[str, list[Path]] = {}
    for image in images:
        by_key.setdefault(_stem_key(image, images_dir), []).append(image)
    masks: dict[str, Path] = {}
    orphans = []
    for mask in _image_files(masks_dir):
        key = _stem_key(mask, masks_dir)
        shown = mask.relative_to(root).as_posix()
        if key in masks:
            other = masks[key].relative_to(root).as_posix()
            raise ArchiveError(
                f"masks not matching: {other} and {shown} are both masks of {IMAGES_DIR}/{key}.*; keep one"
            )
        if key not in by_key:
            orphans.append(shown)
            continue
        if len(by_key[key]) > 1:
            names = [p.relative_to(root).as_posix() for p in by_key[key]]
            raise ArchiveError(
                f"masks not matching: {shown} matches {len(names)} images ({', '.join(names)}); rename one"
            )
        masks[key] = mask
    if orphans:
        raise ArchiveError(
            f"masks not matching: {len(orphans)} mask(s) match no image: {_listing(orphans)}. A mask has the name of "
            f"its image: {IMAGES_DIR}/a.png ↔ {MASKS_DIR}/a.png (any image extension)"
        )
    items = []
    for index, image in enumerate(images):
        relative = image.relative_to(root).as_posix()
        key = _stem_key(image, images_dir)
        mask_path = masks.get(key)
        folder = PurePosixPath(image.relative_to(images_dir).as_posix()).parent.as_posix()
        class_name = "" if folder == "." else folder
        loader = _flat_loader(root, image, mask_path, class_name)
        items.append(EvalItem(relative, source, index, loader, relative, class_name, None if mask_path else False))
    return items


def detect_layout(folder: str | os.PathLike[str]) -> tuple[str, Path]:
    """``("dagm" | "mvtec" | "flat", data root)`` of a folder (after single wrapper folders):
    DAGM when a ``Class<k>`` folder is there, else MVTec AD when the root or one of its
    folders is a category (``test/<defect type>/``), else flat when ``images/`` is there;
    otherwise :class:`ArchiveError` saying what was expected and what was found."""
    root = _data_root(Path(folder).resolve())
    if any(p.is_dir() and _CLASS_DIR.fullmatch(p.name) for p in root.iterdir()):
        return "dagm", root
    if find_categories(root):
        return "mvtec", root
    if (root / IMAGES_DIR).is_dir():
        return "flat", root
    found = _layout_names(root)
    raise ArchiveError(
        "no images found: expected a DAGM layout (Class1/Train/Label/Labels.txt ...), an MVTec AD one "
        "(<category>/test/<defect type>/*.png, <category>/ground_truth/<defect type>/*_mask.png) or a flat "
        f"one ({IMAGES_DIR}/ with the images, optionally {MASKS_DIR}/ with their masks); found "
        + (_listing([f"{name}/" if (root / name).is_dir() else name for name in found]) if found else "nothing")
    )


@dataclass(frozen=True)
class FolderSet:
    """What :func:`read_folder` found: the layout, the data root, the items, the categories
    (MVTec AD; empty otherwise) and notes for the user (e.g. a defective image without a mask)."""

    layout: str
    root: Path
    items: tuple[EvalItem, ...]
    categories: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()


def read_folder(
    folder: str | os.PathLike[str],
    *,
    source: str | None = None,
    category: str | None = None,
    train_good: bool = False,
    top_name: str | None = None,
) -> FolderSet:
    """The data set in ``folder``, any layout (:func:`detect_layout`). ``source`` defaults to
    the data root's path. MVTec AD only: ``category`` keeps one category (default: all),
    ``train_good`` adds ``train/good/`` as clean images, ``top_name`` names a category found
    at the top of ``folder`` itself (default: its folder name). Nothing is decoded here."""
    layout, root = detect_layout(folder)
    source = str(root) if source is None else source
    if layout != "mvtec" and category is not None:
        raise ArchiveError(
            f"a category ({category!r}) can be chosen in an MVTec AD layout only; this is a {layout} one"
        )
    if layout == "mvtec":
        # a wrapper folder stepped into names the category better than the caller's guess
        top_name = top_name if root == Path(folder).resolve() else None
        found = mvtec_set(root, source, category=category, train_good=train_good, top_name=top_name)
        return FolderSet(layout, root, found.items, found.categories, found.notes)
    items = _dagm_items(root, source) if layout == "dagm" else _flat_items(root, source)
    if not items:
        raise ArchiveError("no images found: the DAGM index lists no image")
    return FolderSet(layout, root, tuple(items))


def items_from_folder(
    folder: str | os.PathLike[str], *, source: str | None = None, category: str | None = None, train_good: bool = False
) -> list[EvalItem]:
    """The images of a DAGM, MVTec AD or flat folder (see the module docstring for the
    rules) as evaluation items, ids and ``path`` relative to the data root; ``source``
    defaults to the data root's path; ``category`` / ``train_good`` as in :func:`read_folder`.
    Nothing is decoded here."""
    return list(read_folder(folder, source=source, category=category, train_good=train_good).items)


# ------------------------------------------------------------------- uploaded sets
@dataclass(frozen=True, eq=False)
class UploadedDataset:
    """An unpacked archive in its own :class:`SessionFolder` and the items it holds."""

    name: str  # the archive's file name
    source: str  # "upload:<name>:<sha256 prefix>", the ``source`` of its items and results
    layout: str  # "dagm", "mvtec" or "flat"
    items: tuple[EvalItem, ...]
    folder: SessionFolder
    categories: tuple[str, ...] = ()  # MVTec AD: every category in the archive (a choice for the user)
    notes: tuple[str, ...] = ()  # for the user: e.g. a defective image without a mask (skipped)

    @property
    def masked(self) -> int:
        """Images that have or need a mask (defective ones for DAGM and MVTec AD; flat: a mask
        file, maybe empty)."""
        return sum(item.defective is not False for item in self.items)

    def items_of(self, category: str | None) -> tuple[EvalItem, ...]:
        """The items of one MVTec AD ``category`` (None: every item), without unpacking again;
        ValueError naming the categories for an unknown one."""
        if category is None:
            return self.items
        if category not in self.categories:
            raise ValueError(
                f"no category {category!r} in {self.name}; it holds {', '.join(self.categories) or 'none'}"
            )
        return tuple(item for item in self.items if (item.class_name or "").startswith(f"{category}/"))

    def item(self, image_id: str) -> EvalItem:
        """The item ``image_id`` (looked up by id, never opened by a given path)."""
        for item in self.items:
            if item.id == image_id:
                return item
        raise ValueError(f"{image_id} is not part of the uploaded data set {self.name}")

    def close(self) -> None:
        self.folder.close()


def _digest(stream: BinaryIO) -> str:
    digest = hashlib.sha256()
    stream.seek(0)
    while chunk := stream.read(_CHUNK):
        digest.update(chunk)
    stream.seek(0)
    return digest.hexdigest()


def open_archive(
    archive: bytes | BinaryIO,
    name: str,
    *,
    parent: str | os.PathLike[str] | None = None,
    max_compressed: int = MAX_COMPRESSED,
    max_uncompressed: int = MAX_UNCOMPRESSED,
    max_files: int = MAX_FILES,
    category: str | None = None,
    train_good: bool = False,
) -> UploadedDataset:
    """:func:`safe_extract` into a new :class:`SessionFolder` (under ``parent``, default
    the system's temporary folder), then :func:`read_folder` (``category``, ``train_good``:
    MVTec AD only; a category at the archive's top is named after the archive). The
    folder is made only once the archive passed every check that needs no decompression,
    and removed again when a later step refuses (:class:`ArchiveError`)."""
    stream = _stream(archive)
    zf, members = _open_checked(stream, max_compressed, max_uncompressed, max_files)
    with zf:  # checked before the session folder exists: a refused archive leaves nothing behind
        folder = SessionFolder(UPLOAD_PREFIX, parent)
        try:
            root = _extract_checked(zf, members, folder.path / "data", max_uncompressed)
            source = f"{UPLOAD_SOURCE}{Path(name).name}:{_digest(stream)[:16]}"
            found = read_folder(root, source=source, category=category, train_good=train_good,
                                top_name=_archive_stem(name))
        except BaseException:
            folder.close()
            raise
    return UploadedDataset(Path(name).name, source, found.layout, found.items, folder, found.categories, found.notes)


def _archive_stem(name: str) -> str:
    """``bottle`` for ``bottle.zip``: the name of a category unpacked at the archive's top."""
    return Path(Path(name).name).stem


def open_data(
    path: str | os.PathLike[str],
    *,
    split: str | None = None,
    category: str | None = None,
    train_good: bool = False,
    parent: str | os.PathLike[str] | None = None,
) -> FolderSet | UploadedDataset:
    """The data set at ``path`` for the command line: a ``.zip`` (:func:`open_archive`; keep
    the returned set alive while its items are used, its folder goes with it) or a folder
    of any layout. A DAGM folder is read by :func:`camcore.evaluation.sources.dagm_items`
    (absolute paths, ``split`` "Train" / "Test"); ``split`` is refused for other layouts,
    ``category`` and ``train_good`` apply to MVTec AD (:func:`read_folder`)."""
    path = Path(path)
    if path.is_file():
        if not zipfile.is_zipfile(path):
            raise ArchiveError(f"{path.name}: expected a folder or a .zip of one")
        with path.open("rb") as stream:
            found: FolderSet | UploadedDataset = open_archive(
                stream, path.name, parent=parent, category=category, train_good=train_good
            )
    elif path.is_dir():
        layout, root = detect_layout(path)
        if layout == "dagm" and category is None:
            return FolderSet("dagm", root, tuple(dagm_items(root, split=split)))
        found = read_folder(path, category=category, train_good=train_good)
    else:
        raise FileNotFoundError(f"{path} not found")
    if split is not None and found.layout != "dagm":
        raise ArchiveError(f"--split applies to DAGM folders; this is a {found.layout} layout")
    return found
