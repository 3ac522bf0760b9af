"""A safe reader of PyTorch state-dict files, without PyTorch.

Why not `torch.load`: it would make torch a dependency for a few pretrained files, and a
.pth file is a pickle, so loading one unrestricted runs whatever code it names. This reader
unpickles with a whitelist: an OrderedDict of tensors, built from the handful of torch names
a state dict uses (`_rebuild_tensor_v2`, the typed storages). Anything else in the pickle
(`os.system`, `builtins.eval`, a custom class) raises CheckpointError before it is called.

Formats:
- legacy (torch.save before 1.6, `_use_new_zipfile_serialization=False`): five pickles
  (magic number, protocol, sys info, the state dict, the storage keys) and then, for each
  key in that order, an 8-byte little-endian element count and the raw data;
- zip (torch >= 1.6): `<name>/data.pkl` plus one raw little-endian file per storage,
  `<name>/data/<key>`.
Tensors become numpy arrays honouring size, stride and storage offset (the EfficientNet-Lite
files store most weights as non-contiguous views), copied so they own their memory.
"""
from __future__ import annotations

import collections
import io as _bytes_io
import pickle
import zipfile
from typing import Dict

import numpy as np

from leukemia_tf import io
from leukemia_tf.errors import UserError

_MAGIC = 0x1950A86A20F9469CFC6C
_PROTOCOL = 1001

# Raw storage element types, little-endian as both formats write them.
_STORAGE_DTYPES = {
    "FloatStorage": "<f4", "DoubleStorage": "<f8", "HalfStorage": "<f2",
    "LongStorage": "<i8", "IntStorage": "<i4", "ShortStorage": "<i2",
    "CharStorage": "i1", "ByteStorage": "u1", "BoolStorage": "?",
}


class CheckpointError(UserError):
    """A .pth file that is unsafe, truncated or not a plain state dict; names the file."""


class _StorageType:
    def __init__(self, dtype: str):
        self.dtype = np.dtype(dtype)


class _StorageRef:
    def __init__(self, key: str, dtype: np.dtype, numel: int):
        self.key, self.dtype, self.numel = key, dtype, numel


class _TensorRef:
    """A tensor whose storage bytes come later in the file."""

    def __init__(self, storage, offset, size, stride):
        self.storage, self.offset = storage, int(offset)
        self.size, self.stride = tuple(int(s) for s in size), tuple(int(s) for s in stride)


def _rebuild_tensor(storage, offset, size, stride, *_ignored):
    # _ignored: requires_grad, backward_hooks (and metadata in newer files); a state dict
    # for inference needs none of them.
    if not isinstance(storage, _StorageRef):
        raise pickle.UnpicklingError("tensor without a storage")
    return _TensorRef(storage, offset, size, stride)


def _rebuild_parameter(data, *_ignored):
    return data


_ALLOWED = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
}


class _Refused(Exception):
    def __init__(self, module: str, name: str):
        super().__init__(f"{module}.{name}")
        self.module, self.name = module, name


class _SafeUnpickler(pickle.Unpickler):
    """Resolves only the whitelisted globals; storages become placeholders."""

    def find_class(self, module, name):
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(_STORAGE_DTYPES[name])
        raise _Refused(module, name)

    def persistent_load(self, pid):
        # ('storage', storage_type, key, location, numel[, view_metadata])
        # Legacy files write view_metadata as None; a real view (pre-0.4 torch) is refused.
        if not (isinstance(pid, tuple) and len(pid) in (5, 6) and pid[0] == "storage"
                and isinstance(pid[1], _StorageType) and isinstance(pid[4], int)
                and (len(pid) == 5 or pid[5] is None)):
            raise pickle.UnpicklingError(f"unsupported persistent id {pid!r:.80}")
        return _StorageRef(str(pid[2]), pid[1].dtype, pid[4])


def _unpickle(stream, path: str):
    try:
        return _SafeUnpickler(stream).load()
    except _Refused as e:
        raise CheckpointError(f"{path}: refuses to load {e.module}.{e.name}") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError,
            IndexError, KeyError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint "
                              f"(truncated or corrupt: {type(e).__name__}: {e})") from None


