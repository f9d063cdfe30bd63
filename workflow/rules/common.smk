# Config-derived constants and the input, params and resource functions every rule file uses.
# Paths come from inscl.core.runs and inscl.core.artifacts, settings from inscl.core.stages,
# what a method needs from inscl.core.methods: each fact is stated there once.
import re
from pathlib import Path

from inscl.core import artifacts, runs, stages
from inscl.core.code_digest import digest
from inscl.core.methods import METHODS as METHOD_REGISTRY
from inscl.evaluation import shards

ORDERS = config["orders"]
SEEDS = config["seeds"]
# Methods trained as chains; icl trains nothing (one icl job per seed, on the base model).
METHODS = [method for method in config["methods"] if METHOD_REGISTRY[method].trains]
ICL = "icl" in config["methods"]
REFERENCES = config["references"]
EXPERIMENT_TASKS = runs.experiment_tasks(ORDERS)
ARTIFACT = {name: spec.path for name, spec in artifacts.ARTIFACTS.items() if spec.path}


wildcard_constraints:
    order="|".join(ORDERS),
    method="|".join(map(re.escape, METHODS)) if METHODS else "no-method",
    seed=r"\d+",
    stage=r"\d+",
    task="|".join(EXPERIMENT_TASKS),
    run=runs.RUN_PATTERN,


# ---------------------------------------------------------------- settings, code, resources


def get_settings(rule_name):
    """The config keys that change the rule's outputs (key order does not matter)."""
    return stages.settings(config, rule_name)


def get_resources(rule_name):
    """Threads aside, everything that only changes how the rule's job runs."""
    return stages.resources(config, rule_name)


def get_threads(rule_name, default=1):
    return stages.threads(config, rule_name, default)


def get_code(script, *entries):
    """Digest of the code a rule runs (docstrings and comments excluded)."""
    return digest(os.path.join(workflow.basedir, "workflow", "scripts", script), *entries)


# ---------------------------------------------------------------- runs


def get_run(wildcards):
    """The run a job works on, from its wildcards."""
    if "run" in wildcards.keys():
        return runs.parse(wildcards.run)
    if "stage" in wildcards.keys():
        return runs.chain(wildcards.order, wildcards.method, wildcards.seed, wildcards.stage)
    if "task" in wildcards.keys():
        return runs.single_task(wildcards.seed, wildcards.task)
    return runs.multitask(wildcards.seed)


def chain_runs(final_only=False):
    """Every stage of every chain plus the base model, or only the final stage of each chain."""
    found = [] if final_only else [runs.BASE]
    for order, tasks in ORDERS.items():
        stages_run = [len(tasks)] if final_only else range(1, len(tasks) + 1)
        for method in METHODS:
            for seed in SEEDS:
                found += [runs.chain(order, method, seed, k) for k in stages_run]
    return found


def reference_runs():
    found = []
    for seed in SEEDS:
        if "multitask" in REFERENCES:
            found.append(runs.multitask(seed))
        if "single_task" in REFERENCES:
            found += [runs.single_task(seed, task) for task in EXPERIMENT_TASKS]
    return found


# ---------------------------------------------------------------- replay and training inputs


def get_replay_inputs(wildcards):
    """The instances plus what the method's replay strategy reads (see inscl.core.methods)."""
    needs = METHOD_REGISTRY[wildcards.method].needs
    return {"instances": ARTIFACT["instances"], **{need: ARTIFACT[need] for need in needs}}


def get_replay_settings(wildcards):
    """The settings the method reads (see inscl.core.methods), nested like the config."""
    method = METHOD_REGISTRY[wildcards.method]
    return stages.nested({key: stages.lookup(config, key) for key in method.settings})


def get_replay_code(wildcards):
    strategy = METHOD_REGISTRY[wildcards.method].strategy
    return get_code("select_replay.py", strategy)


def run_instances(run):
    """The instances a run trains and is evaluated on: an rcl chain's hold its rationale targets."""
    if run.kind == "chain" and METHOD_REGISTRY[run.method].rationales:
        return ARTIFACT["rcl_instances"]
    return ARTIFACT["instances"]


def get_run_instances(wildcards):
    return run_instances(get_run(wildcards))


