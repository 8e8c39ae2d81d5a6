"""Streaming parse of the /sync/all document.

The document can be hundreds of MB, so it is never held in memory: the bytes
are decoded into a sliding window of text, the top-level object is walked by
hand, and each element of an entity array is decoded on its own by the
standard library's C JSON scanner (``raw_decode``), then dropped. Unknown
top-level keys are skipped; a document that ends early or is not valid JSON
raises ExtractError.

Why not ijson: its C parser still builds rows through one callback per parse
event (~15 per row); ``raw_decode`` builds a whole row in one C call, which
measured 2.7x faster on a 1M-row extract. Values come out exactly as ijson's
``use_float=False`` gave them (integers as int, other numbers as Decimal), so
validation sees the same types.
"""

from __future__ import annotations

import codecs
import json
import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Callable, Iterable, Iterator

from garden_pipeline.catalogue import Entity, by_extract_key


class ExtractError(RuntimeError):
    """The extract could not be read completely; nothing from it may be written."""


# One value (a row, usually a few hundred bytes) may span at most this much text before it is refused:
# the window grows only while a value is incomplete, so this also bounds memory on a hostile body.
MAX_VALUE_CHARS = 16 << 20
_WS = re.compile(r"[ \t\n\r]*")
_WHITESPACE = " \t\n\r"
_EDGE = 16  # a token cut by the window's edge fails within this many characters of it
# What a body cut off inside a token ends with: part of a number, of true/false/null, of an escape.
_PARTIAL_TOKEN = re.compile(r"-?(?:[0-9]+(?:\.[0-9]*)?(?:[eE][+-]?[0-9]*)?)?|t(?:r(?:u)?)?|f(?:a(?:l(?:s)?)?)?"
                            r"|n(?:u(?:l)?)?")
_LAST_TOKEN = re.compile(r"[-+.0-9a-zE]*[ \t\n\r]*\Z")


def _ends_inside_token(text: str, error_at: int) -> bool:
    """Whether a decode error at ``error_at`` is only the text ending early (cut inside its last token)."""
    last = _LAST_TOKEN.search(text, max(0, len(text) - 64))
    token = text[last.start():].rstrip(_WHITESPACE)
    if error_at >= last.start() + len(token):
        return True  # nothing wrong but that the text stops
    return error_at >= last.start() and _PARTIAL_TOKEN.fullmatch(token) is not None


class _Invalid(Exception):
    """Not JSON; the message says what was found where."""


def _no_constants(name: str):
    # Python's json accepts NaN and Infinity; JSON (and PostgreSQL) do not.
    raise _Invalid(f"{name} is not a JSON value")


_DECODE = json.JSONDecoder(parse_float=Decimal, parse_constant=_no_constants).raw_decode


