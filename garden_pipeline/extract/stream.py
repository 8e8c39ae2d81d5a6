"""Streaming parse of the /sync/all document.

The document can be hundreds of MB, so it is never held in memory: ijson's C
backend turns the byte stream into parse events, and each entity array is
walked item by item. Unknown top-level keys are skipped; a document that ends
early or is not valid JSON raises ExtractError.
"""

from __future__ import annotations

import functools
import itertools
import operator
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator

import ijson

from garden_pipeline.catalogue import Entity, by_extract_key


class ExtractError(RuntimeError):
    """The extract could not be read completely; nothing from it may be written."""


class _ChunkReader:
    """File-like adapter so ijson can pull from an iterator of byte chunks."""

    def __init__(self, chunks: Iterable[bytes]):
        self._chunks = iter(chunks)
        self.bytes_read = 0

    def read(self, size: int = -1) -> bytes:
        if size == 0:  # ijson probes with read(0) to tell bytes from str; consume nothing
            return b""
        for chunk in self._chunks:
            if chunk:
                self.bytes_read += len(chunk)
                return chunk
        return b""


@dataclass
class DocumentHeader:
    generated_at: str | None = None
    updated_since: str | None = None
    bytes_read: int = 0


def walk_extract(
    chunks: Iterable[bytes],
    on_array: Callable[[Entity, Iterator[Any]], None],
) -> DocumentHeader:
    """Parse the whole document, calling ``on_array(entity, rows)`` for each entity array in it.

    ``on_array`` must consume ``rows`` (or not; the rest is skipped). Returns the
    scalar header fields once the document has been read to its end.
    """
    reader = _ChunkReader(chunks)
    header = DocumentHeader()
    events = ijson.parse(reader, use_float=False)
    try:
        _walk(events, header, on_array)
    except ijson.JSONError as exc:
        # yajl reports every syntax error as "incomplete"; only an early end of input is a cut-off body.
        text = str(exc)
        if "premature EOF" in text or "document ended" in text or "empty body" in text:
            raise ExtractError(
                f"the /sync/all body ended after {reader.bytes_read} bytes before the JSON document was complete "
                f"(cut off mid-way?)"
            ) from None
        raise ExtractError(
            f"the /sync/all body is not valid JSON (within its first {reader.bytes_read} bytes): "
            f"{text.splitlines()[0][:200]}"
        ) from None
    header.bytes_read = reader.bytes_read
    return header


def _walk(events: Iterator, header: DocumentHeader, on_array) -> None:
    first = next(events, None)
    if first is None:
        raise ijson.IncompleteJSONError("empty body")
    if first[1] != "start_map":
        raise ExtractError(f"the /sync/all body must be a JSON object, it starts with {first[1]}")
    for prefix, event, value in events:
        if prefix == "" and event == "end_map":
            # Anything after the top-level object is a protocol error, not data.
            for _ in events:
                raise ExtractError("the /sync/all body has data after the top-level object")
            return
        if event != "map_key":
            continue
        key = value
        entity = by_extract_key(key)
        if key in ("generated_at", "updated_since"):
            _, ev, val = next(events)
            if ev not in ("string", "null"):
                raise ExtractError(f"'{key}' in the /sync/all body must be a string, got {ev}")
            setattr(header, key, val)
        elif entity is not None:
            _, ev, _ = next(events)
            if ev == "null":
                continue
            if ev != "start_array":
                raise ExtractError(f"'{key}' in the /sync/all body must be an array, got {ev}")
            rows = _array_items(events, key)
            on_array(entity, rows)
            for _ in rows:  # drain whatever the callback did not consume
                pass
        else:
            _skip_value(events)
    raise ijson.IncompleteJSONError("document ended inside the top-level object")


_BACKEND = ijson.get_backend(ijson.backend)  # the C one (yajl2_c) when installed, as it is from wheels
_BATCH = 4096  # parse events fed to the item builder per C-level loop


def _array_items(events: Iterator, key: str) -> Iterator[Any]:
    """The items of the array ``key`` whose start event was just read, one by one.

    The parse events are fed to ijson's C item builder in batches by C-level iterator pieces
    (``map``, ``islice``, ``takewhile``), so no Python code runs per event: the document has
    ~15 events per row, and a Python loop over them cost more than the rest of the parse.
    takewhile stops at the array's end event (and consumes it); a body that ends before that
    makes the parser itself raise, so a cut-off array is never taken for a whole one.
    """
    built = ijson.utils.sendable_list()
    builder = _BACKEND.items_basecoro(built, f"{key}.item")
    send = builder.send
    send((key, "start_array", None))
    in_array = itertools.takewhile(functools.partial(operator.ne, (key, "end_array", None)), events)
    while True:
        fed = len(list(map(send, itertools.islice(in_array, _BATCH))))
        yield from built
        built.clear()
        if fed < _BATCH:
            return


def _skip_value(events: Iterator) -> None:
    depth = 0
    for _, event, _ in events:
        if event in ("start_map", "start_array"):
            depth += 1
        elif event in ("end_map", "end_array"):
            depth -= 1
        if depth == 0:
            return
    raise ijson.IncompleteJSONError("document ended inside a value")
