"""camcore.evaluation.archives: zip safety, the DAGM and flat layouts, temporary folders."""

from __future__ import annotations

import gc
import io
import os
import stat
import struct
import time
import warnings
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest

from camcore import synth
from camcore.dagm import write_dagm
from camcore.evaluation import archives
from camcore.evaluation.archives import ArchiveError, safe_extract


def _zip(entries: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return buffer.getvalue()


def _zip_entry(info: zipfile.ZipInfo, data: bytes = b"x") -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr(info, data)
    return buffer.getvalue()


def _png(pixels: np.ndarray, ext: str = ".png") -> bytes:
    ok, encoded = cv2.imencode(ext, pixels)
    assert ok
    return encoded.tobytes()


def _files(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


# ------------------------------------------------------------------ extraction
def test_extracts_nested_files_byte_for_byte(tmp_path):
    entries = {"set/images/a.png": b"\x89PNG fake", "set/masks/sub/b.bmp": os.urandom(5000), "set/empty.txt": b""}
    root = safe_extract(_zip(entries), tmp_path / "out")
    assert root == (tmp_path / "out").resolve()
    assert _files(root) == sorted(entries)
    for name, data in entries.items():
        assert (root / name).read_bytes() == data


def test_a_file_object_and_an_existing_empty_folder_are_accepted(tmp_path):
    (tmp_path / "out").mkdir()
    root = safe_extract(io.BytesIO(_zip({"images/a.png": b"1"})), tmp_path / "out")
    assert _files(root) == ["images/a.png"]


def test_a_non_empty_destination_is_refused(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    with pytest.raises(ValueError, match="empty folder"):
        safe_extract(_zip({"a.png": b"1"}), tmp_path / "out")
    assert (tmp_path / "out" / "keep.txt").read_text() == "mine"


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("../x.png", r"outside the folder \(\.\.\)"),
        ("images/../../x.png", r"outside the folder"),
        ("..\\x.png", r"outside the folder"),
        ("/tmp/x.png", "absolute path"),
        ("\\tmp\\x.png", "absolute path"),
        ("C:/x.png", "names a drive"),
        ("c:x.png", "names a drive"),
    ],
)
def test_names_leaving_the_folder_are_refused_before_anything_is_written(tmp_path, name, message):
    data = _zip({"images/first.png": b"1", name: b"evil"})
    with pytest.raises(ArchiveError, match=message):
        safe_extract(data, tmp_path / "out")
    assert _files(tmp_path) == []  # not even the harmless first entry, nor anything outside


def test_a_symlink_entry_is_refused(tmp_path):
    info = zipfile.ZipInfo("images/link.png")
    info.create_system = 3
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    with pytest.raises(ArchiveError, match="symbolic link"):
        safe_extract(_zip_entry(info, b"/etc/passwd"), tmp_path / "out")
    assert _files(tmp_path) == []


def test_special_files_and_encrypted_entries_are_refused(tmp_path):
    fifo = zipfile.ZipInfo("images/pipe.png")
    fifo.create_system = 3
    fifo.external_attr = (stat.S_IFIFO | 0o644) << 16
    with pytest.raises(ArchiveError, match="special file"):
        safe_extract(_zip_entry(fifo), tmp_path / "a")
    secret = bytearray(_zip({"images/a.png": b"1"}))  # zipfile cannot write encrypted entries:
    for signature, offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):  # set the flag bit by hand
        at = secret.index(signature) + offset
        secret[at] |= 0x1
    with pytest.raises(ArchiveError, match="encrypted"):
        safe_extract(bytes(secret), tmp_path / "b")


def test_a_name_listed_twice_is_refused(tmp_path):
    buffer = io.BytesIO()
    with warnings.catch_warnings(), zipfile.ZipFile(buffer, "w") as zf:
        warnings.simplefilter("ignore")  # zipfile warns about the duplicate; we want one
        zf.writestr("images/a.png", b"1")
        zf.writestr("images/a.png", b"2")
    with pytest.raises(ArchiveError, match="listed twice"):
        safe_extract(buffer.getvalue(), tmp_path / "out")


def test_not_a_zip(tmp_path):
    for data in (b"", b"just text, not an archive", _zip({"a.png": b"1"})[:40]):
        with pytest.raises(ArchiveError, match="not a zip archive"):
            safe_extract(data, tmp_path / "out")