class _Window:
    """Decoded text of the byte chunks, read on demand; ``pos`` is the parse position in ``buf``."""

    def __init__(self, chunks: Iterable[bytes]):
        self._chunks = iter(chunks)
        self._utf8 = codecs.getincrementaldecoder("utf-8")("strict")
        self.buf = ""
        self.pos = 0
        self.base = 0  # characters of the body dropped before ``buf``
        self.eof = False
        self.bytes_read = 0

    def more(self) -> bool:
        """Append the next chunk's text (dropping what was parsed); False at the end of the body."""
        while not self.eof:
            chunk = next(self._chunks, None)
            try:
                if chunk is None:
                    self.eof = True
                    text = self._utf8.decode(b"", final=True)
                else:
                    self.bytes_read += len(chunk)
                    text = self._utf8.decode(chunk)
            except UnicodeDecodeError as exc:
                if chunk is None and exc.reason == "unexpected end of data":
                    raise EOFError from None  # cut inside a multi-byte character
                raise _Invalid(f"invalid UTF-8 ({exc.reason})") from None
            if text:
                self.base += self.pos
                self.buf = self.buf[self.pos:] + text
                self.pos = 0
                return True
        return False

    def peek(self) -> str:
        """The next non-whitespace character, not consumed; '' at the end of the body."""
        while True:
            buf, pos = self.buf, self.pos
            if pos < len(buf) and buf[pos] not in _WHITESPACE:
                return buf[pos]
            self.pos = pos = _WS.match(buf, pos).end()
            if pos < len(buf):
                return buf[pos]
            if not self.more():
                return ""

    def expect(self, char: str, what: str) -> None:
        found = self.peek()
        if found != char:
            if not found:
                raise EOFError
            raise _Invalid(f"expected {what}, found {found!r}")
        self.pos += 1

    def value(self) -> Any:
        """Decode the next JSON value, reading more of the body while it is incomplete."""
        self.peek()
        while True:
            buf, pos = self.buf, self.pos
            try:
                obj, end = _DECODE(buf, pos)
            except json.JSONDecodeError as exc:
                unterminated = exc.msg.startswith("Unterminated string") or (
                    exc.msg.startswith("Invalid \\uXXXX") and len(buf) - exc.pos < 6)  # a cut escape
                if self.eof:
                    if unterminated or _ends_inside_token(buf, exc.pos):
                        raise EOFError from None
                    raise _Invalid(exc.msg) from None
                # Not at the end yet: an error at the window's edge is most likely the edge itself.
                if not (unterminated or exc.pos >= len(buf) - _EDGE):
                    raise _Invalid(exc.msg) from None
                if len(buf) - pos >= MAX_VALUE_CHARS:
                    raise _Invalid(f"a value longer than {MAX_VALUE_CHARS} characters") from None
                self.more()
                continue
            if end == len(buf) and self.more():
                continue  # a number at the edge ("12" of "1234") may go on in the next chunk
            self.pos = end
            return obj

    def element(self, key: str) -> tuple[Any, bool]:
        """Decode the next element of the array ``key`` and its ',' or ']': (element, whether more follow)."""
        # The common case inline (one C call per row): a compact element followed, inside the
        # window, by its ','. Anything else (whitespace, the window's edge, errors) goes the careful way.
        buf, pos = self.buf, self.pos
        try:
            obj, end = _DECODE(buf, pos)
        except (json.JSONDecodeError, _Invalid):
            end = len(buf)
        if end < len(buf) - 1:
            self.pos = end
        else:
            obj = self.value()
        buf, pos = self.buf, self.pos
        if pos < len(buf) and buf[pos] == ",":
            self.pos = pos + 1
            return obj, True
        found = self.peek()
        self.pos += 1
        if found == ",":
            return obj, True
        if found == "]":
            return obj, False
        if not found:
            raise EOFError
        raise _Invalid(f"expected ',' or ']' in the '{key}' array, found {found!r}")

    def fill(self, chars: int) -> None:
        """Read on until at least ``chars`` characters lie ahead of ``pos`` (or the body ends)."""
        while len(self.buf) - self.pos < chars and self.more():
            pass


# A run handed to a run decoder at once: some thousand rows, few enough that a declined run is cheap to redo.
# Each run costs a fixed few hundred microseconds of numpy calls in the carry-over's matching; at 64 KiB (340
# rows) that was 0.3 s of a 1M-row landing, and 256 KiB landed every sync faster (3 alternating pairs:
# empty 3.4 -> 3.0 s, no change 1.24 -> 1.07 s, 5 % changed 2.04 -> 1.89 s); 1 MiB was slower again.
RUN_CHARS = 1 << 18


def _find_array_end(buf: str, pos: int, limit: int) -> int:
    """``buf.find("}]", pos, limit)``, several times faster on JSON rows.

    Every row ends with ``}``, so a search for the pair stops at each row's end (0.16 s per 190 MB);
    ``]`` is rare outside an array's end, and a search for one character alone runs at memchr speed.
    """
    end = buf.find("]", pos + 1, limit)
    while end >= 0 and buf[end - 1] != "}":
        end = buf.find("]", end + 1, limit)
    return end - 1 if end >= 0 else -1


