"""genie-robot: DeepMind's Genie rebuilt as a world model for robot manipulation.

Data (Zarr episode stores) -> models (tokenizer, latent actions, MaskGIT dynamics) -> training
-> ONNX export -> runtime (WorldModel) -> ROS 2 nodes and planners. See docs/architecture.md.
"""

__version__ = "0.1.0"
