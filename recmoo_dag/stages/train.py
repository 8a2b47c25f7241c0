"""`recmoo train [--resume]`: fit the transformer, compare it with most-popular, EASE and their blend,
choose the candidate generator on valid, write the model and the choice."""
from __future__ import annotations

import json
from pathlib import Path

from recmoo_dag.config import Params, with_values
from recmoo_dag.errors import InputError
from recmoo_dag.evaluate import REPORT_K
from recmoo_dag.features import load_features
from recmoo_dag.generator import compare, save_generator
from recmoo_dag.io import combined_digest, hash_files, write_json
from recmoo_dag.model import n_parameters, save_model
from recmoo_dag.train import fit, run_fingerprint


def main(params: Params, resume: bool = False) -> None:
    chosen = Path(params.tune.chosen)
    if not chosen.is_file():
        raise InputError(f"{chosen}: no tuned values here (run `recmoo tune`)")
    model, train = with_values(params.model, params.train, json.loads(chosen.read_text()))
    features = load_features(params.features.dir)
    data_hash = combined_digest(hash_files([params.features.dir]))
    run_id = run_fingerprint(model, train, params.seed, data_hash)
    result = fit(features, model, train, params.seed, run_id, resume)
    if result is None:  # a DDP worker other than rank 0: the launcher reports and writes
        return
    reports, generator = compare(features, result.model, train.ease_lambdas, train.eval_batch_size)
    save_model(result.model, train.model_dir, architecture={"n_items": features.n_items, **model.model_dump()},
               provenance={"features_dir": params.features.dir, "data_hash": data_hash, "seed": params.seed,
                           "train": train.model_dump(), "run": run_id, "steps": result.steps,
                           "best_step": result.best_step, f"best_valid_ndcg@{REPORT_K}": result.best_valid_ndcg})
    save_generator(train.model_dir, generator.kind, generator.ease_lambda, generator.blend_weight)
    write_json(train.metrics, {**reports, "train_seconds": round(result.seconds, 3), "steps": result.steps,
                               "best_step": result.best_step})
    ndcg = f"ndcg@{REPORT_K}"
    test = {"model": reports["model"]["test"][ndcg], "blend": reports["blend"]["test"][ndcg],
            "ease": reports["baselines"]["ease"]["test"][ndcg], "pop": reports["baselines"]["pop"]["test"][ndcg]}
    print(f"train: {n_parameters(result.model):,} parameters, best of {result.steps} steps at step "
          f"{result.best_step} ({result.seconds:.1f}s); test {ndcg} "
          + ", ".join(f"{name} {value:.4f}" for name, value in test.items())
          + f"; generator: {generator.kind} (chosen on valid)")
