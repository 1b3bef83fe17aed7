import pickle

import pytest
import torch

from configs import SHIPPED_BY_LAMBDA, SHIPPED_WEIGHTS
from models.densefuse import DenseFuse
from utils.checkpoint import WeightsError, load_model, save_checkpoint, sha256_file


def test_checkpoint_is_self_describing_and_atomic(tmp_path):
    m = DenseFuse()
    opt = torch.optim.Adam(m.parameters())
    save_checkpoint(tmp_path / "c.pt", m, {"ssim_weight": 100}, 3, 42, opt)
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]
    obj = torch.load(tmp_path / "c.pt", weights_only=True)
    assert obj["epoch"] == 3 and obj["step"] == 42 and obj["config"]["ssim_weight"] == 100
    assert set(obj) >= {"model", "optimizer", "scheduler", "format"}
    model, info = load_model(tmp_path / "c.pt")
    assert info["kind"] == "project checkpoint"
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), m.state_dict().values(), strict=True))


class Evil:
    def __reduce__(self):
        import pathlib
        return (pathlib.Path.touch, (pathlib.Path(self.target),))


def test_malicious_pickle_refused(tmp_path):
    target = tmp_path / "pwned"
    evil = Evil()
    evil.target = str(target)
    path = tmp_path / "evil.pth"
    torch.save({"model": evil}, path, pickle_module=pickle)
    with pytest.raises(WeightsError, match="refused"):
        load_model(path)
    assert not target.exists()


def test_wrong_shape_and_nan_name_the_key(tmp_path):
    state = DenseFuse().state_dict()
    bad = dict(state)
    bad["decoder.layers.0.conv.weight"] = torch.zeros(3, 3)
    torch.save(bad, tmp_path / "shape.pth")
    with pytest.raises(WeightsError, match=r"decoder\.layers\.0\.conv\.weight.*shape"):
        load_model(tmp_path / "shape.pth")
    nan = dict(state)
    nan["encoder.conv1.conv.bias"] = torch.full((16,), float("nan"))
    torch.save(nan, tmp_path / "nan.pth")
    with pytest.raises(WeightsError, match=r"encoder\.conv1\.conv\.bias.*NaN"):
        load_model(tmp_path / "nan.pth")


def test_truncated_file(tmp_path):
    torch.save(DenseFuse().state_dict(), tmp_path / "w.pth")
    data = (tmp_path / "w.pth").read_bytes()
    (tmp_path / "t.pth").write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsError, match=r"t\.pth"):
        load_model(tmp_path / "t.pth")


@pytest.mark.parametrize("lam", sorted(SHIPPED_BY_LAMBDA))
def test_shipped_weights_hash_checked(tmp_path, lam):
    path, digest = SHIPPED_BY_LAMBDA[lam]
    assert path.is_file(), "the repository ships its weights"
    assert sha256_file(path) == digest
    assert path.name == f"densefuse_gray_l{lam}_{digest[:8]}.pth"
    load_model(path, digest)
    tampered = tmp_path / path.name
    data = bytearray(path.read_bytes())
    data[-100] ^= 1
    tampered.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match="SHA-256"):
        load_model(tampered, digest)


def test_expected_sha256_only_for_the_shipped_file(tmp_path, monkeypatch):
    from configs import ROOT, expected_sha256
    monkeypatch.chdir(ROOT)
    for path, digest in SHIPPED_BY_LAMBDA.values():
        assert expected_sha256(path.relative_to(ROOT)) == expected_sha256(str(path)) == digest
    copy = tmp_path / SHIPPED_WEIGHTS.name  # same name elsewhere: a user's file, not checked
    copy.write_bytes(SHIPPED_WEIGHTS.read_bytes())
    assert expected_sha256(copy) is None
