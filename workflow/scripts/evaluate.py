"""Rule evaluate: answers for the test sets of the run's tasks, and their score per task."""

from inscl.core import artifacts, runs
from inscl.core.hashing import stable_seed
from inscl.core.rule import run_rule
from inscl.core.stages import job_settings


def main(smk):
    from inscl.evaluation.generate import predict
    from inscl.evaluation.score import score_predictions
    from inscl.training.models import load_for_inference

    settings = job_settings(smk)
    run = runs.of_path(smk.output.predictions)
    instances = artifacts.read(smk.input.instances, "instances")
    model, tokenizer = load_for_inference(smk.input.model, smk.input.base, settings["model"])
    predictions = predict(
        instances,
        list(smk.params.tasks),
        model,
        tokenizer,
        settings["evaluation"],
        template=settings["training"]["template"],
        seed=stable_seed("predict", run.name),
        source=smk.input.instances,
    )
    artifacts.write(predictions, "predictions", smk.output.predictions)
    scores = score_predictions(predictions, settings["evaluation"], source=smk.output.predictions)
    artifacts.write(scores, "scores", smk.output.scores)


run_rule(snakemake, main)  # noqa: F821
