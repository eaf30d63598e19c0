# Environment shared by scripts/demo and scripts/test (sourced, not run).
export MUJOCO_GL=${MUJOCO_GL:-egl}
# glibc malloc otherwise returns large tensor buffers to the kernel after every step and maps them
# again on the next one, which costs ~1.4x on CPU training (bench/RESULTS.md).
export MALLOC_MMAP_MAX_=${MALLOC_MMAP_MAX_:-0}
export MALLOC_TRIM_THRESHOLD_=${MALLOC_TRIM_THRESHOLD_:-17179869184}
# ROS 2: keep test traffic on this machine.
export ROS_AUTOMATIC_DISCOVERY_RANGE=${ROS_AUTOMATIC_DISCOVERY_RANGE:-LOCALHOST}
export PATH="$PWD/.venv/bin:$PATH"
