"""Sparse backing files of the stand-in's VDIs.

A VDI with data is a sparse file of exactly virtual_size bytes.  Test disks
can be many GiB with a few MiB written, so everything here walks the data
extents (lseek SEEK_DATA/SEEK_HOLE) and never reads or copies holes.

Pure functions over paths and file descriptors; no locking here.  Callers
hold the model lock around anything that must be atomic with respect to
guest writes (snapshot copies, write_file); reads of snapshot files need no
lock because a snapshot's data never changes.
"""

import errno
import hashlib
import os

BLOCK = 65536           # CBT block size (docs/xapi.md, "The CBT bitmap")
_COPY_CHUNK = 1 << 24   # per copy_file_range / read call
_ZEROS = bytes(1 << 20)


def data_extents(fd, size):
    """Yield (start, end) of the regions of FD below SIZE that may hold data.

    Falls back to one extent covering everything when the file system does
    not support SEEK_DATA.
    """
    pos = 0
    while pos < size:
        try:
            start = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError as e:
            if e.errno == errno.ENXIO:      # no data after pos
                return
            if e.errno in (errno.EINVAL, errno.EOPNOTSUPP):
                yield (pos, size)
                return
            raise
        if start >= size:
            return
        end = min(os.lseek(fd, start, os.SEEK_HOLE), size)
        yield (start, end)
        pos = end


def block_ranges(extents, block=BLOCK):
    """Merge byte extents into sorted, disjoint [first, last) block ranges."""
    out = []
    for s, e in sorted((s // block, (e + block - 1) // block) for s, e in extents):
        if out and s <= out[-1][1]:
            out[-1][1] = max(out[-1][1], e)
        else:
            out.append([s, e])
    return out


def pread_full(fd, length, offset):
    """LENGTH bytes at OFFSET; anything past end of file reads as zeros."""
    parts = []
    got = 0
    while got < length:
        b = os.pread(fd, length - got, offset + got)
        if not b:
            break
        parts.append(b)
        got += len(b)
    data = b"".join(parts)
    if got < length:
        data += bytes(length - got)
    return data


def create(path, size):
    """A new all-zero (fully sparse) file of SIZE bytes."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.ftruncate(fd, size)
    finally:
        os.close(fd)


def _copy_range(fin, fout, start, end):
    pos = start
    use_cfr = hasattr(os, "copy_file_range")
    while pos < end:
        n = min(_COPY_CHUNK, end - pos)
        if use_cfr:
            try:
                done = os.copy_file_range(fin, fout, n, pos, pos)
            except OSError as e:
                if e.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL,
                                   errno.EOPNOTSUPP):
                    raise
                use_cfr = False
                continue
            if done == 0:      # source shorter than expected: rest is zeros
                return
            pos += done
        else:
            data = os.pread(fin, n, pos)
            if not data:
                return
            os.pwrite(fout, data, pos)
            pos += len(data)


def sparse_copy(src, dst, size):
    """Copy the first SIZE bytes of SRC into a new sparse file DST, data only."""
    fin = os.open(src, os.O_RDONLY)
    try:
        fout = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.ftruncate(fout, size)
            for s, e in data_extents(fin, size):
                _copy_range(fin, fout, s, e)
            # XenServer's snapshots are copy-on-write: nothing is left for
            # the disk to do after one.  Our copy's writeback would run
            # during whatever the client does next (and be timed with it).
            os.fsync(fout)
        finally:
            os.close(fout)
    finally:
        os.close(fin)


def md5_fd(fd, size):
    """md5 hex of SIZE bytes of FD, holes hashed as zeros without reading them."""
    h = hashlib.md5()
    zeros = memoryview(_ZEROS)

    def feed_zeros(n):
        while n > 0:
            k = min(n, len(zeros))
            h.update(zeros[:k])
            n -= k

    pos = 0
    for s, e in data_extents(fd, size):
        feed_zeros(s - pos)
        while s < e:
            n = min(_COPY_CHUNK, e - s)
            h.update(pread_full(fd, n, s))
            s += n
        pos = e
    feed_zeros(size - pos)
    return h.hexdigest()


def allocated_bytes(path):
    try:
        return os.stat(path).st_blocks * 512
    except OSError:
        return 0
