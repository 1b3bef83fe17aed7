"""Device selection and the allocator setting (utils/devices.py)."""
import ctypes

import pytest
import torch

from utils import devices


def test_auto_falls_back_to_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert devices.resolve_device("auto") == torch.device("cpu")


def test_auto_prefers_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert devices.resolve_device("auto") == torch.device("cuda")


def test_cuda_without_cuda_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match=r"--device cuda requested but CUDA is not available; use --device cpu"):
        devices.resolve_device("cuda")


def test_cuda_index_beyond_the_machine_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert devices.resolve_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(ValueError, match=r"--device cuda:2 requested but this machine has 2 CUDA device\(s\), "
                                         r"cuda:0 to cuda:1"):
        devices.resolve_device("cuda:2")


def test_mps_without_mps_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(ValueError, match=r"--device mps requested but MPS \(Apple GPU\) is not available"):
        devices.resolve_device("mps")


def test_unknown_device_name_is_a_clear_error():
    with pytest.raises(ValueError, match=r"--device gpu: not a device; use auto, cpu, cuda, cuda:N or mps"):
        devices.resolve_device("gpu")


def test_keep_freed_memory_is_a_no_op_without_glibc(monkeypatch):
    """Where libc.so.6 cannot be loaded (musl, macOS), nothing is changed and False is returned."""
    def no_libc(name, *args, **kwargs):
        raise OSError(f"{name}: cannot open shared object file")
    monkeypatch.setattr(devices.sys, "platform", "linux")
    monkeypatch.setattr(ctypes, "CDLL", no_libc)
    assert devices.keep_freed_memory() is False
    assert devices.keep_freed_memory(large_blocks=True) is False
