"""Read TensorFlow V2 checkpoints ("tensor bundles") with numpy alone, no TensorFlow.

A checkpoint with prefix P is `P.index` plus `P.data-SSSSS-of-NNNNN` shard files (hfl ships one
shard: `xlnet_model.ckpt.data-00000-of-00001`).

`P.index` is a LevelDB-style table (TF's `lib/io/table`):
  * footer (last 48 bytes): metaindex BlockHandle, index BlockHandle (each varint64 offset +
    varint64 size), zero padding to 40 bytes, then the magic 0xdb4775248b80fb57 (fixed64 LE);
  * a block is entries `varint32 shared, varint32 non_shared, varint32 value_len, key delta,
    value` (keys prefix-compressed against the previous key, reset at restart points), then the
    restart offsets (fixed32 each) and their count (fixed32); each block on disk is followed by a
    5-byte trailer: compression type (0 = none; TF never compresses bundles) and the masked
    crc32c of block + type byte;
  * the index block maps each data block's last key to that block's BlockHandle.
Key "" holds a BundleHeaderProto (num_shards=1, endianness=2, version=3); every other key is a
tensor name with a BundleEntryProto value (dtype=1, shape=2, shard_id=3, offset=4, size=5,
crc32c=6 fixed32, slices=7). The entry's crc32c is the *masked* crc32c of the tensor's bytes
(`crc32c::Mask`, as TF's BundleWriter::Add stores it; checked against TF 2.21's output).
Protobuf wire format is parsed by hand, so there is no protobuf dependency either.

Tensors are raw little-endian bytes at `offset`/`size` in their shard. Supported dtypes: the
numeric ones and bool; bfloat16 is widened to float32. DT_STRING and partitioned (sliced)
variables are refused by `read_tensor` and skipped, with a log line, by `read_tf_checkpoint`.
Every problem is a `CxlnetError` naming the file and what is wrong.
"""
from __future__ import annotations

import functools
import logging
import math
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cxlnet.errors import CxlnetError

log = logging.getLogger(__name__)

_MAGIC = 0xDB4775248B80FB57
_FOOTER_LEN = 48
_TRAILER_LEN = 5

# TF DataType enum -> numpy dtype (little-endian). bfloat16 (14) is handled separately.
_DTYPES: dict[int, np.dtype] = {
    1: np.dtype("<f4"), 2: np.dtype("<f8"), 3: np.dtype("<i4"), 4: np.dtype("u1"), 5: np.dtype("<i2"),
    6: np.dtype("i1"), 8: np.dtype("<c8"), 9: np.dtype("<i8"), 10: np.dtype("?"), 17: np.dtype("<u2"),
    18: np.dtype("<c16"), 19: np.dtype("<f2"), 22: np.dtype("<u4"), 23: np.dtype("<u8"),
}
_BFLOAT16 = 14
_DTYPE_NAMES = {7: "string", 11: "qint8", 12: "quint8", 13: "qint32", 14: "bfloat16", 15: "qint16",
                16: "quint16", 20: "resource", 21: "variant"}


# ---------------------------------------------------------------------------- crc32c
def _make_table() -> np.ndarray:
    poly = 0x82F63B78  # Castagnoli, reflected
    table = np.zeros(256, dtype=np.uint32)
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ poly if c & 1 else c >> 1
        table[i] = c
    return table


_T0 = _make_table()
# Slicing-by-4 tables: _TS[k][b] = the register after feeding byte b followed by k zero bytes.
_TS = [_T0]
for _k in range(3):
    _prev = _TS[-1]
    _TS.append((_prev >> np.uint32(8)) ^ _T0[_prev & np.uint32(0xFF)])
_T0_LIST = [int(x) for x in _T0]


def _crc_update_py(reg: int, data: bytes) -> int:
    """Advance the raw (un-inverted) crc32c register over `data`, byte by byte."""
    table = _T0_LIST
    for b in data:
        reg = table[(reg ^ b) & 0xFF] ^ (reg >> 8)
    return reg