def get_train_inputs(wildcards):
    """Stage k starts from stage k-1 (stage 1 and the references from the base model) and reads
    the stage's replay set when its method replays anything."""
    run = get_run(wildcards)
    inputs = {
        "previous": run.previous.model,
        "base": runs.BASE.model,
        "instances": run_instances(run),
    }
    if run.kind == "chain" and METHOD_REGISTRY[run.method].strategy:
        inputs["replay"] = runs.replay_folder(run.order, run.method, run.seed)
    if run.kind == "chain" and run.stage > 1 and carries_optimizer():
        inputs["optimizer"] = run.previous.file(OPTIMIZER_STATE)
    if run.kind == "chain" and run.stage > 1 and METHOD_REGISTRY[run.method].state:
        inputs["state"] = run.previous.state
    return inputs


def get_train_method(wildcards):
    """A chain's method and the settings its training hook reads at this stage (see inscl.core.methods);
    none for the references."""
    run = get_run(wildcards)
    if run.kind != "chain":
        return {}
    method = METHOD_REGISTRY[run.method]
    keys = [k for k in method.training_settings if run.stage > 1 or k not in method.later_stage_settings]
    settings = stages.nested({key: stages.lookup(config, key) for key in keys})
    return {"name": run.method, "settings": settings}


def get_train_code(wildcards):
    run = get_run(wildcards)
    hook = METHOD_REGISTRY[run.method].training if run.kind == "chain" else None
    return get_code("train.py", *([hook] if hook else []))


# Methods whose training leaves a stage state (rule train_with_state), and the others (rule train).
STATEFUL = [method for method in METHODS if METHOD_REGISTRY[method].state]
STATELESS = [method for method in METHODS if not METHOD_REGISTRY[method].state]


def methods_pattern(methods):
    return "|".join(map(re.escape, methods)) if methods else "no-method"


OPTIMIZER_STATE = "optimizer"  # a chain stage's optimizer state, for the next stage (optimizer.state carry)


def carries_optimizer():
    return config["training"]["optimizer"]["state"] == "carry"


def get_train_outputs(kind, state=False):
    """A run's model and train log, and with `state` the stage state its method leaves (rule
    train_with_state). Under training.optimizer.state carry a chain stage also leaves its
    optimizer state, temp(): deleted once the next stage has read it (twice the weights in fp32).
    Without training.keep_stage_models a chain stage's model is temp() too: deleted once the next
    stage and the evaluations have used it."""
    run = runs.template(kind)
    model = directory(run.model)
    if kind == "chain" and not config["training"]["keep_stage_models"]:
        model = temp(model)
    outputs = {"model": model, "train_log": run.file("train_log.parquet")}
    if kind == "chain" and carries_optimizer():
        outputs["optimizer"] = temp(directory(run.file(OPTIMIZER_STATE)))
    if state:
        outputs["state"] = run.state
    return outputs


def get_train_tasks(wildcards):
    return runs.training_tasks(get_run(wildcards), ORDERS)


def get_train_epochs(wildcards):
    return runs.training_epochs(get_run(wildcards), config["training"]["epochs"], ORDERS)


def get_train_seed(wildcards):
    return runs.training_seed(get_run(wildcards))


def get_evaluated_tasks(wildcards):
    """A single-task reference is scored on its own task; every other model on all tasks, or under
    evaluation.tasks: seen on the tasks it has trained on (see inscl.evaluation.shards)."""
    return evaluated_tasks(get_run(wildcards))


def evaluated_tasks(run):
    return shards.evaluated_tasks(run, ORDERS, EXPERIMENT_TASKS, config["evaluation"]["tasks"])


def get_evaluate_inputs(wildcards):
    """The model and test sets, or with evaluation.shard_by task or examples the run's shards."""
    evaluation = config["evaluation"]
    names = shards.shard_names(
        evaluated_tasks(get_run(wildcards)),
        evaluation["shard_by"],
        evaluation["shard_examples"],
        evaluation["max_test_per_task"],
    )
    if evaluation["shard_by"] != "run":
        return {"shards": [get_run(wildcards).file(f"shards/{name}.parquet") for name in names]}
    return {
        "model": f"{runs.RUNS}/{wildcards.run}/model",
        "base": runs.BASE.model,
        "instances": get_run_instances(wildcards),
    }


# ---------------------------------------------------------------- summaries


