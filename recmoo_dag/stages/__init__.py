"""One thin main per DVC stage, named like the stage: `main(params)` reads its inputs, calls the
pure core, writes its outputs and prints one summary line. `recmoo <stage>` (cli.py) runs them,
`dvc.yaml` runs `recmoo <stage>`, and Dagster runs the DVC stages: one implementation of each step.
This is the only code that knows where a stage's inputs and outputs live."""