@functools.lru_cache(maxsize=128)
def _shift_tables(nbytes: int) -> list[np.ndarray]:
    """Byte tables of the linear map "feed `nbytes` zero bytes into the register"."""
    # Columns of the one-zero-byte operator, then square-and-multiply, as in zlib's crc32_combine.
    def apply(cols: np.ndarray, x: int) -> int:
        r, i = 0, 0
        while x:
            if x & 1:
                r ^= int(cols[i])
            x >>= 1
            i += 1
        return r

    one = np.array([_crc_update_py(1 << i, b"\x00") for i in range(32)], dtype=np.uint64)
    result = np.array([1 << i for i in range(32)], dtype=np.uint64)  # identity
    power, n = one, nbytes
    while n:
        if n & 1:
            result = np.array([apply(power, int(c)) for c in result], dtype=np.uint64)
        power = np.array([apply(power, int(c)) for c in power], dtype=np.uint64)
        n >>= 1
    return [np.array([apply(result, b << (8 * k)) for b in range(256)], dtype=np.uint32) for k in range(4)]


def _apply_shift(tables: list[np.ndarray], x: np.ndarray) -> np.ndarray:
    return (tables[0][x & 0xFF] ^ tables[1][(x >> np.uint32(8)) & 0xFF]
            ^ tables[2][(x >> np.uint32(16)) & 0xFF] ^ tables[3][x >> np.uint32(24)])


