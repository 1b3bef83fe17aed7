"""Importer for the DenseFuse authors' released weights (no TensorFlow needed).

Two releases exist:

* TensorFlow 1.x checkpoints (the paper's numbers), one per SSIM weight lambda = 1e0..1e3,
  ``densefuse_model_bs2_epoch4_all_weight_1e<K>.ckpt.{index,data-00000-of-00001,meta}``,
  usually distributed as a zip. Variables ``encoder/conv1_1``, ``encoder/dense_block_conv1..3``,
  ``decoder/conv2_1..conv2_4`` (``kernel`` HWIO, ``bias``).
* The authors' PyTorch port (``densefuse_gray.model``): keys ``conv1.conv2d.*``,
  ``DB1.denseblock.{0,1,2}.dense_conv.conv2d.*``, ``conv2..conv5.conv2d.*``, with a ReLU after
  its last layer.

Differences handled here so that the project's model gives the official outputs:

* Input scale: the official networks take 0-255 gray levels, ours [0, 1]. The first
  convolution's kernel is multiplied by 255 and the last layer's kernel and bias divided by 255,
  so ``ours([0,1] image) * 255 == official(0-255 image)`` up to float rounding.
* Dense-block order: the TF code concatenates ``[new, x]``; ours ``[x, new]``. The input-channel
  groups of 16 of every layer that reads the block's output are reversed.
* Kernel layout: TF stores HWIO; PyTorch wants OIHW.

The TF ``.index`` file is a LevelDB-style sorted table (data blocks of prefix-compressed
key/value entries, an index block, a 48-byte footer) whose values are ``BundleEntryProto``
messages (dtype, shape, shard, offset, size); ``.data-00000-of-00001`` holds the raw
little-endian tensors. Both are parsed by hand below: the only library that reads them is
TensorFlow itself.
"""
from __future__ import annotations

import re
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np
import torch

from utils.errors import WeightsError

TF_MAGIC = 0xDB4775248B80FB57
TF_FLOAT = 1  # tensorflow DataType DT_FLOAT
LAMBDA_RE = re.compile(r"weight_1e(\d)\.ckpt")

#: TF variable scope -> (our layer prefix, TF dense-block depth of the input or None).
TF_LAYERS = {
    "encoder/conv1_1": ("encoder.conv1.conv", None),
    "encoder/dense_block_conv1": ("encoder.dense.layers.0.conv", 1),
    "encoder/dense_block_conv2": ("encoder.dense.layers.1.conv", 2),
    "encoder/dense_block_conv3": ("encoder.dense.layers.2.conv", 3),
    "decoder/conv2_1": ("decoder.layers.0.conv", 4),
    "decoder/conv2_2": ("decoder.layers.1.conv", None),
    "decoder/conv2_3": ("decoder.layers.2.conv", None),
    "decoder/conv2_4": ("decoder.layers.3.conv", None),
}
PT_LAYERS = {
    "conv1.conv2d": "encoder.conv1.conv",
    "DB1.denseblock.0.dense_conv.conv2d": "encoder.dense.layers.0.conv",
    "DB1.denseblock.1.dense_conv.conv2d": "encoder.dense.layers.1.conv",
    "DB1.denseblock.2.dense_conv.conv2d": "encoder.dense.layers.2.conv",
    "conv2.conv2d": "decoder.layers.0.conv",
    "conv3.conv2d": "decoder.layers.1.conv",
    "conv4.conv2d": "decoder.layers.2.conv",
    "conv5.conv2d": "decoder.layers.3.conv",
}
FIRST, LAST = "encoder.conv1.conv", "decoder.layers.3.conv"


# ---- protobuf / LevelDB primitives ------------------------------------------------------------

def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise ValueError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


def _proto_fields(buf: bytes):
    """Yield (field number, wire type, value) of a serialized protobuf message."""
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            value, pos = buf[pos:pos + 8], pos + 8
        elif wire == 2:
            n, pos = _varint(buf, pos)
            value, pos = buf[pos:pos + n], pos + n
        elif wire == 5:
            value, pos = buf[pos:pos + 4], pos + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        yield field, wire, value