def test_limits_on_the_archive_size_and_the_number_of_entries(tmp_path):
    data = _zip({f"images/{i}.png": b"1" for i in range(5)})
    with pytest.raises(ArchiveError, match=r"the archive is .* more than the limit"):
        safe_extract(data, tmp_path / "a", max_compressed=len(data) - 1)
    assert safe_extract(data, tmp_path / "b", max_compressed=len(data), max_files=5)
    with pytest.raises(ArchiveError, match="holds 5 entries, more than the limit of 4"):
        safe_extract(data, tmp_path / "c", max_files=4)


def test_a_zip_bomb_is_refused_from_its_declared_sizes(tmp_path):
    bomb = _zip({"images/a.png": b"1", "images/zeros.png": bytes(8 * 2**20)})
    assert len(bomb) < 64 * 2**10  # highly compressible: a few kB for 8 MB
    with pytest.raises(ArchiveError, match="unpacks to more than 4.0 MB"):
        safe_extract(bomb, tmp_path / "out", max_uncompressed=4 * 2**20)
    assert _files(tmp_path) == []


def _lie_about_size(data: bytes, declared: int) -> bytes:
    """Rewrite the uncompressed size of the (single) entry in its local and central headers."""
    patched = bytearray(data)
    local = patched.index(b"PK\x03\x04")
    patched[local + 22 : local + 26] = struct.pack("<I", declared)
    central = patched.index(b"PK\x01\x02")
    patched[central + 24 : central + 28] = struct.pack("<I", declared)
    return bytes(patched)


def test_a_header_understating_the_size_does_not_get_past_the_limit(tmp_path):
    liar = _lie_about_size(_zip({"images/zeros.png": bytes(8 * 2**20)}), 1000)
    with zipfile.ZipFile(io.BytesIO(liar)) as zf:
        assert zf.infolist()[0].file_size == 1000  # the lie is what a reader sees
    with pytest.raises(ArchiveError, match="images/zeros.png"):
        safe_extract(liar, tmp_path / "out", max_uncompressed=2**20)
    assert _files(tmp_path) == []


class _LyingZip(zipfile.ZipFile):
    """A zip reader that, unlike CPython's, hands out more bytes than the header declares."""

    def open(self, name, mode="r", pwd=None, *, force_zip64=False):  # noqa: A003
        return io.BytesIO(bytes(3000))


def test_the_bytes_written_are_counted_not_only_the_declared_sizes(tmp_path, monkeypatch):
    data = _zip({"images/a.png": bytes(1000)})
    monkeypatch.setattr(archives.zipfile, "ZipFile", _LyingZip)
    with pytest.raises(ArchiveError, match="more data than its header declares"):
        safe_extract(data, tmp_path / "out")
    assert _files(tmp_path) == []


def test_the_running_total_stops_the_extraction(tmp_path, monkeypatch):
    class Exact(zipfile.ZipFile):
        def open(self, name, mode="r", pwd=None, *, force_zip64=False):  # noqa: A003
            return io.BytesIO(bytes(name.file_size))

    # the declared total fits the limit, but the declared total is ignored here: the
    # running count must stop at the limit by itself
    monkeypatch.setattr(archives, "_checked_members", lambda zf, limit, files: [
        archives._Member(info, tuple(info.filename.split("/"))) for info in zf.infolist()
    ])
    data = _zip({"images/a.png": bytes(3000), "images/b.png": bytes(3000)})
    monkeypatch.setattr(archives.zipfile, "ZipFile", Exact)
    with pytest.raises(ArchiveError, match="unpacks to more than"):
        safe_extract(data, tmp_path / "out", max_uncompressed=4000)
    assert _files(tmp_path) == []


def test_macos_metadata_is_skipped(tmp_path):
    root = safe_extract(
        _zip({"images/a.png": b"1", "__MACOSX/images/._a.png": b"junk", "images/._a.png": b"junk",
              "images/.DS_Store": b"j"}),
        tmp_path / "out",
    )
    assert _files(root) == ["images/a.png"]


# --------------------------------------------------------------------- layouts
def _samples(n: int, size: int = 32, seed: int = 3) -> list[synth.Sample]:
    return list(synth.generate(n, seed=seed, size=size, defect_rate=0.5))


