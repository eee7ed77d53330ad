"""--gpu_ids are indices into the visible GPUs, as torch counts them (no GPU needed: a faked environment)."""
import argparse

import pytest

import gen_worker.local as local
from gen_worker.errors import UsageError
from gen_worker.gpus import select_gpus


def _ids(gpu_ids: list[str] | None, device: str = "cuda") -> list[str]:
    return local.check_gpu_ids(argparse.Namespace(gpu_ids=gpu_ids, device=device))


def test_indices_pick_the_visible_entries_kept_as_strings() -> None:
    assert select_gpus(["0", "1"], ["4", "5"]) == ["4", "5"]
    assert select_gpus(["1"], ["GPU-8d1c2f0e-aaaa", "MIG-4f3a-bbbb"]) == ["MIG-4f3a-bbbb"]
    assert select_gpus(["02"], ["0", "1", "2"]) == ["2"]


@pytest.mark.parametrize("ids, message", [
    (["3"], "--gpu_ids 3: there are 2 visible GPUs (CUDA_VISIBLE_DEVICES=4,5): GPU ids are indices 0 to 1"),
    (["0", "2"], "--gpu_ids 2: there are 2 visible GPUs"),
    (["GPU-8d1c"], "--gpu_ids GPU-8d1c: GPU ids are indices into the visible GPUs (0 to 1, CUDA_VISIBLE_DEVICES=4,5)"),
])
def test_an_id_outside_the_visible_gpus_is_refused_in_one_line(monkeypatch: pytest.MonkeyPatch, ids: list[str],
                                                                message: str) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,5")
    for device in ("cuda", "auto", "cpu"):
        with pytest.raises(UsageError) as raised:
            _ids(ids, device)
        assert message in str(raised.value) and "\n" not in str(raised.value)


def test_under_cuda_visible_devices_each_worker_gets_the_entry_at_its_index(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,5")
    assert _ids(["0", "1"]) == ["4", "5"]
    assert _ids(["1"], "cpu") == ["5"]
    assert _ids(None) == ["4", "5"]  # the default: every visible GPU
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-aaaa,MIG-bbbb")
    assert _ids(["1", "0"]) == ["MIG-bbbb", "GPU-aaaa"]


def test_without_cuda_visible_devices_indices_are_nvidia_smis(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr(local, "visible_gpus", lambda: ["0", "1", "2", "3"])
    assert _ids(["2", "3"]) == ["2", "3"]
    with pytest.raises(UsageError, match="--gpu_ids 4: there are 4 visible GPUs"):
        _ids(["4"])


def test_with_no_visible_gpu_and_device_cpu_the_ids_only_count_the_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert _ids(["0", "1", "5"], "cpu") == ["0", "1", "5"]
    with pytest.raises(UsageError, match="no GPU is visible"):
        _ids(["0"], "cuda")


def test_the_worker_records_its_gpus_uuid_as_nvidia_smi_writes_it() -> None:
    from types import SimpleNamespace

    from gen_worker.worker.loop import gpu_uuid
    assert gpu_uuid(SimpleNamespace(uuid="8d1c2f0e-1111-2222-3333-444455556666")) == \
        "GPU-8d1c2f0e-1111-2222-3333-444455556666"
    assert gpu_uuid(SimpleNamespace(uuid="MIG-4f3a")) == "MIG-4f3a"
    assert gpu_uuid(SimpleNamespace()) is None  # an older torch
