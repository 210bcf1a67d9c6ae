"""Archives built byte by byte for the extraction tests, and what to check after extracting.

``make_tar`` / ``make_zip``: an archive of ``{name: bytes}``; ``add_file`` / ``add_special``: one
member (a file; a link, a device, ...) into an open tar, names unchecked, so a test can write the
hostile ones. ``is_extracted``: whether ``safe_extract`` finished (its marker is there);
``listing``: every path under a folder, relative and sorted.

(tests/_fakedata.py builds archives in the real data sets' formats instead.)"""
from __future__ import annotations

import io
import tarfile
import zipfile

from clipbench.data.extract import marker_path


def is_extracted(archive, dest) -> bool:
    # The marker safe_extract writes last: its presence means the archive is fully extracted.
    return marker_path(archive, dest).is_file()


def add_file(tf, name, data=b"x"):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tf.addfile(info, io.BytesIO(data))


def add_special(tf, name, kind, linkname=""):
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    tf.addfile(info)


def make_tar(path, files, mode="w"):
    with tarfile.open(path, mode) as tf:
        for name, data in files.items():
            add_file(tf, name, data)
    return path


def make_zip(path, files):
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return path


def listing(root):
    return sorted(
        str(p.relative_to(root)) for p in root.rglob("*")
    )