def test_dagm_layout_items_read_like_the_written_samples(tmp_path):
    samples = _samples(6)
    written = write_dagm(tmp_path / "wrap" / "dagm", samples[:4], split="Train")
    written += write_dagm(tmp_path / "wrap" / "dagm", samples[4:], split="Test")
    items = archives.items_from_folder(tmp_path, source="upload:x")
    assert archives.detect_layout(tmp_path)[0] == "dagm"
    by_path = {
        w.image_path.relative_to(tmp_path / "wrap" / "dagm").as_posix(): (w, s) for w, s in zip(written, samples)
    }
    assert sorted(item.id for item in items) == sorted(by_path)
    for item in items:
        entry, sample = by_path[item.id]
        assert item.path == item.id and item.source == "upload:x" and item.defective == sample.defective
        loaded = item.load()
        np.testing.assert_array_equal(loaded.image, sample.image)
        np.testing.assert_array_equal(loaded.mask, sample.mask)
        assert loaded.defective == sample.defective and loaded.class_name == entry.class_name


def test_a_broken_dagm_index_is_named_relative_to_the_archive(tmp_path):
    write_dagm(tmp_path, _samples(2), split="Train")
    labels = next(tmp_path.glob("Class*/Train/Label/Labels.txt"))
    labels.write_text("1\n1\t0\tmissing.PNG\t0\n")
    with pytest.raises(ArchiveError) as error:
        archives.items_from_folder(tmp_path)
    message = str(error.value)
    assert "DAGM layout" in message and "missing.PNG not found" in message
    assert str(tmp_path) not in message and "Train/Label/Labels.txt:2" in message


def _flat(root: Path, images: dict[str, np.ndarray], masks: dict[str, np.ndarray]) -> None:
    files = {**{f"images/{k}": v for k, v in images.items()}, **{f"masks/{k}": v for k, v in masks.items()}}
    for name, pixels in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(_png(pixels, Path(name).suffix))


def test_flat_layout_masks_by_name_any_extension_nonzero_is_defect(tmp_path):
    rng = np.random.default_rng(0)
    gray = rng.integers(0, 256, (24, 20), np.uint8)
    color = rng.integers(0, 256, (16, 16, 3), np.uint8)
    ones = np.zeros((24, 20), np.uint8)
    ones[3:6, 4:9] = 1  # a 0/1 mask
    _flat(
        tmp_path / "my set",
        {"a.png": gray, "sub/b.png": color, "c.bmp": gray, "d.png": gray},
        {"a.bmp": ones, "sub/b.png": np.zeros((16, 16), np.uint8), "d.png": ones * 255},
    )
    (tmp_path / "my set" / "images" / "notes.txt").write_text("ignored")
    items = archives.items_from_folder(tmp_path)
    assert [item.id for item in items] == ["images/a.png", "images/c.bmp", "images/d.png", "images/sub/b.png"]
    assert [item.defective for item in items] == [None, False, None, None]  # known only for a missing mask
    loaded = {item.id: item.load() for item in items}
    np.testing.assert_array_equal(loaded["images/a.png"].image, gray)
    np.testing.assert_array_equal(loaded["images/a.png"].mask, ones > 0)
    assert loaded["images/a.png"].defective and loaded["images/d.png"].defective
    np.testing.assert_array_equal(loaded["images/sub/b.png"].image, color[..., ::-1])  # BGR on disk, RGB read
    assert not loaded["images/sub/b.png"].defective and not loaded["images/sub/b.png"].mask.any()  # empty mask: clean
    assert not loaded["images/c.bmp"].defective and loaded["images/c.bmp"].mask.shape == gray.shape  # no mask: clean
    assert loaded["images/sub/b.png"].class_name == "sub" and loaded["images/a.png"].class_name == ""


def test_flat_layout_masks_not_matching_are_refused(tmp_path):
    image = np.zeros((8, 8), np.uint8)
    _flat(tmp_path / "a", {"a.png": image}, {"a.png": image, "typo.png": image})
    with pytest.raises(ArchiveError, match=r"masks not matching: 1 mask\(s\) match no image: masks/typo.png"):
        archives.items_from_folder(tmp_path / "a")
    _flat(tmp_path / "b", {"a.png": image}, {"a.png": image, "a.bmp": image})
    with pytest.raises(ArchiveError, match="are both masks of images/a"):
        archives.items_from_folder(tmp_path / "b")
    _flat(tmp_path / "c", {"a.png": image, "a.bmp": image}, {"a.png": image})
    with pytest.raises(ArchiveError, match="matches 2 images"):
        archives.items_from_folder(tmp_path / "c")


