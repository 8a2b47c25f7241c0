"""`recmoo tune`: Optuna over the transformer's and its training's hyper-parameters on valid NDCG@k;
writes the chosen values (what `train` reads), the trials table and the optimization history."""
from __future__ import annotations

import json
import time
from pathlib import Path

from recmoo_dag.config import Params
from recmoo_dag.features import load_features
from recmoo_dag.io import atomic_write, combined_digest, hash_files, write_json
from recmoo_dag.item_text import load_vectors
from recmoo_dag.objectives import label
from recmoo_dag.tune import TUNED_MODEL, TUNED_TRAIN, chosen_values, plot_history, run_study, trials_table


def main(params: Params) -> None:
    cfg, report = params.tune, Path(params.tune.report_dir)
    start = time.perf_counter()
    if not cfg.enabled:
        chosen = {"enabled": False, "model": params.model.model_dump(include=set(TUNED_MODEL)),
                  "train": params.train.model_dump(include=set(TUNED_TRAIN))}
        atomic_write(report / "trials.csv", lambda tmp: tmp.write_text("number,value,state\n"))
        summary = {"enabled": False}
    else:
        features = load_features(params.features.dir)
        uses_text = bool(set(cfg.space.item_text) - {"none"})
        texts = load_vectors(params.item_text.dir) if uses_text else None
        data = [params.features.dir, *([params.item_text.dir] if uses_text else [])]
        ndcg = label("ndcg", params.policy.k)
        study = run_study(features, params.model, params.train, cfg, params.policy.k, params.seed,
                          combined_digest(hash_files(data)), Path(cfg.workdir), text_vectors=texts,
                          on_trial=lambda number, state, value: print(
                              f"tune: trial {number} {state.lower()}" + (f", valid {ndcg} {value:.4f}" if value else ""),
                              flush=True))
        chosen = {"enabled": True, **chosen_values(study, params.policy.k)}
        table = trials_table(study)
        atomic_write(report / "trials.csv", lambda tmp: tmp.write_text(table.to_csv(index=False)))
        atomic_write(report / "history.png", lambda tmp: plot_history(study, tmp, params.policy.k))
        summary = {"enabled": True, "trials": {state.lower(): int((table["state"] == state).sum())
                                               for state in ("COMPLETE", "PRUNED", "FAIL")},
                   "best_trial": study.best_trial.number, "best": chosen}
    atomic_write(cfg.chosen, lambda tmp: tmp.write_text(json.dumps(chosen, indent=2, sort_keys=True) + "\n"))
    write_json(cfg.metrics, {**summary, "seconds": round(time.perf_counter() - start, 3)})
    print(f"tune: {'chose ' + json.dumps({**chosen['model'], **chosen['train']}) if cfg.enabled else 'disabled'}"
          f" -> {cfg.chosen}")
