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
    load_model(path, sha256=digest)
    tampered = tmp_path / path.name
    data = bytearray(path.read_bytes())
    data[-100] ^= 1
    tampered.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match="SHA-256"):
        load_model(tampered, sha256=digest)


def test_expected_sha256_only_for_the_shipped_file(tmp_path, monkeypatch):
    from configs import ROOT, expected_sha256
    monkeypatch.chdir(ROOT)
    for path, digest in SHIPPED_BY_LAMBDA.values():
        assert expected_sha256(path.relative_to(ROOT)) == expected_sha256(str(path)) == digest
    copy = tmp_path / SHIPPED_WEIGHTS.name  # same name elsewhere: a user's file, not checked
    copy.write_bytes(SHIPPED_WEIGHTS.read_bytes())
    assert expected_sha256(copy) is None


@pytest.mark.parametrize("args", [{"channels": 1, "final_relu": True}, {"channels": 3, "final_relu": False}])
def test_checkpoints_carry_model_args_and_loading_builds_from_them(tmp_path, args):
    m = DenseFuse(**args)
    save_checkpoint(tmp_path / "c.pt", m, {}, 1, 1)
    assert torch.load(tmp_path / "c.pt", weights_only=True)["model_args"] == args
    model, info = load_model(tmp_path / "c.pt")
    assert model.model_args() == args == info["model_args"]
    x = torch.rand(1, args["channels"], 12, 12)
    with torch.no_grad():
        assert torch.equal(model(x), m.eval()(x))


def test_shipped_hash_is_found_by_load_model_itself(tmp_path, monkeypatch):
    """No caller passes the hash: a shipped file whose bytes no longer match is refused."""
    import configs
    path = tmp_path / "shipped.pth"
    path.write_bytes(SHIPPED_WEIGHTS.read_bytes())
    monkeypatch.setitem(configs.SHIPPED_BY_LAMBDA, 100, (path, "0" * 64))
    with pytest.raises(WeightsError, match="SHA-256"):
        load_model(path)
    monkeypatch.setitem(configs.SHIPPED_BY_LAMBDA, 100, (path, sha256_file(path)))
    assert load_model(path)[1]["kind"] == "shipped weights"


@pytest.mark.parametrize("payload,message", [
    ({"format": "densefuse-pytorch/1", "config": {}}, "no 'model' entry"),
    ({"format": "densefuse-pytorch/1", "model": DenseFuse().state_dict(), "config": [1, 2]}, "'config' is a list"),
    ({"format": "densefuse-pytorch/1", "model": DenseFuse().state_dict(), "model_args": {"channels": 2}},
     "channels must be 1 or 3"),
    ({"format": "densefuse-pytorch/1", "model": DenseFuse().state_dict(), "model_args": {"depth": 9}},
     "malformed model_args"),
    ({"format": "densefuse-weights/1", "model": DenseFuse().state_dict(), "model_args": {"channels": 3}},
     "has shape"),  # a gray state_dict declared as RGB is never reinterpreted
])
def test_damaged_checkpoint_dicts_are_one_clear_error(tmp_path, payload, message):
    torch.save(payload, tmp_path / "c.pt")
    with pytest.raises(WeightsError, match=message):
        load_model(tmp_path / "c.pt")


@pytest.mark.parametrize("content", [b"", b"\x00" * 100, bytes(range(256)) * 8])
def test_empty_or_random_bytes_weights(tmp_path, content):
    (tmp_path / "w.pth").write_bytes(content)
    with pytest.raises(WeightsError, match=r"w\.pth") as e:
        load_model(tmp_path / "w.pth")
    assert "weights_only=False" not in str(e.value)


def test_refusal_never_advises_weights_only_false(tmp_path):
    evil = Evil()
    evil.target = str(tmp_path / "pwned")
    torch.save({"model": evil}, tmp_path / "evil.pth", pickle_module=pickle)
    with pytest.raises(WeightsError) as e:
        load_model(tmp_path / "evil.pth")
    assert "weights_only" not in str(e.value)
