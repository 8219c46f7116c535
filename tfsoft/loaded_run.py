"""Open a saved run: its config, vocabularies, data (prepared on demand) and model.

Every reader of a run — ``tfsoft evaluate``, ``tfsoft export``, ``tfsoft recommend`` and the
batch retrieval job — opens it here, so the checks and their messages exist once. The
directory, its ``config.yaml`` and the chosen checkpoint are checked before TensorFlow loads;
the data is read, and checked against the saved vocabularies, only when something asks for it.

Example:
    >>> run = open_run("runs/demo")                                  # doctest: +SKIP
    >>> run.config.model.query_tower.name, run.items.size            # no TensorFlow yet
    ('history_pooling', 3646)
    >>> run.model.candidate_embeddings().shape                       # data + model + weights
    TensorShape([3647, 64])
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

from tfsoft.config import Config, load_config
from tfsoft.data.vocabulary import Vocabulary
from tfsoft.errors import RunError
from tfsoft.runs import (
    RunPaths, check_checkpoint, check_vocabularies, checkpoint_problem, damaged_checkpoint_error, require_run,
)


@dataclass
class LoadedRun:
    """A run directory opened for reading (:func:`open_run`).

    Attributes:
        paths: the run's files.
        config: its resolved ``config.yaml``.
        checkpoint: ``best`` or ``last``: the weights :attr:`model` loads.
    """

    paths: RunPaths
    config: Config
    checkpoint: str | None = "best"

    @functools.cached_property
    def users(self) -> Vocabulary:
        """The saved user vocabulary (raw id <-> index)."""
        return Vocabulary.load(self.paths.user_vocabulary)

    @functools.cached_property
    def items(self) -> Vocabulary:
        """The saved item vocabulary (raw id <-> index)."""
        return Vocabulary.load(self.paths.item_vocabulary)

    @functools.cached_property
    def prepared(self):
        """The run's data, read and split as in training, checked against the saved vocabularies."""
        from tfsoft.training import prepare_data

        prepared = prepare_data(self.config.data)
        check_vocabularies(self.paths, prepared)
        return prepared

    @functools.cached_property
    def model(self):
        """The run's model with the chosen checkpoint's weights (the file is checked first: a
        damaged checkpoint is a RunError naming it, before the data is read)."""
        check_checkpoint(self.paths, self.checkpoint)
        return load_run_model(self.config, self.prepared, self.paths.checkpoint(self.checkpoint))

    @property
    def max_history(self) -> int:
        return self.config.data.max_history


def open_run(run_dir: str | Path, checkpoint: str | None = "best") -> LoadedRun:
    """Open a run directory for reading (module docstring); ``checkpoint=None`` for readers
    that need no weights (the run's data and vocabularies only).

    Raises:
        RunError: the directory, its config.yaml or the checkpoint is missing (with the cause).
        ConfigError: config.yaml does not validate.
    """
    paths = require_run(run_dir, checkpoint)
    return LoadedRun(paths=paths, config=load_config(paths.config), checkpoint=checkpoint)


def load_run_model(config: Config, prepared, checkpoint: str | Path):
    """Rebuild the model of a run from its config and data, and load a checkpoint's weights.

    Raises:
        RunError: the weights file is damaged, or does not fit the model config.yaml describes.
    """
    from tfsoft.callbacks import without_get_config_warning
    from tfsoft.training import build_model, create_variables

    model = build_model(config, prepared, soft_target=False)  # a trained run needs no teacher
    create_variables(model, config)
    try:
        with without_get_config_warning():
            model.load_weights(str(checkpoint))
    except (OSError, RuntimeError, KeyError, ValueError) as error:  # h5py's and Keras' errors
        problem = checkpoint_problem(checkpoint)
        if problem is not None:
            raise damaged_checkpoint_error(checkpoint, problem) from error
        raise RunError(f"checkpoint '{checkpoint}' does not fit the model that config.yaml describes "
                       f"({type(error).__name__}: {error}); has config.yaml or the data changed since "
                       f"training?") from error
    return model


def evaluate_run(run_dir: str | Path, *, splits=("validation", "test"), checkpoint: str = "best") -> dict:
    """Re-evaluate a saved run: split -> metrics, exactly as ``metrics.json`` holds them for
    the best checkpoint (:func:`tfsoft.validation.evaluate_splits`)."""
    run = open_run(run_dir, checkpoint)
    check_checkpoint(run.paths, checkpoint)  # a damaged file is refused before TensorFlow loads
    from tfsoft.determinism import make_deterministic
    from tfsoft.validation import evaluate_splits

    make_deterministic(run.config.train.seed, ops=run.config.train.deterministic)
    return evaluate_splits(run.model, run.config, run.prepared, splits)
