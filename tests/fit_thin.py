"""A long real FIT file made short: every n-th record message kept, every other message exactly as written.

The corpus differential (``test_fit_differential.py``) compares the fast scan with fitparse on every file; on a
100,000-record ride fitparse alone takes half a minute. A thinned copy keeps what differs between devices (their
definitions, developer fields, compressed timestamps, sessions, laps and events, byte for byte) and drops only
the bulk of the records, so both decoders still meet each device's encoding.
"""

from __future__ import annotations

from fit_walk import NotFit, messages

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
    out = bytearray()
    records = 0
    try:
        for message in messages(body, 0, len(body)):
            if message.is_data and message.definition.number == RECORD:
                records += 1
                if (records - 1) % keep_every:  # the 1st, (n+1)-th, … record stays
                    continue
            out += body[message.start : message.start + message.length]
    except NotFit:
        return None
    header = bytearray(data[:header_size])
    header[4:8] = len(out).to_bytes(4, "little")
    if header_size == 14:
        header[12:14] = fit_crc(bytes(header[:12])).to_bytes(2, "little")
    thinned = bytes(header) + bytes(out)
    return thinned + fit_crc(thinned).to_bytes(2, "little")