def test_a_mask_of_another_size_skips_that_image_only(tmp_path):
    _flat(tmp_path, {"a.png": np.zeros((8, 10), np.uint8), "b.png": np.zeros((8, 8), np.uint8)},
          {"a.png": np.full((10, 8), 255, np.uint8)})
    items = archives.items_from_folder(tmp_path)
    with pytest.raises(ArchiveError) as error:
        items[0].load()
    assert str(error.value) == "masks/a.png: mask size 8×10 differs from the size 10×8 of its image images/a.png"
    assert items[1].load().image.shape == (8, 8)


def test_undecodable_images_name_the_file_not_the_server_folder(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "broken.png").write_bytes(b"not a png")
    (item,) = archives.items_from_folder(tmp_path)
    with pytest.raises(ArchiveError, match=r"^images/broken.png: could not decode") as error:
        item.load()
    assert str(tmp_path) not in str(error.value)


def test_no_images(tmp_path):
    (tmp_path / "pictures").mkdir()
    (tmp_path / "readme.txt").write_text("hi")
    with pytest.raises(ArchiveError, match=r"no images found: expected a DAGM layout .* found pictures/, readme.txt"):
        archives.items_from_folder(tmp_path)
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "a.gif").write_bytes(b"GIF89a")
    with pytest.raises(ArchiveError, match="no images found in images/"):
        archives.items_from_folder(tmp_path)
    with pytest.raises(ArchiveError, match="found nothing"):
        archives.items_from_folder(tmp_path / "pictures")


# ---------------------------------------------------------------- folders, sets
def test_session_folder_is_removed_on_close_and_on_garbage_collection(tmp_path):
    folder = archives.SessionFolder(parent=tmp_path)
    assert folder.path.is_dir() and folder.path.name.startswith(archives.UPLOAD_PREFIX)
    (folder.path / "x").write_text("1")
    folder.close()
    assert not folder.path.exists() and folder.closed
    folder.close()  # idempotent
    other = archives.SessionFolder(parent=tmp_path)
    path = other.path
    del other
    gc.collect()
    assert not path.exists()


def test_stale_folders_are_removed_live_and_foreign_ones_kept(tmp_path):
    old = time.time() - 30 * 3600
    stale = archives.SessionFolder(archives.RUN_PREFIX, tmp_path)
    (stale.path / "journal").write_text("1")
    busy = archives.SessionFolder(archives.UPLOAD_PREFIX, tmp_path)
    (busy.path / "journal").write_text("1")  # written just now
    foreign = tmp_path / "someone-else"
    foreign.mkdir()
    for path in (stale.path / "journal", stale.path, busy.path, foreign):
        os.utime(path, (old, old))
    assert archives.remove_stale_folders(24, parent=tmp_path) == [stale.path]
    assert not stale.path.exists() and busy.path.exists() and foreign.exists()
    assert archives.remove_stale_folders(24, parent=tmp_path, now=time.time() + 25 * 3600) == [busy.path]


def test_open_archive_keeps_nothing_of_a_refused_archive(tmp_path):
    with pytest.raises(ArchiveError, match="outside the folder"):
        archives.open_archive(_zip({"../x.png": b"1"}), "bad.zip", parent=tmp_path)
    with pytest.raises(ArchiveError, match="no images found"):
        archives.open_archive(_zip({"docs/readme.txt": b"1"}), "empty.zip", parent=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_open_archive_gives_a_set_by_content_that_closes(tmp_path):
    data = _zip({"images/a.png": _png(np.zeros((8, 8), np.uint8)), "images/b.png": _png(np.ones((8, 8), np.uint8))})
    first = archives.open_archive(data, "/some/where/set.zip", parent=tmp_path)
    again = archives.open_archive(io.BytesIO(data), "set.zip", parent=tmp_path)
    assert first.name == "set.zip" and first.layout == "flat" and first.masked == 0
    assert first.source == again.source and first.source.startswith("upload:set.zip:")
    assert first.folder.path != again.folder.path
    assert all(item.source == first.source for item in first.items)
    assert first.item("images/b.png").load().image.max() == 1
    with pytest.raises(ValueError, match="not part of the uploaded data set set.zip"):
        first.item("../../etc/passwd")
    first.close()
    assert not first.folder.path.exists() and again.folder.path.exists()
