"""A zip bomb is refused from the sizes its central directory declares: before the destination
folder (or an upload's session folder) exists and before any entry is decompressed. The
streaming count in ``_write_members`` is the second line of defence (a lying header); it
refuses the same bomb only after creating the folder and inflating up to the limit."""

from __future__ import annotations

import io
import tempfile
import zipfile

import pytest

from camcore.evaluation import archives
from camcore.evaluation.archives import ArchiveError, safe_extract

LIMIT = 4 * 2**20


def _bomb() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("images/a.png", b"1")
        zf.writestr("images/zeros.png", bytes(8 * 2**20))  # 8 MB of zeros: a few kB compressed
    return buffer.getvalue()


@pytest.fixture
def watched(monkeypatch):
    """Records every member opened for reading and every temporary folder made."""
    seen: dict[str, list] = {"opened": [], "folders": []}
    real_open, real_mkdtemp = zipfile.ZipFile.open, tempfile.mkdtemp

    def recording_open(self, name, mode="r", *args, **kwargs):
        if mode == "r":  # writing the test's own archive is not reading it
            seen["opened"].append(getattr(name, "filename", name))
        return real_open(self, name, mode, *args, **kwargs)

    def recording_mkdtemp(*args, **kwargs):
        path = real_mkdtemp(*args, **kwargs)
        seen["folders"].append(path)
        return path

    monkeypatch.setattr(zipfile.ZipFile, "open", recording_open)
    monkeypatch.setattr(tempfile, "mkdtemp", recording_mkdtemp)
    return seen


def test_safe_extract_refuses_a_bomb_before_creating_the_folder_or_inflating_a_member(tmp_path, watched):
    destination = tmp_path / "out"
    with pytest.raises(ArchiveError, match="unpacks to more than 4.0 MB"):
        safe_extract(_bomb(), destination, max_uncompressed=LIMIT)
    assert not destination.exists()
    assert watched["opened"] == []


def test_open_archive_refuses_a_bomb_before_making_its_session_folder(tmp_path, watched):
    parent = tmp_path / "uploads"
    parent.mkdir()
    with pytest.raises(ArchiveError, match="unpacks to more than 4.0 MB"):
        archives.open_archive(_bomb(), "bomb.zip", parent=parent, max_uncompressed=LIMIT)
    assert watched["folders"] == [] and list(parent.iterdir()) == []
    assert watched["opened"] == []


def test_the_recorder_sees_a_normal_extraction(tmp_path, watched):
    # the same watch on an archive within the limit sees the members opened and the session
    # folder made, so the two tests above cannot pass because the recorder is blind
    dataset = archives.open_archive(_bomb(), "fine.zip", parent=tmp_path, max_uncompressed=16 * 2**20)
    assert watched["folders"] == [str(dataset.folder.path)]
    dataset.close()
    assert sorted(watched["opened"]) == ["images/a.png", "images/zeros.png"]
