"""The dynamic VHD that XAPI's GET /export_raw_vdi?format=vhd streams
(docs/vhd-export.md, "The stream"): footer, dynamic header, BAT, then for each
included 2 MiB block an all-0xFF sector bitmap and the data, then the
footer again.

It is what vhd-tool's vhd_common / vhd_from_raw (ocaml-vhd) write, so a
client can be tested against the exact bytes: big-endian fields, XAPI's
defaults (creator "caml", timestamp 0, no batmap, no parent), one fresh
uid per export.  Pure functions over bytes and file descriptors; the
stream is a generator so a 2 TiB disk is never held in memory.
"""

import array
import bisect
import struct
import sys
import uuid as uuidlib

import disk

SECTOR = 512
BLOCK = 2 << 20                    # VHD block size (header block_size)
BITMAP = b"\xff" * SECTOR          # one sector: all 4096 sectors present
BLOCK_SECTORS = (SECTOR + BLOCK) // SECTOR   # 4097 sectors per block on the wire
TABLE_OFFSET = 2048
MAX_VHD_SIZE = 2040 << 30          # xapi Constants.max_vhd_size
UNUSED = 0xFFFFFFFF

# Footer: cookie features version data_offset timestamp creator_app
# creator_version creator_host_os original_size current_size cylinders
# heads sectors_per_track disk_type checksum uid saved_state, 427 reserved.
_FOOTER = struct.Struct(">8sIIQI4sIIQQHBBII16sB427x")
# Header: cookie data_offset table_offset version max_table_entries
# block_size checksum parent_uid parent_timestamp (4 reserved)
# parent_unicode_name, 8 parent locators, 256 reserved.
_HEADER = struct.Struct(">8sQQIIII16sI4x512s192s256x")
assert _FOOTER.size == 512 and _HEADER.size == 1024

_ZERO_WIRE_BLOCK = BITMAP + bytes(BLOCK)   # an included block with no data
assert array.array("I").itemsize == 4


def checksum(data, field_offset):
    """One's complement of the byte sum, the 4-byte field at FIELD_OFFSET
    counted as zero (footer @64, header @36)."""
    s = sum(data) - sum(data[field_offset:field_offset + 4])
    return ~s & 0xFFFFFFFF


def geometry(size):
    """(cylinders, heads, sectors per track) for SIZE bytes, as ocaml-vhd's
    Geometry.of_sectors (note: '>' where Microsoft's spec has '>=')."""
    s = min(size // SECTOR, 65535 * 16 * 255)
    if s > 65535 * 16 * 63:
        spt, h = 255, 16
        cth = s // spt
    else:
        spt = 17
        cth = s // spt
        h = max((cth + 1023) // 1024, 4)
        if cth >= h * 1024 or h > 16:
            spt, h = 31, 16
            cth = s // spt
        if cth >= h * 1024:
            spt, h = 63, 16
            cth = s // spt
    return cth // h, h, spt


def footer(current_size, uid, checksum_delta=0):
    """The 512-byte footer; CHECKSUM_DELTA corrupts the checksum (a fault)."""
    cyl, heads, spt = geometry(current_size)
    fields = [b"conectix", 0x00000002, 0x00010000, 512, 0, b"caml",
              0x00000001, 0, current_size, current_size, cyl, heads, spt,
              3, 0, uid, 0]
    raw = _FOOTER.pack(*fields)
    fields[14] = (checksum(raw, 64) + checksum_delta) & 0xFFFFFFFF
    return _FOOTER.pack(*fields)


def header(n_blocks):
    fields = [b"cxsparse", 0xFFFFFFFFFFFFFFFF, TABLE_OFFSET, 0x00010000,
              n_blocks, BLOCK, 0, bytes(16), 0, bytes(512), bytes(192)]
    raw = _HEADER.pack(*fields)
    fields[6] = checksum(raw, 36)
    return _HEADER.pack(*fields)


def bat_bytes(n_blocks):
    """B: the BAT's size on the wire (4 bytes a block, whole sectors)."""
    return (4 * n_blocks + SECTOR - 1) // SECTOR * SECTOR


def iter_blocks(ranges):
    for first, last in ranges:
        yield from range(first, last)


def count_blocks(ranges):
    return sum(last - first for first, last in ranges)


def bat(n_blocks, ranges):
    """The BAT: the k-th included block sits at sector (2048+B)/512 + k*4097;
    every other entry, padding included, is 0xFFFFFFFF."""
    b = bat_bytes(n_blocks)
    table = array.array("I", [UNUSED]) * (b // 4)
    sector = (TABLE_OFFSET + b) // SECTOR
    for i in iter_blocks(ranges):
        table[i] = sector
        sector += BLOCK_SECTORS
    if sys.byteorder == "little":
        table.byteswap()
    return table.tobytes()


def stream_length(n_blocks, k):
    """2560 + B + K * 2097664 (docs/vhd-export.md, "The stream")."""
    return TABLE_OFFSET + bat_bytes(n_blocks) + k * (SECTOR + BLOCK) + SECTOR


def data_ranges(fd, size):
    """[first, last) 2 MiB block ranges of FD (SIZE bytes) holding any
    allocated data; walks extents, never the holes."""
    return [tuple(r) for r in disk.block_ranges(disk.data_extents(fd, size),
                                                 BLOCK)]


def _has_data(starts, ranges, i):
    j = bisect.bisect_right(starts, i) - 1
    return j >= 0 and i < ranges[j][1]


def stream(fd, size, current_size, included, with_data, checksum_delta=0):
    """Yield the VHD stream of the SIZE-byte disk in FD, in pieces.

    CURRENT_SIZE goes in the footer; INCLUDED is the [first, last) block
    ranges listed in the BAT; WITH_DATA the ranges that have allocated
    data (other included blocks are sent as zeros without reading).  The
    last block of a disk that is not a multiple of 2 MiB is padded with
    zeros.  The first piece is footer + header (1536 bytes), so a fault
    can stop right after it.
    """
    n = (current_size + BLOCK - 1) // BLOCK
    foot = footer(current_size, uuidlib.uuid4().bytes, checksum_delta)
    yield foot + header(n)
    yield bytes(TABLE_OFFSET - 1536) + bat(n, included)
    starts = [r[0] for r in with_data]
    for i in iter_blocks(included):
        off = i * BLOCK
        if off < size and _has_data(starts, with_data, i):
            data = disk.pread_full(fd, min(BLOCK, size - off), off)
            yield BITMAP + data.ljust(BLOCK, b"\0")
        else:
            yield _ZERO_WIRE_BLOCK
    yield foot