def get_score_files(wildcards):
    files = {
        "chain": [run.file("scores.parquet") for run in chain_runs() if evaluated_tasks(run)],
        "references": [run.file("scores.parquet") for run in reference_runs()],
        **get_optional_summaries(wildcards),
    }
    if ICL:
        files["icl"] = [f"{runs.icl_folder(seed)}/scores.parquet" for seed in SEEDS]
    return files


def get_optional_summaries(wildcards):
    """Judge verdicts of the final models, and general-ability results of base and final models."""
    files = {}
    finals = chain_runs(final_only=True)
    if config["judge"]["enabled"]:
        files["judge"] = [f"{runs.JUDGE}/{run.name}/summary.parquet" for run in finals]
    if config["general"]["enabled"]:
        files["general"] = [f"{runs.GENERAL}/{run.name}/results.parquet" for run in [runs.BASE] + finals]
    return files


def get_report_inputs(wildcards):
    """The metrics, every replay set, and the instruction analysis the configured methods use."""
    needs = {need for method in METHODS for need in METHOD_REGISTRY[method].needs}
    inputs = {
        "matrix": ARTIFACT["score_matrix"],
        "per_run": ARTIFACT["cl_metrics"],
        "summary": ARTIFACT["summary"],
        "replay": [
            runs.replay_folder(order, method, seed)
            for order in ORDERS
            for method in METHODS
            if METHOD_REGISTRY[method].strategy
            for seed in SEEDS
        ],
    }
    if "distances" in needs:
        inputs["distances"] = ARTIFACT["distances"]
    if "insinfo" in needs:
        inputs["tags_raw"] = ARTIFACT["tags_raw"]
    if config["judge"]["enabled"]:
        inputs["judge"] = ARTIFACT["judge_rates"]
    if config["general"]["enabled"]:
        inputs["general"] = ARTIFACT["general_delta"]
    return {**inputs, **get_trace_baseline_report_inputs()}


def get_trace_baseline_report_inputs():
    """What the report shows of ICL, RCL, the general data and the forgetting analysis."""
    inputs = {}
    if ICL:
        inputs["icl_shots"] = [f"{runs.icl_folder(seed)}/shots.parquet" for seed in SEEDS]
    if any(METHOD_REGISTRY[method].rationales for method in METHODS):
        inputs["rationales"] = ARTIFACT["rationales"]
    if any(METHOD_REGISTRY[method].general for method in METHODS):
        inputs["general_data"] = ARTIFACT["general_data"]
    if config["forgetting"]["enabled"]:
        inputs["forgetting"] = [
            runs.forgetting_file(order, method, seed) for order in ORDERS for method in METHODS for seed in SEEDS
        ]
    return inputs


def get_forgetting_inputs(wildcards):
    """The predictions of every stage of the chain (stage j scores task j under both evaluation.tasks
    settings) and the instances (each task's training answers)."""
    stages_run = range(1, len(ORDERS[wildcards.order]) + 1)
    return {
        "predictions": [
            runs.chain(wildcards.order, wildcards.method, wildcards.seed, k).file("predictions.parquet")
            for k in stages_run
        ],
        "instances": ARTIFACT["instances"],
    }


def get_general_file(wildcards):
    path = config["replay"]["general"]["path"]
    return [path] if path else []


def get_metrics_outputs():
    outputs = {
        "matrix": ARTIFACT["score_matrix"],
        "per_run": ARTIFACT["cl_metrics"],
        "summary": ARTIFACT["summary"],
    }
    if config["judge"]["enabled"]:
        outputs["judge"] = ARTIFACT["judge_rates"]
    if config["general"]["enabled"]:
        outputs["general"] = ARTIFACT["general_delta"]
    return outputs


def get_source_files(wildcards):
    """Every file of every configured data source, so that editing one reruns ingestion."""
    files = []
    for source in config["data"]["sources"]:
        path = source.get("path")
        if path and os.path.isdir(path):
            files += sorted(str(p) for p in Path(path).rglob("*") if p.is_file())
        elif path:
            files.append(path)
        if source.get("task_list"):
            files.append(source["task_list"])
    return files


def get_tag_file(wildcards):
    tagging = config["tagging"]
    return [tagging["file"]["path"]] if tagging["backend"] == "file" else []