def _tensor_array(ref: _TensorRef, storage: np.ndarray, path: str, name: str) -> np.ndarray:
    """The view (size, stride, offset) of `storage`, bounds-checked and copied."""
    if any(s < 0 for s in ref.size + ref.stride) or len(ref.size) != len(ref.stride):
        raise CheckpointError(f"{path}: tensor {name} has a bad size/stride")
    if 0 in ref.size:
        return np.zeros(ref.size, storage.dtype)
    if int(np.prod(ref.size, dtype=np.int64)) > storage.size:
        # state dicts hold no broadcast views; a huge size over a small storage would only
        # make the copy below allocate whatever a crafted file asks for
        raise CheckpointError(f"{path}: tensor {name} is larger than its storage")
    last = ref.offset + sum((n - 1) * s for n, s in zip(ref.size, ref.stride))
    if ref.offset < 0 or last >= storage.size:
        raise CheckpointError(f"{path}: tensor {name} reaches past its storage "
                              f"({last + 1} > {storage.size} elements)")
    item = storage.dtype.itemsize
    view = np.lib.stride_tricks.as_strided(
        storage[ref.offset:], shape=ref.size, strides=[s * item for s in ref.stride],
        writeable=False)
    return np.array(view, copy=True, order="C")  # own, C-ordered memory


def _resolve(state, storages: Dict[str, np.ndarray], path: str) -> "collections.OrderedDict":
    """name -> np.ndarray, every entry a tensor whose storage was read."""
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: holds a {type(state).__name__}, not a state dict")
    out = collections.OrderedDict()
    for name, ref in state.items():
        if not isinstance(ref, _TensorRef):
            raise CheckpointError(f"{path}: entry {name!r} is not a tensor")
        if ref.storage.key not in storages:
            raise CheckpointError(f"{path}: storage {ref.storage.key} of {name} is missing")
        out[str(name)] = _tensor_array(ref, storages[ref.storage.key], path, name)
    return out


def _storage_refs(state, path: str) -> Dict[str, _StorageRef]:
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: holds a {type(state).__name__}, not a state dict")
    return {r.storage.key: r.storage for r in state.values() if isinstance(r, _TensorRef)}


def _read_legacy(data: bytes, path: str) -> "collections.OrderedDict":
    stream = _bytes_io.BytesIO(data)
    if _unpickle(stream, path) != _MAGIC:
        raise CheckpointError(f"{path}: not a PyTorch checkpoint (bad magic number)")
    if _unpickle(stream, path) != _PROTOCOL:
        raise CheckpointError(f"{path}: unsupported PyTorch serialisation protocol")
    info = _unpickle(stream, path)
    if not (isinstance(info, dict) and info.get("little_endian", True)):
        raise CheckpointError(f"{path}: big-endian checkpoints are not supported")
    state = _unpickle(stream, path)
    keys = _unpickle(stream, path)
    refs = _storage_refs(state, path)
    storages = {}
    for key in keys if isinstance(keys, list) else ():
        ref = refs.get(str(key))
        if ref is None:
            raise CheckpointError(f"{path}: storage {key} is not used by any tensor")
        head = stream.read(8)
        count = int.from_bytes(head, "little") if len(head) == 8 else -1
        raw = stream.read(max(count, 0) * ref.dtype.itemsize)
        if count < 0 or len(raw) != count * ref.dtype.itemsize:
            raise CheckpointError(f"{path}: truncated (storage {key} ends early)")
        storages[ref.key] = np.frombuffer(raw, ref.dtype, count)
    return _resolve(state, storages, path)


def _read_zip(data: bytes, path: str) -> "collections.OrderedDict":
    try:
        archive = zipfile.ZipFile(_bytes_io.BytesIO(data))
        names = archive.namelist()
        pkl = next(n for n in names if n.endswith("/data.pkl") or n == "data.pkl")
        root = pkl[: -len("data.pkl")]
        state = _unpickle(_bytes_io.BytesIO(archive.read(pkl)), path)
        storages = {}
        for key, ref in _storage_refs(state, path).items():
            raw = archive.read(f"{root}data/{key}")
            storages[key] = np.frombuffer(raw, ref.dtype, len(raw) // ref.dtype.itemsize)
    except (zipfile.BadZipFile, StopIteration, KeyError, OSError) as e:
        raise CheckpointError(f"{path}: unreadable zip checkpoint ({type(e).__name__})") from None
    return _resolve(state, storages, path)


def read_state_dict(path: str) -> "collections.OrderedDict[str, np.ndarray]":
    """Read a PyTorch state dict (.pth, legacy or zip format) as name -> np.ndarray.

    Raises CheckpointError (a UserError naming `path`) for a file that is truncated, not a
    checkpoint, or whose pickle references anything beyond tensors and an OrderedDict.
    """
    try:
        data = io.read_bytes(path)
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read ({e.strerror or e})") from None
    if data[:4] == b"PK\x03\x04":
        return _read_zip(data, path)
    return _read_legacy(data, path)
