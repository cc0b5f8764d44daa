"""A long real FIT file made short: every n-th record message kept, every other message exactly as written.

The corpus differential (``test_fit_differential.py``) compares the fast scan with fitparse on every file; on a
100,000-record ride fitparse alone takes half a minute. A thinned copy keeps what differs between devices (their
definitions, developer fields, compressed timestamps, sessions, laps and events, byte for byte) and drops only
the bulk of the records, so both decoders still meet each device's encoding.
"""

from __future__ import annotations

from ingest.fit_integrity import fit_crc

RECORD = 20  # the FIT profile's global message number of ``record``


def thin_records(data: bytes, keep_every: int) -> bytes | None:
    """``data`` with only every ``keep_every``-th record message kept; data size and both CRCs recomputed.

    None when the file is not one whole, walkable FIT segment (chained, truncated or damaged files are compared
    whole instead).
    """
    if len(data) < 14 or keep_every < 1:
        return None
    header_size = data[0]
    data_size = int.from_bytes(data[4:8], "little")
    if header_size not in (12, 14) or data[8:12] != b".FIT" or header_size + data_size + 2 != len(data):
        return None
    body = data[header_size : header_size + data_size]
    definitions: dict[int, tuple[int, int]] = {}  # local message type -> (global number, data size)
    out = bytearray()
    records = 0
    pos = 0
    try:
        while pos < len(body):
            head = body[pos]
            if head & 0x80:  # compressed-timestamp header: a data message of local type 0-3
                number, size = definitions[(head >> 5) & 0x03]
                length, is_data = 1 + size, True
            elif head & 0x40:  # a definition message
                big_endian = body[pos + 2] == 1
                number = int.from_bytes(body[pos + 3 : pos + 5], "big" if big_endian else "little")
                fields = body[pos + 5]
                size = sum(body[pos + 6 + 3 * i + 1] for i in range(fields))
                length = 6 + 3 * fields
                if head & 0x20:  # developer fields follow
                    dev_fields = body[pos + length]
                    size += sum(body[pos + length + 1 + 3 * i + 1] for i in range(dev_fields))
                    length += 1 + 3 * dev_fields
                definitions[head & 0x0F] = (number, size)
                is_data = False
            else:
                number, size = definitions[head & 0x0F]
                length, is_data = 1 + size, True
            if pos + length > len(body):
                return None
            keep = True
            if is_data and number == RECORD:
                keep = records % keep_every == 0
                records += 1
            if keep:
                out += body[pos : pos + length]
            pos += length
    except (KeyError, IndexError):
        return None
    header = bytearray(data[:header_size])
    header[4:8] = len(out).to_bytes(4, "little")
    if header_size == 14:
        header[12:14] = fit_crc(bytes(header[:12])).to_bytes(2, "little")
    thinned = bytes(header) + bytes(out)
    return thinned + fit_crc(thinned).to_bytes(2, "little")
