"""Experiments: the studies and reports built on the library and the trainer, one module per
`genie-robot` subcommand, each a thin CLI over library calls plus the write-up (markdown, pictures,
MLflow run).

    ablate.py       `genie-robot ablate`: the Genie paper's ablations as one resumable sweep
                    (configs/ablations/*.yaml; trains through training/)
    eval_report.py  `genie-robot eval`: the report folder of genie_robot.eval.evaluate.evaluate_model
    plan_report.py  `genie-robot plan-eval`: the report of genie_robot.planning.evaluate.evaluate_planner
    agents.py       `genie-robot agents`: latent-action policies vs oracle BC in the simulator

They come into `genie-robot` as plugins (pyproject.toml, entry-point group `genie_robot.commands`):
the library (genie_robot/) never imports this package, and neither does training/ nor ros_nodes/
(tests/test_import_rules.py).
"""
