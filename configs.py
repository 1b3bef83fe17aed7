"""One typed set of defaults for training and fusion; argparse reads its defaults from here."""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent
#: The project's version (pyproject.toml's; a test keeps the two equal), recorded with every result.
VERSION = "1.0.0"

#: Weights shipped with the repository (lambda = 100), trained by run_train.py (docs/weights.md).
#: The file name carries the first 8 hex digits of its SHA-256; the full hash is checked at load.
SHIPPED_WEIGHTS = ROOT / "weights" / "densefuse_gray_l100_daf2d5f7.pth"
SHIPPED_SHA256 = "daf2d5f763ab8e122d6dd8a2049f53027e069af0270b9531d63534fe048ca12e"
#: Every shipped file by lambda -> (file, SHA-256); the paper's other lambdas were trained with
#: the same recipe (docs/weights.md, "Weights for other λ"). Pass the file to --weights.
SHIPPED_BY_LAMBDA: dict[int, tuple[Path, str]] = {
    1: (ROOT / "weights" / "densefuse_gray_l1_abc014aa.pth",
        "abc014aa51ba5b8321c5deb76daab11c75132d7f42e860be92c43153b69bc70c"),
    10: (ROOT / "weights" / "densefuse_gray_l10_7987a6fa.pth",
         "7987a6fafbaedac54d2b45efe044ca6d0857686e741c99e6218370cce7dc7d80"),
    100: (SHIPPED_WEIGHTS, SHIPPED_SHA256),
    1000: (ROOT / "weights" / "densefuse_gray_l1000_4eaf2161.pth",
           "4eaf2161598224f34f35de53d05fc37656e8081d488c8c358fddbb279ca97ff2"),
}


#: The shipped RGB (3-channel) networks by lambda -> (file, SHA-256), trained by ``run_train.py
#: --no-gray`` with the gray lambda = 100 recipe on the colour BSDS500 photographs
#: (docs/weights.md, "The RGB network"). ``run_infer.py --rgb`` picks one.
SHIPPED_RGB_BY_LAMBDA: dict[int, tuple[Path, str]] = {
    100: (ROOT / "weights" / "densefuse_rgb_l100_b02610f6.pth",
          "b02610f60f1d7c163c9770f9f019fbed877fc6cafae6ff0c6e2f921f7d2bff05"),
}


def expected_sha256(weights: str | Path) -> str | None:
    """The SHA-256 that ``weights`` must have if it is a shipped file, else None: a user's own
    files have no known hash, and the importer identifies the authors' files by content."""
    shipped = [*SHIPPED_BY_LAMBDA.values(), *SHIPPED_RGB_BY_LAMBDA.values()]
    return {path.resolve(): digest for path, digest in shipped}.get(Path(weights).resolve())


#: Bundled licence-clean natural images for the training demo (see data_train_sample/README.md).
DEMO_TRAIN_IMAGES = ROOT / "data_train_sample"
TEST_DATA = ROOT / "data_test"
#: Outputs go below the current directory (never into the checkout or site-packages).
RESULTS = Path("data_result")


def bundled_note(path: str | Path) -> str:
    """Why a default data folder may be absent: ``path`` is one of the checkout's bundled folders
    (``data_test/``, ``data_train_sample/``), which ``pip install`` does not copy. '' otherwise."""
    path = Path(path)
    for bundled in (TEST_DATA, DEMO_TRAIN_IMAGES):
        if path == bundled or bundled in path.parents:
            return (f" (the checkout's bundled {bundled.name}/, which an installed copy does not have: "
                    f"it holds the code and weights only)")
    return ""

SSIM_WEIGHTS = (1, 10, 100, 1000)
#: Names the command lines offer, kept here so that ``--help`` needs no torch import; tests check
#: that they are exactly the keys of ``models.fusion.STRATEGIES`` and ``utils.metrics.PROFILES``.
STRATEGY_NAMES = ("add", "l1_norm", "max", "mean")
#: The strategies that read a neighbourhood (``--l1_radius``); a test checks it against
#: ``models.fusion.takes_radius``.
RADIUS_STRATEGIES = ("l1_norm",)
OUTPUT_MODES = ("minmax", "clip")
#: The output mode of videos and frame sequences (their default): one stretch for every frame,
#: fixed from the first CALIBRATION_FRAMES frames' decoder outputs (utils/sequences.py).
SEQUENCE_MODE = "sequence"
CALIBRATION_FRAMES = 8
#: How far (pixels) an output pixel of ``decode(encode(x))`` sees: nine 3x3 convolutions less the
#: last, each adding 1 (models/densefuse.py). Tiles carry this halo (plus a strategy's own radius)
#: so that tiled = untiled; kept here so that the torch-free onnxruntime path knows it too.
RECEPTIVE_RADIUS = 8
PROFILE_NAMES = ("densefuse", "standard", "vifb")


