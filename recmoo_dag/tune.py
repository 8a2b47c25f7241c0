"""Hyper-parameter tuning of the transformer and its training with Optuna, chosen on valid NDCG@k.

Each trial trains the transformer with `tune.trial_steps` optimizer steps (the real training then
gets `train.max_steps` with the chosen values) and reports every validation to the pruner; its value
is the valid NDCG@k (k = policy.k) of the weights training keeps (the last significant improvement). Searched:
learning rate and weight decay (log-uniform), width, depth, dropout, maximum sequence length and
batch size (the ranges in `tune.space`). Test is never looked at.

The first trial is the params as written (a known-good start, so the study can only improve on it).
Sampler: TPE (Bergstra et al. 2011), seeded per trial from (seed, trials finished so far), so the
next suggestion depends only on the seed and the history of finished trials. Pruner: the median
rule (a trial whose valid NDCG@k at a validation is below the median of completed trials at that
point stops; Golovin et al. 2017), after `tune.startup_trials` trials and two validations. Both read
finished trials only, so a study killed mid-trial and resumed (the storage is Optuna's SQLite file;
the interrupted trial is marked failed and re-drawn) goes on exactly as an uninterrupted one.

The study's name is a hash of everything that makes its trials comparable (data, search space,
budgets, fixed params, seed): a changed setting starts a new study in the same file, an unchanged
one resumes or re-reads its finished trials.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

from recmoo_dag.config import ModelParams, TrainParams, TuneParams, with_values
from recmoo_dag.features import Features
from recmoo_dag.objectives import label

TUNED_MODEL = ("d_model", "n_layers", "dropout", "max_len", "item_text")
TUNED_TRAIN = ("lr", "batch_size", "weight_decay")
VALIDATIONS_BEFORE_PRUNING = 2  # a trial's first validations are mostly warm-up
# train params a trial never reads: where the train stage writes, the baselines' grid, the thread count
NOT_TRIAL = {"model_dir", "metrics", "ease_lambdas", "threads"}


def study_name(model: ModelParams, trial_train: TrainParams, tune: TuneParams, seed: int, data_hash: str) -> str:
    """What makes trials comparable: the model and the training a trial runs with (less the paths and
    the thread count), the budgets, the space, the seed and the data."""
    identity = {"model": model.model_dump(), "train": trial_train.model_dump(exclude=NOT_TRIAL),
                "tune": tune.model_dump(include={"trial_steps", "startup_trials", "space"}), "seed": seed,
                "data": data_hash}
    return "recmoo-" + hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


def suggest(trial, space) -> tuple[dict, dict]:
    """One trial's values: ({model key: value}, {train key: value})."""
    model = {"d_model": trial.suggest_categorical("d_model", space.d_model),
             "n_layers": trial.suggest_categorical("n_layers", space.n_layers),
             "dropout": trial.suggest_float("dropout", *space.dropout),
             "max_len": trial.suggest_categorical("max_len", space.max_len),
             "item_text": trial.suggest_categorical("item_text", space.item_text)}
    train = {"lr": trial.suggest_float("lr", *space.lr, log=True),
             "batch_size": trial.suggest_categorical("batch_size", space.batch_size),
             "weight_decay": trial.suggest_float("weight_decay", *space.weight_decay, log=True)}
    return model, train


def in_space(values: dict, space) -> bool:
    """Whether values (model and train keys together) lie inside the search space."""
    return all(values[key] in getattr(space, key) if isinstance(getattr(space, key), list)
               else getattr(space, key)[0] <= values[key] <= getattr(space, key)[1] for key in values)