def crc32c(data: bytes | bytearray | memoryview | np.ndarray) -> int:
    """Standard (unmasked) crc32c of `data`. Large inputs are cut into equal chunks whose
    registers are computed side by side with numpy and then combined (CRC is linear)."""
    buf = np.frombuffer(memoryview(data).cast("B"), dtype=np.uint8) if not isinstance(data, np.ndarray) \
        else data.reshape(-1).view(np.uint8)
    n = buf.size
    if n < 1 << 16:
        return _crc_update_py(0xFFFFFFFF, buf.tobytes()) ^ 0xFFFFFFFF
    # Chunks of `width` bytes (a multiple of 4), a power-of-two count; zero bytes in front of the
    # message leave a zero register unchanged, so the first chunk is padded in front.
    chunks = 1 << min(14, max(1, (n // 4096).bit_length() - 1))
    width = -(-n // chunks)
    width += -width % 4
    padded = np.zeros(chunks * width, dtype=np.uint8)
    padded[padded.size - n:] = buf
    words = np.ascontiguousarray(padded.view("<u4").reshape(chunks, width // 4).T)
    reg = np.zeros(chunks, dtype=np.uint32)
    t0, t1, t2, t3 = _TS
    for row in words:
        reg ^= row
        reg = t3[reg & 0xFF] ^ t2[(reg >> np.uint32(8)) & 0xFF] ^ t1[(reg >> np.uint32(16)) & 0xFF] \
            ^ t0[reg >> np.uint32(24)]
    span = width
    while reg.size > 1:  # combine neighbours: reg(A B) = shift(reg(A), len B) ^ reg(B)
        reg = _apply_shift(_shift_tables(span), reg[0::2]) ^ reg[1::2]
        span *= 2
    init = int(_apply_shift(_shift_tables(n), np.array([0xFFFFFFFF], dtype=np.uint32))[0])
    return (int(reg[0]) ^ init) ^ 0xFFFFFFFF


def mask_crc(crc: int) -> int:
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


# ---------------------------------------------------------------------------- protobuf wire format
class _Corrupt(Exception):
    pass


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise _Corrupt("bad varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


def _fields(buf: bytes) -> list[tuple[int, int, int | bytes]]:
    """(field number, wire type, value) for every field of a protobuf message."""
    out, pos = [], 0
    while pos < len(buf):
        tag, pos = _varint(buf, pos)
        num, wire = tag >> 3, tag & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            if pos + 8 > len(buf):
                raise _Corrupt("truncated fixed64")
            value, pos = struct.unpack_from("<Q", buf, pos)[0], pos + 8
        elif wire == 2:
            size, pos = _varint(buf, pos)
            if pos + size > len(buf):
                raise _Corrupt("truncated length-delimited field")
            value, pos = bytes(buf[pos:pos + size]), pos + size
        elif wire == 5:
            if pos + 4 > len(buf):
                raise _Corrupt("truncated fixed32")
            value, pos = struct.unpack_from("<I", buf, pos)[0], pos + 4
        else:
            raise _Corrupt(f"unsupported protobuf wire type {wire}")
        out.append((num, wire, value))
    return out


def _int64(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v


@dataclass(frozen=True)
class TensorEntry:
    """One BundleEntryProto."""
    name: str
    dtype: int
    shape: tuple[int, ...]
    shard_id: int
    offset: int
    size: int
    crc32c: int | None  # masked, as stored
    sliced: bool

    @property
    def dtype_name(self) -> str:
        if self.dtype in _DTYPE_NAMES:
            return _DTYPE_NAMES[self.dtype]
        return str(_DTYPES[self.dtype]) if self.dtype in _DTYPES else f"DataType {self.dtype}"


def _parse_entry(name: str, buf: bytes) -> TensorEntry:
    dtype = shard = offset = size = 0
    crc: int | None = None
    shape: list[int] = []
    sliced = False
    for num, wire, value in _fields(buf):
        if num == 1 and wire == 0:
            dtype = value
        elif num == 2 and wire == 2:
            for snum, swire, svalue in _fields(value):
                if snum == 2 and swire == 2:
                    dim = 0
                    for dnum, dwire, dvalue in _fields(svalue):
                        if dnum == 1 and dwire == 0:
                            dim = _int64(dvalue)
                    shape.append(dim)
                elif snum == 3 and swire == 0 and svalue:
                    raise _Corrupt(f"tensor {name!r} has an unknown rank")
        elif num == 3 and wire == 0:
            shard = value
        elif num == 4 and wire == 0:
            offset = _int64(value)
        elif num == 5 and wire == 0:
            size = _int64(value)
        elif num == 6 and wire == 5:
            crc = value
        elif num == 7:
            sliced = True
    if any(d < 0 for d in shape) or offset < 0 or size < 0:
        raise _Corrupt(f"tensor {name!r} has a negative shape, offset or size")
    return TensorEntry(name, dtype, tuple(shape), shard, offset, size, crc, sliced)


# ---------------------------------------------------------------------------- the table (.index)
def _block(data: bytes, offset: int, size: int, check: bool = True) -> bytes:
    if offset < 0 or size < 0 or offset + size + _TRAILER_LEN > len(data):
        raise _Corrupt(f"block at {offset}+{size} runs past the end of the file ({len(data)} bytes)")
    contents = data[offset:offset + size]
    kind = data[offset + size]
    if check:
        stored = struct.unpack_from("<I", data, offset + size + 1)[0]
        if mask_crc(crc32c(data[offset:offset + size + 1])) != stored:
            raise _Corrupt(f"block at offset {offset}: checksum mismatch")
    if kind != 0:
        raise _Corrupt(f"block at offset {offset} is compressed (type {kind}); only uncompressed tables are supported")
    return contents


def _block_entries(block: bytes) -> list[tuple[bytes, bytes]]:
    if len(block) < 4:
        raise _Corrupt("block too short")
    num_restarts = struct.unpack_from("<I", block, len(block) - 4)[0]
    limit = len(block) - 4 - 4 * num_restarts
    if limit < 0:
        raise _Corrupt("bad restart count in a block")
    out, pos, key = [], 0, b""
    while pos < limit:
        shared, pos = _varint(block, pos)
        non_shared, pos = _varint(block, pos)
        vlen, pos = _varint(block, pos)
        if shared > len(key) or pos + non_shared + vlen > limit:
            raise _Corrupt("bad entry in a block")
        key = key[:shared] + block[pos:pos + non_shared]
        pos += non_shared
        out.append((key, block[pos:pos + vlen]))
        pos += vlen
    return out


def _read_table(data: bytes) -> list[tuple[bytes, bytes]]:
    if len(data) < _FOOTER_LEN:
        raise _Corrupt(f"file is {len(data)} bytes, shorter than the {_FOOTER_LEN}-byte table footer (truncated?)")
    footer = data[-_FOOTER_LEN:]
    if struct.unpack_from("<Q", footer, 40)[0] != _MAGIC:
        raise _Corrupt("bad table magic number (not a TF V2 checkpoint index, or truncated)")
    pos = 0
    _meta_off, pos = _varint(footer, pos)
    _meta_size, pos = _varint(footer, pos)
    index_off, pos = _varint(footer, pos)
    index_size, pos = _varint(footer, pos)
    entries: list[tuple[bytes, bytes]] = []
    for _last_key, handle in _block_entries(_block(data, index_off, index_size)):
        off, p = _varint(handle, 0)
        size, _ = _varint(handle, p)
        entries.extend(_block_entries(_block(data, off, size)))
    return entries


# ---------------------------------------------------------------------------- the reader
def _index_path(prefix: Path) -> Path:
    return Path(str(prefix) + ".index")


def resolve_prefix(path: str | Path) -> Path:
    """A checkpoint prefix from the prefix itself, its `.index` file, or a directory holding one
    `*.ckpt.index` (hfl's `xlnet_model.ckpt` preferred; else the `checkpoint` file's latest)."""
    path = Path(path)
    if path.is_dir():
        if _index_path(path / "xlnet_model.ckpt").is_file():
            return path / "xlnet_model.ckpt"
        indexes = sorted(path.glob("*.index"))
        if not indexes:
            raise CxlnetError(f"{path}: no TF checkpoint (*.index) in this directory")
        latest = path / "checkpoint"
        if len(indexes) > 1 and latest.is_file():
            for line in latest.read_text(errors="replace").splitlines():
                if line.startswith("model_checkpoint_path:"):
                    name = line.split(":", 1)[1].strip().strip('"')
                    if _index_path(path / name).is_file():
                        return path / name
        return indexes[-1].with_suffix("")
    if path.suffix == ".index":
        return path.with_suffix("")
    if ".data-" in path.name:
        return path.with_name(path.name.split(".data-")[0])
    return path


class TFCheckpointReader:
    """The variables of one TF V2 checkpoint, read lazily from its shards."""

    def __init__(self, path: str | Path, verify: bool = True):
        self.prefix = resolve_prefix(path)
        self.verify = verify
        index = _index_path(self.prefix)
        try:
            data = index.read_bytes()
        except FileNotFoundError:
            raise CxlnetError(f"{index}: no such file (not a TF checkpoint prefix?)") from None
        except OSError as err:
            raise CxlnetError(f"{index}: cannot read: {err.strerror or err}") from None
        try:
            records = _read_table(data)
            if not records or records[0][0] != b"":
                raise _Corrupt("no bundle header (key \"\")")
            header = {num: value for num, _w, value in _fields(records[0][1])}
            self.num_shards = int(header.get(1, 1))
            if header.get(2, 0) != 0:
                raise _Corrupt("the tensors are big-endian; only little-endian checkpoints are supported")
            self.entries: dict[str, TensorEntry] = {}
            for key, value in records[1:]:
                if key.startswith(b"\x00"):
                    continue  # slices of partitioned variables, listed under their full tensor
                name = key.decode("utf-8", errors="replace")
                self.entries[name] = _parse_entry(name, value)
        except _Corrupt as err:
            raise CxlnetError(f"{index}: corrupt TF checkpoint index: {err}") from None
        for e in self.entries.values():
            if not 0 <= e.shard_id < self.num_shards:
                raise CxlnetError(f"{index}: corrupt TF checkpoint index: tensor {e.name!r} is in shard "
                                  f"{e.shard_id} of {self.num_shards}")

    def shard_path(self, shard: int) -> Path:
        return Path(f"{self.prefix}.data-{shard:05d}-of-{self.num_shards:05d}")

    def list_variables(self) -> list[tuple[str, list[int]]]:
        return [(name, list(e.shape)) for name, e in sorted(self.entries.items())]

    def read_tensor(self, name: str) -> np.ndarray:
        if name not in self.entries:
            raise CxlnetError(f"{self.prefix}: no variable {name!r} in the TF checkpoint")
        e = self.entries[name]
        where = f"{self.prefix}: variable {name!r}"
        if e.sliced:
            raise CxlnetError(f"{where} is partitioned (saved in slices), which is not supported")
        if e.dtype not in _DTYPES and e.dtype != _BFLOAT16:
            raise CxlnetError(f"{where} has dtype {e.dtype_name}, which cannot be read without TensorFlow")
        dtype = np.dtype("<u2") if e.dtype == _BFLOAT16 else _DTYPES[e.dtype]
        count = math.prod(e.shape)
        if count * dtype.itemsize != e.size:
            raise CxlnetError(f"{where}: the index says {e.size} bytes, but shape {list(e.shape)} of "
                              f"{e.dtype_name} needs {count * dtype.itemsize} (corrupt index)")
        shard = self.shard_path(e.shard_id)
        try:
            with open(shard, "rb") as fh:
                end = os.fstat(fh.fileno()).st_size
                if e.offset + e.size > end:
                    raise CxlnetError(f"{shard}: truncated: variable {name!r} needs bytes "
                                      f"{e.offset}..{e.offset + e.size}, the file ends at {end}")
                fh.seek(e.offset)
                raw = fh.read(e.size)
        except FileNotFoundError:
            raise CxlnetError(f"{shard}: no such file (data shard of {self.prefix})") from None
        except OSError as err:
            raise CxlnetError(f"{shard}: cannot read: {err.strerror or err}") from None
        if len(raw) != e.size:
            raise CxlnetError(f"{shard}: short read for variable {name!r} ({len(raw)} of {e.size} bytes)")
        if self.verify and e.crc32c is not None and mask_crc(crc32c(raw)) != e.crc32c:
            raise CxlnetError(f"{shard}: checksum mismatch for variable {name!r} (corrupt data file)")
        array = np.frombuffer(raw, dtype=dtype).reshape(e.shape)
        if e.dtype == _BFLOAT16:
            return (array.astype(np.uint32) << np.uint32(16)).view(np.float32)
        return array.astype(dtype.newbyteorder("="))  # native byte order, a writable copy

    def read_all(self) -> dict[str, np.ndarray]:
        """Every readable variable; string/variant/partitioned ones are skipped with a log line."""
        out: dict[str, np.ndarray] = {}
        for name, e in sorted(self.entries.items()):
            if e.sliced or (e.dtype not in _DTYPES and e.dtype != _BFLOAT16):
                log.info("%s: skipping variable %r (%s)", self.prefix, name,
                         "partitioned" if e.sliced else f"dtype {e.dtype_name}")
                continue
            out[name] = self.read_tensor(name)
        return out


def list_variables(path: str | Path) -> list[tuple[str, list[int]]]:
    """(name, shape) of every variable, sorted by name, like `tf.train.list_variables`."""
    return TFCheckpointReader(path).list_variables()


def read_tf_checkpoint(path: str | Path, verify: bool = True) -> dict[str, np.ndarray]:
    """All variables of a TF V2 checkpoint (prefix, `.index` file or directory) as numpy arrays."""
    return TFCheckpointReader(path, verify=verify).read_all()