def _block_entries(data: bytes, offset: int, size: int):
    """Key/value pairs of one uncompressed LevelDB block."""
    block = data[offset:offset + size]
    if len(block) != size or offset + size + 5 > len(data):
        raise ValueError("block outside the file")
    if data[offset + size] != 0:
        raise ValueError("compressed blocks are not supported")
    num_restarts = struct.unpack_from("<I", block, size - 4)[0]
    end = size - 4 * (num_restarts + 1)
    pos, key = 0, b""
    while pos < end:
        shared, pos = _varint(block, pos)
        unshared, pos = _varint(block, pos)
        vlen, pos = _varint(block, pos)
        key = key[:shared] + block[pos:pos + unshared]
        pos += unshared
        yield key, block[pos:pos + vlen]
        pos += vlen


def _fields(buf: bytes, expected: dict[int, int]):
    """(field, value) of a message whose fields in ``expected`` must have that wire type (a
    damaged file can put an integer where a nested message belongs); others are skipped."""
    for field, wire, value in _proto_fields(buf):
        if field in expected:
            if wire != expected[field]:
                raise ValueError(f"field {field} has wire type {wire}, expected {expected[field]}")
            yield field, value


def _entry(value: bytes) -> dict:
    """Decode a BundleEntryProto: dtype, shape, shard_id, offset, size."""
    out = {"dtype": 0, "shape": [], "shard_id": 0, "offset": 0, "size": 0}
    for field, v in _fields(value, {1: 0, 2: 2, 3: 0, 4: 0, 5: 0}):
        if field == 1:
            out["dtype"] = v
        elif field == 2:
            for _, dim in _fields(v, {2: 2}):
                out["shape"].append(next((s for _, s in _fields(dim, {1: 0})), 0))
        else:
            out[{3: "shard_id", 4: "offset", 5: "size"}[field]] = v
    return out


def read_tf_index(index: bytes) -> dict[str, dict]:
    """Tensor name -> BundleEntryProto fields, from the bytes of a ``.index`` file."""
    if len(index) < 48 or struct.unpack_from("<Q", index, len(index) - 8)[0] != TF_MAGIC:
        raise ValueError("not a TensorFlow checkpoint index (bad footer magic; truncated?)")
    footer = index[-48:]
    _, pos = _varint(footer, 0)      # metaindex handle (unused)
    _, pos = _varint(footer, pos)
    idx_off, pos = _varint(footer, pos)
    idx_size, pos = _varint(footer, pos)
    entries = {}
    for _, handle in _block_entries(index, idx_off, idx_size):
        off, p = _varint(handle, 0)
        size, _ = _varint(handle, p)
        for key, value in _block_entries(index, off, size):
            if key:  # the empty key holds the BundleHeaderProto
                entries[key.decode()] = _entry(value)
    return entries


