"""torchrun for real: gloo on CPU, two ranks, tiny images and a few steps (issue #19).

Each launch is a real ``python -m torch.distributed.run`` with a c10d rendezvous on a free
local port; the single-process references run in this process. Faults are injected by a small
wrapper (``FAULTY``) that torchrun starts instead of run_train.py: it kills rank 1, makes it
interrupt the launcher, or gives it a non-finite loss, on the first attempt only.
"""
import atexit
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch

import run_eval
import run_infer
import run_train
from tests.conftest import ROOT, write_gray
from utils import distributed as D
from utils import training


@pytest.fixture
def images(tmp_path):
    for i in range(6):
        write_gray(tmp_path / "imgs" / f"im{i}.png", 24 + i, 30, i)
    return tmp_path / "imgs"


def train_args(images, out, *extra):
    return ["--image_path", str(images), "--output_dir", str(out), "--run_name", "r", "--image_size", "16",
            "--crop", "--flip", "--batch_size", "2", "--lr", "1e-3", "--seed", "3", "--device", "cpu",
            "--val_path", "", *map(str, extra)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


LAUNCHER_TMP = Path(tempfile.mkdtemp(prefix="densefuse_torchrun_"))
atexit.register(shutil.rmtree, LAUNCHER_TMP, ignore_errors=True)


def torchrun(*args, restarts: int = 0, env=None) -> subprocess.CompletedProcess:
    """``args`` (a script and its flags, or ``-c CODE`` and flags) on 2 CPU ranks under torchrun."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
           "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{free_port()}", "--max-restarts", str(restarts)]
    cmd += ["--no-python", sys.executable, *args] if args[0] == "-c" else [str(ROOT / args[0]), *args[1:]]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", **(env or {})}
    # torchrun keeps its logs in a torchelastic_* folder under TMPDIR and leaves it there: one
    # folder for all the launches of the test session, removed at its end.
    env.setdefault("TMPDIR", str(LAUNCHER_TMP))
    # A session of its own, so that a hang is killed with all its workers, not just the launcher.
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        raise
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


#: run_train.py with a fault on rank 1 at step K: DENSEFUSE_TEST_FAULT holds one fault per torchrun
#: attempt (the first for the first attempt, ...): kill:K (SIGKILL itself), interrupt:K (SIGINT to
#: the launcher, as Ctrl-C would) or nan:K (NaN pixels in its part of the batch).
FAULTY = """
import math, os, signal, sys
import run_train
from utils.training import trainer
faults = os.environ["DENSEFUSE_TEST_FAULT"].split()
attempt = int(os.environ["TORCHELASTIC_RESTART_COUNT"])
fault, at = faults[attempt].split(":") if attempt < len(faults) else ("none", "0")
if os.environ["RANK"] == "1":
    log, step = trainer.Trainer.log, trainer.train_step
    def faulty_log(self, vals, lr):
        log(self, vals, lr)
        if self.progress.step == int(at) and fault == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        if self.progress.step == int(at) and fault == "interrupt":
            os.kill(os.getppid(), signal.SIGINT)
    calls = []
    def nan_step(model, criterion, optimizer, batch, *args):  # a real step, on NaN pixels
        calls.append(1)
        return step(model, criterion, optimizer, batch * (math.nan if len(calls) == int(at) else 1), *args)
    trainer.Trainer.log = faulty_log
    if fault == "nan":
        trainer.train_step = nan_step
sys.exit(run_train.main(sys.argv[1:]))
"""


def checkpoint(path):
    return torch.load(path, weights_only=True)


def max_diff(a, b) -> float:
    return max((a["model"][k] - b["model"][k]).abs().max().item() for k in a["model"])


@pytest.fixture
def reference(images, tmp_path):
    """One plain process, 2 epochs of 3 steps at batch 2, one image per micro-batch (the same
    float sums as two ranks of one image each: the results agree to the bit)."""
    assert run_train.main(train_args(images, tmp_path / "one", "--num_epochs", "2", "--micro_batch", "1")) == 0
    assert not torch.distributed.is_initialized()  # a plain run starts no process group
    return tmp_path / "one/r/checkpoints"


def test_two_ranks_train_what_one_process_trains_and_resume_in_one(launch, reference):
    (train,) = launch.said("train")
    assert launch.r.returncode == 0 and "train exit 0" in train, launch.r.stderr
    two = launch.root / "two/r/checkpoints"
    a, b = checkpoint(reference / "epoch_1.pt"), checkpoint(two / "epoch_1.pt")
    assert a["step"] == b["step"] == 3 and max_diff(a, b) <= 1e-6
    # Rank 0 alone speaks and writes; the logged losses are the global batch's.
    assert train.count("Loaded 6 images") == 1 and train.count("epoch 1: mean loss") == 1
    assert "2 processes (torchrun)" in train
    assert len(list((launch.root / "two/r/logs").glob("events.out.tfevents.*"))) == 1
    ours = float(train.split("epoch 1: mean loss ")[1].split()[0].rstrip(","))
    assert ours == pytest.approx(a["best_loss"], rel=1e-6)
    # A checkpoint written by two ranks continues in one process exactly as one process would have.
    assert run_train.main(["--resume_path", str(two / "last.pt"), "--num_epochs", "2", "--micro_batch", "1",
                           "--device", "cpu"]) == 0
    a, b = checkpoint(reference / "last.pt"), checkpoint(two / "last.pt")
    assert b["step"] == 6 and max_diff(a, b) <= 1e-6
    # Adam's state to a tolerance, not to the bit: the gloo all-reduce and the micro-batch loop add
    # the same two gradients, but which kernels the CPU runs (AVX2, AVX-512) decides the last bits.
    for pa, pb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values(), strict=True):
        assert float(pa["step"]) == float(pb["step"]) == 6
        for k in ("exp_avg", "exp_avg_sq"):  # relative to each tensor's scale: elements near 0 differ most
            assert (pb[k] - pa[k]).abs().max() <= 1e-4 * pa[k].abs().max(), k


@pytest.mark.slow  # 16 s: two torchrun launches with a restart; the plain launch runs by default
def test_a_killed_worker_comes_back_and_ctrl_c_leaves_a_resumable_checkpoint(images, tmp_path, reference):
    """One launch, two faults: rank 1 is killed at step 2 and torchrun (--max-restarts 1) starts
    both ranks again, which continue from last.pt by themselves (--resume_path auto); in that
    second attempt Ctrl-C reaches the launcher at step 4, and the ranks stop at one step with a
    checkpoint that finishes in a plain process exactly as the uninterrupted run."""
    r = torchrun("-c", FAULTY, *train_args(images, tmp_path / "two", "--num_epochs", "2", "--save_every", "1",
                                           "--resume_path", "auto"),
                 restarts=1, env={"DENSEFUSE_TEST_FAULT": "kill:2 interrupt:4"})
    assert r.returncode != 0 and "exitcode: -9" in r.stderr.replace("exitcode  :", "exitcode:"), r.stderr
    # Rank 0, blocked in an all-reduce with the dead rank, says so in one line (when it notices
    # before torchrun stops it): no traceback from a worker, gloo's reason inside that line.
    assert 'run_train.py", line' not in r.stderr and 'utils/training/' not in r.stderr, r.stderr
    gloo = [line for line in r.stderr.splitlines() if "Connection reset" in line or "Connection closed" in line]
    assert all(line.startswith("error: rank 0: a collective operation failed") for line in gloo), gloo
    assert r.stdout.count("Resuming from") == 1, r.stdout
    last = tmp_path / "two/r/checkpoints/last.pt"
    step = checkpoint(last)["step"]
    assert 4 <= step < 6 and r.stdout.count(f"stopped at step {step}") == 1, r.stdout + r.stderr
    assert run_train.main(["--resume_path", str(last), "--micro_batch", "1", "--device", "cpu"]) == 0
    assert max_diff(checkpoint(reference / "last.pt"), checkpoint(last)) <= 1e-6


@pytest.mark.slow  # 9 s: a third torchrun training launch
def test_a_non_finite_loss_on_one_rank_stops_every_rank_with_one_error(images, tmp_path):
    r = torchrun("-c", FAULTY, *train_args(images, tmp_path / "two", "--num_epochs", "2"),
                 env={"DENSEFUSE_TEST_FAULT": "nan:2"})
    assert r.returncode != 0
    assert r.stderr.count("error: non-finite loss (nan) at step 2") == 1, r.stderr
    assert not (tmp_path / "two/r/checkpoints/last.pt").exists()


def frame_folder(folder, seed, n=7, size=(40, 56)):
    """A short sequence of frames (natural names frame1.png ...)."""
    for k in range(1, n + 1):
        write_gray(folder / f"frame{k}.png", *size, seed + k)
    return folder


def sources(folder, n=5, size=(170, 180)):
    for k in range(1, n + 1):
        write_gray(folder / f"IR{k}.png", size[0] + k, size[1], k)
        write_gray(folder / f"VIS{k}.png", size[0] + k, size[1], 50 + k)
    return folder


#: One launch for every plain run of the scripts (a launch costs ~6 s before any work): each
#: main() joins and leaves its own process group. Its argument is the runs as JSON, each led by
#: the script's name; every run's lines follow an "=== name" marker on both streams.
SCRIPTS = """
import json, sys
import run_eval, run_infer, run_train
from utils.log import log  # the scripts' voice: rank 0 alone speaks
for name, *argv in json.loads(sys.argv[1]):
    log.info(f"=== {name}")
    log.warning(f"=== {name}")
    log.info(f"{name} exit {sys.modules['run_' + name].main(argv)}")
"""


class Launch:
    """The one torchrun launch of the default run: what it wrote under ``root`` and said."""

    def __init__(self, root: Path, runs: list[list]):
        self.root = root
        self.r = torchrun("-c", SCRIPTS, json.dumps([[str(a) for a in run] for run in runs]))

    def said(self, name: str, stream: str = "stdout") -> list[str]:
        """What each run of script ``name`` wrote to ``stream``, in the order of the runs."""
        marker = "=== " if stream == "stdout" else "warning: === "
        return [p for p in getattr(self.r, stream).split(marker)[1:] if p.startswith(name + "\n")]


@pytest.fixture(scope="module")
def launch(tmp_path_factory):
    """Two ranks fuse a set with a bad pair (skipped), score one process's fusion of it, fuse a
    frame sequence and train an epoch; each test compares its part with one process."""
    root = tmp_path_factory.mktemp("launch")
    for i in range(6):
        write_gray(root / "imgs" / f"im{i}.png", 24 + i, 30, i)
    data = sources(root / "S")
    sources(root / "good")
    (data / "IR6.png").write_bytes(b"not an image")
    (data / "VIS6.png").write_bytes((data / "VIS1.png").read_bytes())
    frames = [frame_folder(root / "ir", 1), frame_folder(root / "vi", 50)]
    # What the launch scores is one process's fusion of the set (skipping the bad pair: exit 1).
    assert run_infer.main([*fuse_set_args(data), "--output_path", str(root / "one")]) == 1
    return Launch(root, [
        ["infer", *fuse_set_args(data), "--output_path", root / "two"],
        ["eval", *score_args(root), "--csv", root / "two.csv", "--json", root / "two.json"],
        ["infer", *sequence_args(frames), "--output_path", root / "two"],
        ["train", *train_args(root / "imgs", root / "two", "--num_epochs", "1")]])


def fuse_set_args(data):
    return ["--test_path", str(data), "--device", "cpu", "--skip_bad"]


def score_args(root):
    return ["--fused", str(root / "one/S_fusion"), "--test_path", str(root / "good")]


def sequence_args(frames):
    return ["--frames", *map(str, frames), "--write", "both", "--device", "cpu"]


def test_sharded_fusion_and_scoring_are_those_of_one_process(launch):
    """Byte-identical images, record and tables; a bad pair (skipped here) is reported once. In
    the same launch a frame sequence, split into contiguous chunks: the frames of one process,
    byte for byte, and one video of them all."""
    root = launch.root
    one, two = root / "one/S_fusion", root / "two/S_fusion"
    assert run_eval.main([*score_args(root), "--csv", str(root / "one.csv"), "--json", str(root / "one.json")]) == 0
    assert run_infer.main([*sequence_args([root / "ir", root / "vi"]), "--output_path", str(root / "one")]) == 0
    (infer, sequence), (score,) = launch.said("infer"), launch.said("eval")
    assert launch.r.returncode == 0, launch.r.stderr
    assert "infer exit 1" in infer and "infer exit 0" in sequence and "eval exit 0" in score, launch.r.stderr
    assert "7 frames fused" in sequence and "2 processes" in sequence
    frames_one, frames_two = (sorted((root / w / "video" / "ir_vi").glob("*.png")) for w in ("one", "two"))
    assert [p.name for p in frames_two] == [p.name for p in frames_one] and len(frames_one) == 7
    assert all(a.read_bytes() == b.read_bytes() for a, b in zip(frames_one, frames_two, strict=True))
    from utils.video import open_sequence
    assert open_sequence(root / "two" / "video" / "ir_vi.mp4").count == 7
    records = [json.loads((root / w / "video" / "ir_vi.json").read_text()) for w in ("one", "two")]
    assert records[0]["limits"] == records[1]["limits"] and records[1]["processes"] == 2
    assert records[0]["flicker"] == records[1]["flicker"]
    assert not [p for p in (root / "two" / "video").iterdir() if p.name.startswith(".")]
    assert launch.r.stderr.count("IR6.png: not an image file") == 1
    assert sorted(p.name for p in two.iterdir()) == sorted(p.name for p in one.iterdir())
    assert all((two / p.name).read_bytes() == p.read_bytes() for p in one.iterdir())
    assert infer.count("5 pairs fused") == 1
    assert all((root / f"one.{e}").read_bytes() == (root / f"two.{e}").read_bytes() for e in ("csv", "json"))


# ---- the pieces, without a launch ---------------------------------------------------------------

def test_rank_batches_split_every_global_batch_among_the_ranks():
    order = list(range(11))
    ranks = [training.rank_batches(order, 4, D.Context(rank=r, world=2)) for r in range(2)]
    assert ranks[0] == [[0, 1], [4, 5], [8, 9]] and ranks[1] == [[2, 3], [6, 7], [10]]
    assert training.rank_batches(order, 4, D.SINGLE) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10]]


def test_shard_and_unshard_are_inverse():
    items = list("abcdefg")
    parts = [D.shard(items, D.Context(rank=r, world=3)) for r in range(3)]
    assert parts == [["a", "d", "g"], ["b", "e"], ["c", "f"]] and D.unshard(parts, 7) == items


def test_what_cannot_be_split_over_the_ranks_is_named():
    assert training.distributed_problems(3, 6, 2) == [
        "--batch_size 3 (the global batch) must be a multiple of the 2 processes torchrun started"]
    assert "last batch has 1 image(s)" in training.distributed_problems(2, 5, 2)[0]
    assert training.distributed_problems(4, 7, 2) == [] and training.distributed_problems(3, 5, 1) == []


def test_an_uneven_last_batch_still_gives_the_global_mean_gradient():
    """Rank shares of 2 and 1 images: scaling each rank's loss by share x world makes DDP's
    average the mean over all 3 images (checked here without DDP, by summing what it averages)."""
    torch.manual_seed(0)
    from models.densefuse import DenseFuse
    from utils.losses import DenseFuseLoss
    model, loss = DenseFuse(), DenseFuseLoss(100)
    opt = torch.optim.SGD(model.parameters(), lr=0)
    batch = torch.rand(3, 1, 16, 16)
    training.train_step(model, loss, opt, batch, micro=3)
    whole = [p.grad.clone() for p in model.parameters()]
    parts, values = [], []
    for chunk in (batch[:2], batch[2:]):
        values.append(training.train_step(model, loss, opt, chunk, micro=1, share=len(chunk) / 3, world=2))
        parts.append([p.grad.clone() for p in model.parameters()])
    averaged = [(a + b) / 2 for a, b in zip(*parts, strict=True)]
    assert all((w - g).abs().max() <= 1e-5 * w.abs().max() for w, g in zip(whole, averaged, strict=True))
    total = training.train_step(model, loss, opt, batch, micro=3)[0]
    assert math.isclose(values[0][0] + values[1][0], total, rel_tol=1e-5)


@pytest.mark.slow  # 8 s: a torchrun training launch
def test_two_ranks_train_from_prepared_data_as_one_process_does(images, tmp_path):
    """Every rank memory-maps the same prepared file and takes its share of each batch: the
    weights after an epoch are those of one process (one image per micro-batch), to 1e-6."""
    from run_scripts import prepare_data
    data = tmp_path / "prep"
    assert prepare_data.main(["--image_path", str(images), "-o", str(data), "--image_size", "20",
                              "--workers", "1"]) == 0
    assert run_train.main(train_args(data, tmp_path / "one", "--num_epochs", "1", "--micro_batch", "1")) == 0
    r = torchrun("run_train.py", *train_args(data, tmp_path / "two", "--num_epochs", "1"))
    assert r.returncode == 0, r.stderr
    a, b = (checkpoint(tmp_path / f"{k}/r/checkpoints/last.pt") for k in ("one", "two"))
    assert a["step"] == b["step"] == 3 and max_diff(a, b) <= 1e-6
