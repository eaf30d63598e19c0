"""ROS 2 nodes of genie-robot: thin rclpy adapters over `genie_robot.runtime.WorldModel`.

`world_model_node` (imagined camera + ImagineRollout service), `camera_replay_node` (a Zarr episode as a
camera), `conversions` (sensor_msgs/Image <-> numpy). The interface package is `genie_robot_msgs/`,
built by scripts/build_msgs. See docs/ros.md.
"""