def run_study(features: Features, model: ModelParams, train: TrainParams, tune: TuneParams, k: int, seed: int,
              data_hash: str, workdir: Path, on_trial: Callable[[int, str, float | None], None],
              text_vectors: np.ndarray | None = None) -> object:
    """Run (or resume) the study until `tune.trials` trials finished or `tune.timeout_seconds` passed;
    returns the optuna Study. `workdir` holds the trials' checkpoints, cleared after each."""
    import optuna
    from optuna.trial import TrialState
    from optuna_integration import PyTorchLightningPruningCallback

    from recmoo_dag.train import fit, monitor  # Lightning: imported only when there are trials to run

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    storage = f"sqlite:///{Path(tune.storage).resolve()}"
    Path(tune.storage).parent.mkdir(parents=True, exist_ok=True)
    # Trials run in one process, checkpoints and validation log in the scratch folder.
    trial_train = train.model_copy(update={"max_steps": tune.trial_steps, "checkpoint_dir": str(workdir / "ckpt"),
                                           "steps_log": str(workdir / "steps.csv"), "devices": 1,
                                           "strategy": "auto", "num_nodes": 1, "max_seconds": None})
    name = study_name(model, trial_train, tune, seed, data_hash)
    pruner = optuna.pruners.MedianPruner(n_startup_trials=tune.startup_trials,
                                         n_warmup_steps=VALIDATIONS_BEFORE_PRUNING - 1)
    study = optuna.create_study(study_name=name, storage=storage, direction="maximize", load_if_exists=True,
                                pruner=pruner)
    for interrupted in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):  # a killed run's
        study._storage.set_trial_state_values(interrupted._trial_id, state=TrialState.FAIL)
    written = {**model.model_dump(include=set(TUNED_MODEL)), **train.model_dump(include=set(TUNED_TRAIN))}
    if not study.trials and in_space(written, tune.space):  # start from the params as written
        study.enqueue_trial(written)
    finished = (TrialState.COMPLETE, TrialState.PRUNED)

    def objective(trial) -> float:
        model_values, train_values = suggest(trial, tune.space)
        trial_model = with_values(ModelParams, model, model_values)
        trial_params = with_values(TrainParams, trial_train, train_values)
        callback = PyTorchLightningPruningCallback(trial, monitor=monitor(k))
        try:
            result = fit(features, trial_model, trial_params, k, seed, f"{name}-{trial.number}", callbacks=(callback,),
                         text_vectors=text_vectors)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        return result.best_valid_ndcg

    deadline = time.monotonic() + tune.timeout_seconds if tune.timeout_seconds else float("inf")
    while len(done := study.get_trials(deepcopy=False, states=finished)) < tune.trials and time.monotonic() < deadline:
        # A fresh sampler per trial, seeded by how many trials finished: the next suggestion depends on
        # the seed and the finished history alone, so a resumed study repeats an uninterrupted one.
        study.sampler = optuna.samplers.TPESampler(seed=seed * 1000 + len(done),
                                                   n_startup_trials=tune.startup_trials)
        study.optimize(objective, n_trials=1, catch=())
        last = study.trials[-1]
        on_trial(last.number, last.state.name, last.value)
    return study


def chosen_values(study, k: int) -> dict:
    """{"model": {...}, "train": {...}} of the best completed trial and its valid NDCG@k (not its
    number: a resumed study numbers the interrupted trial too), and the best valid NDCG@k of each
    item-text variant tried."""
    from optuna.trial import TrialState

    best = study.best_trial
    variants = {}
    for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        variant = trial.params.get("item_text")
        variants[variant] = max(variants.get(variant, float("-inf")), trial.value)
    return {"model": {key: best.params[key] for key in TUNED_MODEL},
            "train": {key: best.params[key] for key in TUNED_TRAIN},
            f"valid_{label('ndcg', k)}": best.value,
            f"item_text_valid_{label('ndcg', k)}": dict(sorted(variants.items()))}


def trials_table(study):
    """One row per trial: number, state, value (valid NDCG@k) and the suggested values; no wall
    times, so the same study gives the same bytes."""
    frame = study.trials_dataframe(attrs=("number", "value", "params", "state"))
    # A killed trial has no params; its NaN would turn an integer column into floats ("32.0").
    params = [c for c in frame.columns if c.startswith("params_")]
    frame[params] = frame[params].convert_dtypes()
    return frame.rename(columns=lambda c: c.removeprefix("params_"))


def plot_history(study, path: Path, k: int) -> None:
    """Optuna's optimization history (each trial's value and the best so far), one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization.matplotlib import plot_optimization_history

    ax = plot_optimization_history(study, target_name=f"valid NDCG@{k}")
    ax.figure.set_size_inches(8, 4.5)
    ax.figure.savefig(path, format="png", dpi=90, metadata={"Software": None})  # no version stamp: stable bytes
    plt.close(ax.figure)
