"""The learned base policy: a flow-matching action-chunk policy (model.py), its processors
(processors.py), checkpoints (checkpoint.py), training (train.py, `swm train policy`) and
closed-loop evaluation (evaluate.py, `swm eval policy`). Entry point: `policy.load_policy`."""
