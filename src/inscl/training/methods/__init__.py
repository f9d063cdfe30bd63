"""The training side of continual-learning methods: one module per method, each a `TrainingMethod`
(base.py) whose hooks StageTrainer calls. inscl.core.methods names each method's class."""
