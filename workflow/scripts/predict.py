"""Generate answers for the capped test sets of the run's tasks -> predictions.parquet."""
from inscl.scripting import run_rule


def main(smk):
    import pandas as pd

    from inscl.generation import predict
    from inscl.io import stable_seed, write_parquet
    from inscl.modeling import load_for_inference

    instances = pd.read_parquet(smk.input.instances)
    model, tokenizer = load_for_inference(smk.input.model, smk.input.base, smk.params.model)
    predictions = predict(
        instances,
        list(smk.params.tasks),
        model,
        tokenizer,
        smk.params.evaluation,
        template=smk.params.training["template"],
        seed=stable_seed("predict", smk.wildcards.run),
        source=smk.input.instances,
    )
    write_parquet(predictions, smk.output[0])


run_rule(snakemake, main)  # noqa: F821
