"""MuJoCo Fetch scenes (scene.py), the scripted policy (policy.py) and `genie-robot simulate`
(simulate.py). Nothing here imports mujoco at package import: its GL backend is chosen first."""
