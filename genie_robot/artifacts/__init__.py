"""The on-disk formats that cross stages: training checkpoints and run directories (checkpoints.py)
and MLflow tracking (tracking.py). Model bundles stay in genie_robot/runtime/bundle.py for now.
"""
