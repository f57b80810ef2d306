"""Pages in a real browser: headless Chromium from Debian's package takes a screenshot, and the
PNG it writes is decoded here (no imaging library) so tests assert on what is visible."""

from __future__ import annotations

import shutil
import struct
import subprocess
import zlib
from pathlib import Path

from conftest import missing


def screenshot(page: Path, shot: Path, size: tuple[int, int], work: Path) -> None:
    """Render ``page`` at ``size`` into ``shot`` (kept as the test's artefact); under CI=true a
    missing Chromium fails the test."""
    chromium = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
    if chromium is None:
        missing("chromium (Debian package chromium)")
    done = subprocess.run(
        [
            str(chromium),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            f"--user-data-dir={work / 'profile'}",
            f"--screenshot={shot}",
            f"--window-size={size[0]},{size[1]}",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=work,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0 and shot.exists(), done.stderr[-2000:]


def pixels(png: bytes, limit: int) -> tuple[int, int, list[bytes]]:
    """Width, height and the first ``limit`` scanlines as packed RGB, of an 8-bit non-interlaced
    PNG (what Chromium writes); rows are unfiltered one after another, so the rest is skipped."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    position, chunks, header = 8, [], b""
    while position < len(png):
        length, kind = struct.unpack(">I4s", png[position : position + 8])
        data = png[position + 8 : position + 8 + length]
        if kind == b"IHDR":
            header = data
        elif kind == b"IDAT":
            chunks.append(data)
        position += 12 + length
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", header)
    assert depth == 8 and colour in (2, 6) and interlace == 0, (depth, colour, interlace)
    step = 3 if colour == 2 else 4
    raw, stride, rows, previous = zlib.decompress(b"".join(chunks)), width * step, [], bytes(width * step)
    for y in range(min(height, limit)):
        kind, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - step] if i >= step else 0
            b, c = previous[i], previous[i - step] if i >= step else 0
            if kind == 1:
                line[i] = (line[i] + a) & 255
            elif kind == 2:
                line[i] = (line[i] + b) & 255
            elif kind == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif kind == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append(bytes(line))
        previous = bytes(line)
    if step == 4:
        rows = [b"".join(row[i : i + 3] for i in range(0, len(row), 4)) for row in rows]
    return width, height, rows
