"""The text of each page of a PDF that Chromium printed, for tests that check printed pages.

Only what Chromium (Skia) writes: objects ``n 0 obj ... endobj``, Flate streams, Type0 fonts
with a ``/ToUnicode`` CMap (``bfchar``/``bfrange``), text shown as ``<hex> Tj`` inside
``BT ... ET``. Not a general PDF reader: enough to read back a page's words.
"""

from __future__ import annotations

import re
import zlib

_OBJ = re.compile(rb"(\d+) 0 obj(.*?)endobj", re.S)
_STREAM = re.compile(rb"stream\r?\n(.*?)\r?\nendstream", re.S)


def _stream(body: bytes) -> bytes:
    m = _STREAM.search(body)
    if m is None:
        return b""
    raw = m.group(1)
    return zlib.decompress(raw) if b"/FlateDecode" in body[: m.start()] else raw


def _cmap(text: bytes) -> dict[int, str]:
    out: dict[int, str] = {}
    for block in re.findall(rb"beginbfchar(.*?)endbfchar", text, re.S):
        for src, dst in re.findall(rb"<([0-9A-Fa-f]+)>\s*<([0-9A-Fa-f]+)>", block):
            out[int(src, 16)] = bytes.fromhex(dst.decode()).decode("utf-16-be")
    for block in re.findall(rb"beginbfrange(.*?)endbfrange", text, re.S):
        for lo, hi, dst in re.findall(rb"<([0-9A-Fa-f]+)>\s*<([0-9A-Fa-f]+)>\s*<([0-9A-Fa-f]+)>", block):
            first = int(dst, 16)
            for i, code in enumerate(range(int(lo, 16), int(hi, 16) + 1)):
                out[code] = chr(first + i)
    return out


def pages_text(pdf: bytes) -> list[str]:
    """Each page's text, its runs joined by spaces and whitespace collapsed."""
    objs = {int(m.group(1)): m.group(2) for m in _OBJ.finditer(pdf)}
    maps: dict[int, dict[int, str]] = {}

    def font_map(ref: int) -> dict[int, str]:
        if ref not in maps:
            m = re.search(rb"/ToUnicode (\d+) 0 R", objs.get(ref, b""))
            maps[ref] = _cmap(_stream(objs[int(m.group(1))])) if m else {}
        return maps[ref]

    out = []
    for body in (b for b in objs.values() if re.search(rb"/Type /Page\b", b)):
        fonts_m = re.search(rb"/Font <<(.*?)>>", body, re.S)
        fonts = {n.decode(): int(r) for n, r in re.findall(rb"/(\w+) (\d+) 0 R", fonts_m.group(1))} if fonts_m else {}
        contents = re.search(rb"/Contents (\d+) 0 R", body)
        if contents is None:
            out.append("")
            continue
        runs: list[str] = []
        current: dict[int, str] = {}
        for block in re.findall(rb"BT(.*?)ET", _stream(objs[int(contents.group(1))]), re.S):
            text = []
            for font, hexes in re.findall(rb"/(\w+) [\d.]+ Tf|<([0-9A-Fa-f]+)> Tj", block):
                if font:
                    current = font_map(fonts.get(font.decode(), -1))
                    continue
                codes = [int(hexes[i : i + 4], 16) for i in range(0, len(hexes), 4)]
                text.append("".join(current.get(c, "?") for c in codes))
            runs.append("".join(text))
        out.append(" ".join(" ".join(runs).split()))
    return out
