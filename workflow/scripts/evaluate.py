"""Rules evaluate and predict_shard: answers for the test sets of the run's tasks, and their score per task.

evaluate predicts everything itself (evaluation.shard_by: run) or merges the run's shards; predict_shard
answers one shard. Both resume from the chunks a killed job saved (inscl.evaluation.predict).
"""

from inscl.core import artifacts, runs
from inscl.core.hashing import stable_seed
from inscl.core.rule import run_rule
from inscl.core.stages import job_settings


def predict_rows(smk, settings, output, shard=None):
    from inscl.evaluation.backends import open_backend
    from inscl.evaluation.predict import predict, select_test_rows, shard_rows

    evaluation = settings["evaluation"]
    run = runs.of_path(output)
    instances = artifacts.read(smk.input.instances, "instances")
    rows = select_test_rows(instances, list(smk.params.tasks), evaluation["max_test_per_task"], smk.input.instances)
    if shard is not None:
        rows = shard_rows(rows, shard, evaluation["shard_examples"])
    backend, tokenizer = open_backend(
        evaluation, smk.input.model, smk.input.base, settings["model"], run.name, smk.threads
    )
    try:
        predictions, _ = predict(
            rows,
            instances,
            backend,
            tokenizer,
            evaluation,
            output,
            template=settings["training"]["template"],
            seed=stable_seed("predict", run.name),
            model_folders=[smk.input.model, smk.input.base],
            label=f"predict {run.name}" + (f" {shard}" if shard else ""),
        )
    finally:
        backend.close()
    return predictions


def main(smk):
    import pandas as pd

    from inscl.evaluation.answers import run_answer_rule, with_extracted_answers
    from inscl.evaluation.score import score_predictions

    settings = job_settings(smk)
    if smk.rule == "predict_shard":
        predict_rows(smk, settings, smk.output.shard, shard=smk.wildcards.shard)
        return
    if "shards" in smk.input.keys():
        predictions = pd.concat([artifacts.read(path, "predictions") for path in smk.input.shards], ignore_index=True)
        artifacts.write(predictions, "predictions", smk.output.predictions)
    else:
        predictions = predict_rows(smk, settings, smk.output.predictions)
    answers = with_extracted_answers(predictions, run_answer_rule(runs.of_path(smk.output.predictions)))
    scores = score_predictions(answers, settings["evaluation"], source=smk.output.predictions)
    artifacts.write(scores, "scores", smk.output.scores)


run_rule(snakemake, main)  # noqa: F821
