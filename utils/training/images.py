"""A run's training images: every image below ``--image_path`` that decodes (each decoded once
before training), or the samples of a prepared folder (``run_scripts.prepare_data``), checked
against the run's own list on a resume."""
from __future__ import annotations

from pathlib import Path

from configs import TrainConfig, bundled_note
from utils.training.errors import fail
from utils.training.runs import check_same_images


def training_images(cfg: TrainConfig, resume: dict | None = None) -> list[Path]:
    """The training files: every image below --image_path that decodes, sorted; for a resume,
    checked to be the run's own list (a moved folder is fine, other files are refused)."""
    from utils.data import check_decodable, list_images
    from utils.distributed import main_process
    from utils.log import log
    root = Path(cfg.image_path)
    if not root.is_dir():
        fail(f"image folder {root} not found{bundled_note(root)}; pass --image_path DIR with training images "
             f"(jpg/jpeg/png/bmp/tif/tiff)")
    from utils.prepared import is_prepared
    if is_prepared(root):  # decoded once by run_scripts.prepare_data: its index replaces the decode check
        paths = prepared_images(cfg, root)
        if resume is not None:
            check_same_images(resume, cfg.resume_path, root, paths)
        return paths
    paths = list_images(root)
    if not paths:
        fail(f"no images (jpg/jpeg/png/bmp/tif/tiff) found under {root}; pass --image_path DIR")
    paths, bad, multi = check_decodable(paths, cfg.gray, progress=main_process())
    for _, why in bad:
        log.warning(f"skipping {why}")
    if multi:
        log.warning(f"{len(multi)} image(s) have several frames (animated or multi-page), the first is "
                    f"used: {', '.join(map(str, multi[:3]))}{', ...' if len(multi) > 3 else ''}")
    if bad:
        log.info(f"Skipped {len(bad)} unreadable image(s).")
    if not paths:
        fail(f"none of the {len(bad)} images under {root} could be decoded (first: {bad[0][1]})")
    paths = paths[:cfg.train_num] if cfg.train_num else paths
    if resume is not None:
        check_same_images(resume, cfg.resume_path, root, paths, [p for p, _ in bad])
    return paths


def prepared_images(cfg: TrainConfig, root: Path) -> list[Path]:
    """The sample names of a prepared folder (for the run's image record), checked against the run."""
    from utils.prepared import PreparedError, read_index, size_problem
    try:
        index = read_index(root)
    except PreparedError as e:
        fail(str(e))
    if not index.get("complete"):
        fail(f"{root}: its preparation was interrupted; run python -m run_scripts.prepare_data again to finish it")
    if index["gray"] != cfg.gray:
        fail(f"{root} holds {'gray' if index['gray'] else 'RGB'} samples; "
             f"{'leave out --no-gray' if index['gray'] else 'pass --no-gray'} or prepare it again")
    if tuple(cfg.zoom) != (1.0, 1.0):
        fail("--zoom resizes each crop: it needs the images themselves, not prepared samples")
    if problem := size_problem(root, index, cfg.image_size, cfg.crop):
        fail(problem)
    paths = [root / name for name in index["sources"]]
    return paths[:cfg.train_num] if cfg.train_num else paths
