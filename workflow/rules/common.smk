# Paths, wildcard constraints and input functions shared by the rule files.
import glob
import os
from importlib.util import find_spec

ORDERS = config["orders"]
SEEDS = config["seeds"]
METHODS = config["methods"]
REFERENCES = config["references"]
EXPERIMENT_TASKS = sorted({task for order in ORDERS.values() for task in order})
CACHE = config["cache_dir"]


wildcard_constraints:
    order="|".join(ORDERS),
    method="|".join(METHODS) if METHODS else "no-method",
    seed=r"\d+",
    stage=r"\d+",
    task="|".join(EXPERIMENT_TASKS),


def stages(order):
    return range(1, len(ORDERS[order]) + 1)


def chain_dir(order, method, seed, stage):
    """Run folder of training stage `stage` (0 = the base model)."""
    if int(stage) == 0:
        return "results/runs/base"
    return f"results/runs/{order}/{method}/seed{seed}/stage{stage}"


def chain_runs():
    """Every (order, method, seed, stage) run folder, stage 0 included once."""
    runs = ["results/runs/base"]
    for order in ORDERS:
        for method in METHODS:
            for seed in SEEDS:
                runs += [chain_dir(order, method, seed, k) for k in stages(order)]
    return runs


def reference_runs():
    runs = []
    for seed in SEEDS:
        if "multitask" in REFERENCES:
            runs.append(f"results/runs/multitask/seed{seed}")
        if "single_task" in REFERENCES:
            runs += [f"results/runs/single_task/seed{seed}/{task}" for task in EXPERIMENT_TASKS]
    return runs


def source_files(wildcards=None):
    """Input files of every configured data source, so editing one reruns ingestion."""
    files = []
    for source in config["data"]["sources"]:
        path = source.get("path")
        if not path:
            continue
        if os.path.isdir(path):
            files += sorted(f for f in glob.glob(os.path.join(path, "**", "*"), recursive=True) if os.path.isfile(f))
        else:
            files.append(path)
        if source.get("task_list"):
            files.append(source["task_list"])
    return files


def needs_example_embeddings():
    return "prototype_data" in METHODS


def replay_settings(method):
    """The replay settings a method reads: changing another method's setting does not rerun it."""
    replay, settings = config["replay"], {}
    if method not in ("no_replay", "trace_replay"):
        settings["replay_per_task"] = replay["replay_per_task"]
    if method == "trace_replay":
        settings["trace_fraction"] = replay["trace_fraction"]
    if method == "prototype_data":
        settings["prototype_clusters"] = replay["prototype_clusters"]
    if method in ("inscl", "inscl_insinfo_only"):
        settings["insinfo_pool"] = config["insinfo"]["pool"]
    return settings


def previous_model(wildcards):
    """Stage k starts from the model of stage k-1; stage 1 from the base model."""
    return os.path.join(chain_dir(wildcards.order, wildcards.method, wildcards.seed, int(wildcards.stage) - 1), "model")


def task_epoch_slot(wildcards):
    """(position, order length) of a single-task reference: its place in the first order naming it."""
    for order in ORDERS.values():
        if wildcards.task in order:
            return [order.index(wildcards.task), len(order)]
    return [0, None]


def evaluated_tasks(wildcards):
    """A single-task reference is scored on its own task; every other model on all tasks."""
    if wildcards.run.startswith("single_task/"):
        return [wildcards.run.rsplit("/", 1)[1]]
    return EXPERIMENT_TASKS


def final_runs():
    return [
        chain_dir(order, method, seed, len(ORDERS[order])) for order in ORDERS for method in METHODS for seed in SEEDS
    ]


def optional_reports(wildcards):
    files = {}
    if config["judge"]["enabled"]:
        files["judge"] = [f"results/judge/{run.removeprefix('results/runs/')}/verdicts.parquet" for run in final_runs()]
    if config["general"]["enabled"]:
        runs = ["base"] + [run.removeprefix("results/runs/") for run in final_runs()]
        files["general"] = [f"results/general/{run}/results.parquet" for run in runs]
    return files


def module_file(name):
    """Source file of a package module, found without importing it (keeps start-up fast)."""
    return find_spec(name).origin
