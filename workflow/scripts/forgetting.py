"""Rule forgetting: InsCL's forgetting analysis of one chain (inscl.evaluation.forgetting)."""

from inscl.core import artifacts, runs
from inscl.core.methods import METHODS
from inscl.core.rule import run_rule
from inscl.core.stages import job_settings


def main(smk):
    from inscl.evaluation.forgetting import analyse_chain

    settings = job_settings(smk)
    order, method, seed = smk.wildcards.order, smk.wildcards.method, int(smk.wildcards.seed)
    paths = {runs.of_path(path).stage: str(path) for path in smk.input.predictions}
    rows = analyse_chain(
        order,
        method,
        seed,
        list(smk.params.tasks),
        {stage: artifacts.read(path, "predictions") for stage, path in paths.items()},
        artifacts.read(smk.input.instances, "instances"),
        settings["evaluation"],
        settings["forgetting"],
        rationale_run=METHODS[method].rationales,
        cache_dir=settings.get("cache_dir", "cache"),
        sources=paths,
    )
    artifacts.write(rows, "forgetting", smk.output[0])


run_rule(snakemake, main)  # noqa: F821
