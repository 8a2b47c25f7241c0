"""`recmoo train [--resume]`: fit the transformer, report it against popularity and EASE, write the model."""
from __future__ import annotations

from recmoo_dag.baselines import evaluate_baselines
from recmoo_dag.config import Params
from recmoo_dag.evaluate import REPORT_K, evaluate, model_scorer
from recmoo_dag.features import load_features
from recmoo_dag.io import combined_digest, hash_files, write_json
from recmoo_dag.model import n_parameters, save_model
from recmoo_dag.train import fit, run_fingerprint


def main(params: Params, resume: bool = False) -> None:
    train = params.train
    features = load_features(params.features.dir)
    data_hash = combined_digest(hash_files([params.features.dir]))
    run_id = run_fingerprint(params.model, train, params.seed, data_hash)
    result = fit(features, params.model, train, params.seed, run_id, resume)
    if result is None:  # a DDP worker other than rank 0: the launcher reports and writes
        return
    baselines, ease_lambda, _ = evaluate_baselines(features, train.ease_lambdas, train.eval_batch_size)
    report = evaluate(lambda indptr, items: model_scorer(result.model, indptr, items), features, train.eval_batch_size)
    save_model(result.model, train.model_dir, architecture={"n_items": features.n_items, **params.model.model_dump()},
               provenance={"features_dir": params.features.dir, "data_hash": data_hash, "seed": params.seed,
                           "train": train.model_dump(), "run": run_id, "epochs": result.epochs,
                           f"best_valid_ndcg@{REPORT_K}": result.best_valid_ndcg, "ease_lambda": ease_lambda})
    write_json(train.metrics, {"model": report, "baselines": baselines,
                               "train_seconds": round(result.seconds, 3), "epochs": float(result.epochs)})
    ndcg = f"ndcg@{REPORT_K}"
    print(f"train: {n_parameters(result.model):,} parameters, {result.epochs} epochs in {result.seconds:.1f}s; "
          f"test {ndcg} model {report['test'][ndcg]:.4f}, EASE(λ={ease_lambda:g}) "
          f"{baselines['ease']['test'][ndcg]:.4f}, pop {baselines['pop']['test'][ndcg]:.4f}")
