"""Training the DenseFuse autoencoder: the step, the optimiser, run folders, resume, validation.

``run_train.py`` is the command line around this module. A run lives in one folder,
``<output_dir>/<run_name>/``: ``run.json`` (claimed atomically when the run starts: two
processes can never share a folder), ``logs/`` (TensorBoard) and ``checkpoints/``
(``epoch_<k>.pt``, ``last.pt``, ``best.pt``). Every checkpoint records the run's id, so a
resume continues the run the checkpoint belongs to, in that run's own folder, or is refused.

Under torchrun (``utils/distributed.py``) the same loop runs on every rank with the model in
DistributedDataParallel: each rank takes its share of every global batch, gradients and logged
losses are those of the whole batch, and rank 0 alone writes the run folder.

The package, by job: ``steps`` (the optimiser and one step, batch sharding), ``signals``
(Ctrl-C), ``runs`` (run folders, resume), ``images`` (the run's training images),
``validation``, ``trainer`` (the epoch loop), ``errors``. The names below are its public
interface (``run_train.py`` uses them).
"""
from __future__ import annotations

from utils.training.errors import TrainingError, fail
from utils.training.images import prepared_images, training_images
from utils.training.runs import (
                                 IMAGES_FILE,
                                 RESUMABLE_OVERRIDES,
                                 RUN_FILE,
                                 auto_resume_path,
                                 best_of_history,
                                 check_same_images,
                                 claim_run_dir,
                                 initial_weights,
                                 latest_checkpoint,
                                 load_resume,
                                 merged_config,
                                 open_run,
                                 open_run_once,
                                 resume_run_dir,
                                 set_aside_later_checkpoints,
)
from utils.training.signals import StopFlag
from utils.training.steps import (
                                 FINETUNE_LR,
                                 build_optimizer,
                                 default_micro_batch,
                                 distributed_problems,
                                 rank_batches,
                                 train_step,
)
from utils.training.trainer import NullWriter, Progress, Trainer
from utils.training.validation import load_validation, to_levels, validate

__all__ = ["FINETUNE_LR", "IMAGES_FILE", "RESUMABLE_OVERRIDES", "RUN_FILE", "NullWriter", "Progress", "StopFlag",
           "Trainer", "TrainingError", "auto_resume_path", "best_of_history", "build_optimizer",
           "check_same_images", "claim_run_dir", "default_micro_batch", "distributed_problems", "fail",
           "initial_weights", "latest_checkpoint", "load_resume", "load_validation", "merged_config", "open_run",
           "open_run_once", "prepared_images", "rank_batches", "resume_run_dir", "set_aside_later_checkpoints",
           "to_levels", "train_step", "training_images", "validate"]
