"""The files a page's download buttons serve, as a browser would get them, for AppTest.

AppTest runs a page against a mock runtime whose media files go when the run ends; a
deferred download (``data=`` a callable, built on click) is never built at all. Recording
``MediaFileManager.add`` / ``add_deferred`` keeps each file's builder by file name.
"""

from __future__ import annotations

from typing import Callable

import pytest


@pytest.fixture
def downloads(monkeypatch) -> dict[str, Callable[[], bytes]]:
    """``{file name: () -> the file's bytes}`` of every download button drawn since."""
    from streamlit.runtime.media_file_manager import MediaFileManager

    files: dict[str, Callable[[], bytes]] = {}
    add, add_deferred = MediaFileManager.add, MediaFileManager.add_deferred

    def recording_add(self, path_or_data, mimetype, coordinates, file_name=None, is_for_static_download=False):
        if is_for_static_download and file_name:
            files[file_name] = lambda: path_or_data if isinstance(path_or_data, bytes) else path_or_data.encode()
        return add(self, path_or_data, mimetype, coordinates, file_name=file_name,
                   is_for_static_download=is_for_static_download)

    def recording_add_deferred(self, data_callable, mimetype, coordinates, file_name=None, *, element_id=""):
        def build() -> bytes:
            data = data_callable()
            return data.encode() if isinstance(data, str) else bytes(data)

        files[file_name] = build
        return add_deferred(self, data_callable, mimetype, coordinates, file_name=file_name, element_id=element_id)

    monkeypatch.setattr(MediaFileManager, "add", recording_add)
    monkeypatch.setattr(MediaFileManager, "add_deferred", recording_add_deferred)
    return files