class ArrayReader:
    """One array of the document, read once: element by element (an iterator), or in runs (``runs``)."""

    def __init__(self, window: _Window, key: str):
        self._window, self.key = window, key
        self._started = False
        self._done = False

    def _begin(self) -> bool:
        if not self._started:
            self._started = True
            if self._window.peek() == "]":
                self._window.pos += 1
                self._done = True
        return not self._done

    def __iter__(self) -> ArrayReader:
        return self

    def __next__(self) -> Any:
        if not self._begin():
            raise StopIteration
        obj, more = self._window.element(self.key)
        self._done = not more
        return obj

    def runs(self, decode: Callable[[str], list | None] | None) -> Iterator[tuple[bool, list]]:
        """The elements as ``(True, decode(text))`` where ``decode`` took a run of whole elements at once,
        else as ``(False, [element])``, one by one the careful way.

        ``decode`` gets the text of complete elements (``{...},{...}``, no brackets) and returns its
        rows, or None to decline it; the elements of a declined run are then read one by one. A run ends
        at a ``},`` (or, the array's last, at a ``}]``) found by plain text search, which may lie inside a
        string: then the text is not valid JSON, ``decode`` declines it, and nothing is lost but time. A run
        ``decode`` accepts is exactly the elements the careful way would read, as JSON is read left to right
        and the run starts where an element starts.
        """
        window = self._window
        careful_until = -1  # absolute position up to which elements go one by one (a run was declined)
        while self._begin():
            if decode is not None:
                window.fill(RUN_CHARS)
                buf, pos = window.buf, window.pos
                if window.base + pos >= careful_until:
                    limit = min(len(buf), pos + RUN_CHARS)
                    end = _find_array_end(buf, pos, limit)  # do not run on past the array's end
                    if end > pos:  # the array's last elements, its last one too (else landed one by one)
                        rows = decode(buf[pos:end + 1])
                        if rows is not None:
                            window.pos, self._done = end + 2, True
                            yield True, rows
                            continue
                    cut = buf.rfind("},", pos, end if end >= 0 else limit)
                    if cut > pos:
                        rows = decode(buf[pos:cut + 1])
                        if rows is not None:
                            window.pos = cut + 2
                            yield True, rows
                            continue
                        careful_until = window.base + cut + 2
            obj, more = window.element(self.key)
            self._done = not more
            yield False, [obj]


@dataclass
class DocumentHeader:
    generated_at: str | None = None
    updated_since: str | None = None
    bytes_read: int = 0


def walk_extract(
    chunks: Iterable[bytes],
    on_array: Callable[[Entity, ArrayReader], None],
) -> DocumentHeader:
    """Parse the whole document, calling ``on_array(entity, rows)`` for each entity array in it.

    ``on_array`` may consume ``rows`` (iterate it, or read it in ``runs``) or not; the rest is skipped. Returns the
    scalar header fields once the document has been read to its end.
    """
    window = _Window(chunks)
    header = DocumentHeader()
    try:
        _walk(window, header, on_array)
    except EOFError:
        raise ExtractError(
            f"the /sync/all body ended after {window.bytes_read} bytes before the JSON document was complete "
            f"(cut off mid-way?)"
        ) from None
    except _Invalid as exc:
        raise ExtractError(
            f"the /sync/all body is not valid JSON (within its first {window.bytes_read} bytes): {str(exc)[:200]}"
        ) from None
    header.bytes_read = window.bytes_read
    return header


def _walk(window: _Window, header: DocumentHeader, on_array) -> None:
    first = window.peek()
    if not first:
        raise EOFError
    if first != "{":
        kind = "an array" if first == "[" else "something else"
        raise ExtractError(f"the /sync/all body must be a JSON object, it starts with {kind} ({first!r})")
    window.pos += 1
    if window.peek() == "}":
        window.pos += 1
    else:
        while True:
            found = window.peek()
            if found != '"':
                if not found:
                    raise EOFError
                raise _Invalid(f"expected a key (a string) in the top-level object, found {found!r}")
            key = window.value()
            window.expect(":", f"':' after the key {key[:40]!r}")
            _member(window, header, key, on_array)
            found = window.peek()
            window.pos += 1
            if found == "}":
                break
            if found != ",":
                if not found:
                    raise EOFError
                raise _Invalid(f"expected ',' or '}}' after the value of {key[:40]!r}, found {found!r}")
    # Anything after the top-level object is a protocol error, not data.
    if window.peek():
        raise ExtractError("the /sync/all body has data after the top-level object")


def _member(window: _Window, header: DocumentHeader, key: str, on_array) -> None:
    entity = by_extract_key(key)
    if key in ("generated_at", "updated_since"):
        value = window.value()
        if value is not None and not isinstance(value, str):
            raise ExtractError(f"'{key}' in the /sync/all body must be a string, got {type(value).__name__}")
        setattr(header, key, value)
    elif entity is not None:
        start = window.peek()
        if start != "[":
            value = window.value()
            if value is None:
                return
            raise ExtractError(f"'{key}' in the /sync/all body must be an array, got {type(value).__name__}")
        window.pos += 1
        rows = ArrayReader(window, key)
        on_array(entity, rows)
        for _ in rows:  # drain whatever the callback did not consume
            pass
    elif window.peek() == "[":
        window.pos += 1
        for _ in ArrayReader(window, key):  # an unknown array is skipped element by element, never held whole
            pass
    else:
        window.value()