@dataclass
class TrainConfig:
    image_path: str = str(DEMO_TRAIN_IMAGES)
    gray: bool = True
    train_num: int | None = None
    image_size: int = 256
    crop: bool = False
    flip: bool = False
    zoom: tuple[float, float] = (1.0, 1.0)
    batch_size: int = 2
    micro_batch: int = 0
    num_epochs: int = 4
    epoch_size: int | None = None
    lr: float | None = None  # 1e-4 from scratch, utils.training.FINETUNE_LR with init_from
    lr_decay: float = 0.9
    pixel_range: float = 255.0
    ssim_weight: float = 100  # any positive number (run_train.py); the shipped files: 1, 10, 100, 1000
    resume_path: str | None = None
    init_from: str | None = None
    num_workers: int = -1  # -1 = automatic (utils.training.steps.auto_workers)
    amp: str = "off"  # "bf16": bfloat16 autocast in the training step; "fp16" (CUDA) with loss scaling
    compile: bool = False  # torch.compile the network that trains
    device: str = "auto"
    seed: int = 0
    output_dir: str = "runs"
    run_name: str | None = None
    val_path: str = str(TEST_DATA / "Tno")
    log_every: int = 10
    save_every: int = 0

    def problems(self) -> list[str]:
        """Every out-of-range setting, one message each naming its flag (checked before anything is
        created, so a typo costs no run folder and no traceback)."""
        checks = [
            (self.batch_size >= 1, f"--batch_size must be >= 1, got {self.batch_size}"),
            (self.micro_batch >= 0, f"--micro_batch must be >= 0 (0 = automatic), got {self.micro_batch}"),
            (self.image_size >= 16, f"--image_size must be >= 16 (the SSIM window is 11), got {self.image_size}"),
            (self.image_size <= 8192, f"--image_size must be <= 8192 (a batch would not fit in memory), "
                                     f"got {self.image_size}"),
            (self.num_epochs >= 1, f"--num_epochs must be >= 1, got {self.num_epochs}"),
            (self.epoch_size is None or self.epoch_size >= 1, f"--epoch_size must be >= 1, got {self.epoch_size}"),
            (self.train_num is None or self.train_num >= 1, f"--train_num must be >= 1, got {self.train_num}"),
            (self.lr is None or self.lr >= 0, f"--lr must be >= 0, got {self.lr}"),
            (self.lr_decay > 0, f"--lr_decay must be > 0, got {self.lr_decay}"),
            (self.ssim_weight > 0 and math.isfinite(self.ssim_weight),
             f"--ssim_weight must be a positive number, got {self.ssim_weight}"),
            (self.pixel_range > 0, f"--pixel_range must be positive, got {self.pixel_range}"),
            (0 < self.zoom[0] <= self.zoom[1],
             f"--zoom MIN MAX needs 0 < MIN <= MAX, got {self.zoom[0]} {self.zoom[1]}"),
            (self.amp in ("off", "bf16", "fp16"), f"--amp must be off, bf16 or fp16, got {self.amp}"),
            (self.num_workers >= -1, f"--num_workers must be >= 0, or -1 for automatic, got {self.num_workers}"),
            (self.log_every >= 1, f"--log_every must be >= 1, got {self.log_every}"),
            (self.save_every >= 0, f"--save_every must be >= 0 (0 = only at epoch ends), got {self.save_every}"),
            (not self.val_path or Path(self.val_path).is_dir(),
             f"--val_path {self.val_path}: folder not found{bundled_note(self.val_path)}; pass --val_path DIR of "
             f"IR/visible pairs, or --val_path '' to train without validation"),
        ]
        return [msg for ok, msg in checks if not ok]


@dataclass
class FuseConfig:
    """The fusion defaults: ``run_infer.py``'s flags, ``utils.fusion.FuseSettings`` and
    ``hubconf.fuse`` all take theirs from here."""
    test_path: str = str(TEST_DATA)
    output_path: str = str(RESULTS)
    weights: str = str(SHIPPED_WEIGHTS)
    strategy: str = "add"
    l1_radius: int = 1
    output_mode: str = "minmax"
    device: str = "auto"
    tile: int = 0
