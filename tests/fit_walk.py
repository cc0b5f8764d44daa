"""The message structure of a FIT segment, walked without decoding a value: where each message starts and ends,
and the definition it is read by (definition and data messages, compressed-timestamp headers, developer fields).

Tools that rewrite real device files use it: ``tests/fit_thin.py`` (records thinned) and ``bench/fit_shift.py``
(timestamps moved).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass


class NotFit(ValueError):
    """The bytes are not a FIT segment this walker understands."""


@dataclass(frozen=True)
class Definition:
    """How the data messages of one local message type are laid out."""

    number: int  # the FIT profile's global message number
    endian: str  # a struct byte-order character
    fields: list[tuple[int, int]]  # (field number, size in bytes), in order
    dev_size: int  # bytes of developer fields after the fields


@dataclass(frozen=True)
class Message:
    """One message of a segment: ``length`` bytes from ``start`` (its header byte included)."""

    start: int
    length: int
    definition: Definition
    is_data: bool


def messages(buf: bytes | bytearray, pos: int, end: int) -> Iterator[Message]:
    """Every message between ``pos`` and ``end`` (one segment's records), in order; NotFit where the structure
    breaks: data before its definition, or a message past ``end``."""
    definitions: dict[int, Definition] = {}
    while pos < end:
        head = buf[pos]
        try:
            if head & 0x40 and not head & 0x80:  # a definition message
                endian = ">" if buf[pos + 2] == 1 else "<"
                (number,) = struct.unpack_from(endian + "H", buf, pos + 3)
                count = buf[pos + 5]
                fields = [(buf[pos + 6 + 3 * i], buf[pos + 7 + 3 * i]) for i in range(count)]
                length = 6 + 3 * count
                dev = 0
                if head & 0x20:  # developer fields follow
                    n_dev = buf[pos + length]
                    dev = sum(buf[pos + length + 2 + 3 * i] for i in range(n_dev))
                    length += 1 + 3 * n_dev
                definition = Definition(number, endian, fields, dev)
                definitions[head & 0x0F] = definition
                message = Message(pos, length, definition, is_data=False)
            else:
                # A compressed-timestamp header is a data message of local type 0-3.
                local = (head >> 5) & 0x03 if head & 0x80 else head & 0x0F
                if local not in definitions:
                    raise NotFit("data before its definition")
                definition = definitions[local]
                size = sum(size for _, size in definition.fields) + definition.dev_size
                message = Message(pos, 1 + size, definition, is_data=True)
        except (IndexError, struct.error) as err:
            raise NotFit("a message is cut off") from err
        if pos + message.length > end:
            raise NotFit("records do not end where the header says")
        yield message
        pos += message.length