def read_tf_tensors(index: bytes, data: bytes, names=None) -> dict[str, np.ndarray]:
    """Float32 tensors (all, or ``names``) of a single-shard TF checkpoint."""
    out = {}
    for name, e in read_tf_index(index).items():
        if names is not None and name not in names:
            continue
        if e["dtype"] != TF_FLOAT or e["shard_id"] != 0:
            continue
        if e["offset"] + e["size"] > len(data):
            raise ValueError(f"tensor {name!r} lies beyond the end of the .data file (truncated?)")
        arr = np.frombuffer(data, dtype="<f4", count=e["size"] // 4, offset=e["offset"])
        out[name] = arr.reshape(e["shape"]).astype(np.float32)
    return out


# ---- locating checkpoints ---------------------------------------------------------------------

def is_tensorflow_checkpoint(path: Path) -> bool:
    """A ``.index``/``.data-*`` file, a checkpoint prefix, a folder or a zip holding one."""
    path = Path(path)
    if path.is_dir():
        return any(path.rglob("*.ckpt.index")) or any(path.rglob("*.index"))
    if Path(str(path) + ".index").is_file():
        return True
    if path.suffix == ".index" or ".data-" in path.name:
        return True
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as z:
        return any(n.endswith(".index") for n in z.namelist())


def _pick(prefixes: list[str], ssim_weight: int | None, source: str) -> str:
    if not prefixes:
        raise WeightsError(f"{source}: no TensorFlow checkpoint (.index) found")
    if len(prefixes) == 1 and ssim_weight is None:
        return prefixes[0]
    by_lambda = {}
    for p in prefixes:
        m = LAMBDA_RE.search(p)
        if m:
            by_lambda[10 ** int(m.group(1))] = p
    if ssim_weight is None:
        if 100 in by_lambda:
            return by_lambda[100]  # the official default
        raise WeightsError(f"{source}: several checkpoints; choose one with --ssim_weight")
    if ssim_weight not in by_lambda:
        raise WeightsError(f"{source}: no checkpoint for lambda={ssim_weight} "
                           f"(found {sorted(by_lambda)})")
    return by_lambda[ssim_weight]


#: The most bytes a DenseFuse TF checkpoint's files can hold: the official ``.data`` files are
#: 890,324 bytes (the weights and Adam's two moments) and ``.index`` 1,872. Anything much larger
#: is not DenseFuse and is refused before it is read (a zip bomb would otherwise fill the memory).
MAX_INDEX_BYTES = 1 << 20
MAX_DATA_BYTES = 16 << 20


def _too_large(source: str, size: int, limit: int) -> WeightsError:
    return WeightsError(f"{source}: {size:,} bytes, more than a DenseFuse checkpoint file holds "
                        f"(at most {limit:,}); not a DenseFuse checkpoint")


def _read_member(z: zipfile.ZipFile, path: Path, name: str, limit: int) -> bytes:
    """A zip member's bytes, refused from its declared size before anything is decompressed,
    and read with that bound (a member whose data runs past its declared size fails its check)."""
    size = z.getinfo(name).file_size
    if size > limit:
        raise _too_large(f"{path}: {name}", size, limit)
    with z.open(name) as fh:
        data = fh.read(limit + 1)
    if len(data) > limit:
        raise _too_large(f"{path}: {name}", len(data), limit)
    return data


def _read_zip(path: Path, ssim_weight: int | None) -> tuple[bytes, bytes, str]:
    name = "its member list"
    try:
        with zipfile.ZipFile(path) as z:
            names = set(z.namelist())
            prefix = _pick(sorted(n[:-6] for n in names if n.endswith(".index")), ssim_weight, str(path))
            data_name = prefix + ".data-00000-of-00001"
            if data_name not in names:
                raise WeightsError(f"{path}: {data_name} is missing from the zip")
            name = prefix + ".index"
            index = _read_member(z, path, name, MAX_INDEX_BYTES)
            name = data_name
            return index, _read_member(z, path, data_name, MAX_DATA_BYTES), prefix
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as e:  # a damaged member (bad CRC, ...)
        raise WeightsError(f"{path}: damaged zip, {name} cannot be read ({e})") from None


def _read_pair(path: Path, ssim_weight: int | None) -> tuple[bytes, bytes, str]:
    """(index bytes, data bytes, chosen prefix) from any accepted form of a TF checkpoint."""
    src = str(path)
    if path.is_file() and zipfile.is_zipfile(path):
        return _read_zip(path, ssim_weight)
    if path.is_dir():
        prefix = _pick(sorted(str(p)[:-6] for p in path.rglob("*.index")), ssim_weight, src)
    elif path.suffix == ".index":
        prefix = str(path)[:-6]
    elif ".data-" in path.name:
        prefix = str(path).split(".data-")[0]
    else:
        prefix = str(path)
    index, data = Path(prefix + ".index"), Path(prefix + ".data-00000-of-00001")
    if not index.is_file():
        raise WeightsError(f"{index}: checkpoint index file not found")
    if not data.is_file():
        raise WeightsError(f"{data}: checkpoint data file not found (it must sit beside {index.name})")
    for f, limit in ((index, MAX_INDEX_BYTES), (data, MAX_DATA_BYTES)):
        if f.stat().st_size > limit:
            raise _too_large(str(f), f.stat().st_size, limit)
    return index.read_bytes(), data.read_bytes(), prefix


# ---- conversion -------------------------------------------------------------------------------

def _reverse_groups(w: torch.Tensor, depth: int) -> torch.Tensor:
    """Reverse the order of the ``depth`` 16-channel input groups of an OIHW kernel."""
    groups = torch.split(w, 16, dim=1)
    if len(groups) != depth:
        raise WeightsError(f"dense-block kernel has {w.shape[1]} inputs, expected {16 * depth}")
    return torch.cat(groups[::-1], dim=1)


def _rescale_io(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """0-255 network -> [0,1] network (see module docstring)."""
    state[f"{FIRST}.weight"] = state[f"{FIRST}.weight"] * 255.0
    state[f"{LAST}.weight"] = state[f"{LAST}.weight"] / 255.0
    state[f"{LAST}.bias"] = state[f"{LAST}.bias"] / 255.0
    return state


def load_tensorflow(path: Path, ssim_weight: int | None = None) -> tuple[dict, dict]:
    """State dict for :class:`DenseFuse` (inputs [0,1]) from an official TF checkpoint."""
    path = Path(path)
    index, data, prefix = _read_pair(path, ssim_weight)
    try:
        tensors = read_tf_tensors(index, data)
    except (ValueError, struct.error) as e:
        raise WeightsError(f"{path}: unreadable TensorFlow checkpoint: {e}") from None
    state = {}
    for scope, (ours, depth) in TF_LAYERS.items():
        for name in ("kernel", "bias"):
            key = f"{scope}/{name}"
            if key not in tensors:
                raise WeightsError(f"{path}: not a DenseFuse checkpoint: variable {key!r} missing")
        if tensors[f"{scope}/kernel"].ndim != 4 or tensors[f"{scope}/bias"].ndim != 1:
            raise WeightsError(f"{path}: not a DenseFuse checkpoint: {scope} has shapes "
                               f"{tensors[f'{scope}/kernel'].shape} and {tensors[f'{scope}/bias'].shape}")
        w = torch.from_numpy(tensors[f"{scope}/kernel"]).permute(3, 2, 0, 1).contiguous()  # HWIO->OIHW
        if depth is not None:
            w = _reverse_groups(w, depth)
        state[f"{ours}.weight"] = w
        state[f"{ours}.bias"] = torch.from_numpy(tensors[f"{scope}/bias"])
    m = LAMBDA_RE.search(prefix)
    info = {"kind": "official TensorFlow checkpoint", "checkpoint": Path(prefix).name,
            "ssim_weight": 10 ** int(m.group(1)) if m else None}
    return _rescale_io(state), info


def is_official_pytorch(obj: dict) -> bool:
    return isinstance(obj, dict) and "conv1.conv2d.weight" in obj


def convert_official_pytorch(obj: dict, source: str) -> dict[str, torch.Tensor]:
    """State dict for :class:`DenseFuse` (inputs [0,1]) from the authors' PyTorch port, gray
    (``densefuse_gray.model``) or RGB (``densefuse_rgb.model``: 3 channels in and out). Its dense
    block already concatenates ``[x, new]``; only names and scale change."""
    state = {}
    for theirs, ours in PT_LAYERS.items():
        for name in ("weight", "bias"):
            if f"{theirs}.{name}" not in obj:
                raise WeightsError(f"{source}: official PyTorch model lacks key {theirs}.{name}")
            state[f"{ours}.{name}"] = obj[f"{theirs}.{name}"].float()
    if state[f"{FIRST}.weight"].shape[1] not in (1, 3):
        raise WeightsError(f"{source}: a {state[f'{FIRST}.weight'].shape[1]}-channel model; the official "
                           f"releases are gray (1) or RGB (3)")
    return _rescale_io(state)
