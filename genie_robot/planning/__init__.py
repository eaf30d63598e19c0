"""Planning in imagination over latent actions, and latent actions mapped to robot actions.

    from genie_robot.planning import plan, RecedingHorizonPlanner
    result = plan(world_model, frame_HW3, goal_HW3, horizon=4)      # PlanResult
    result.actions_T, result.frames_THW3, result.score

Modules: scoring.py (goal distances), planner.py (CEM / random shooting, receding horizon),
evaluate.py (planner vs random vs LAM-inferred sequences toward real goals, returned as data),
action_map.py (latent actions -> robot actions from a few labels), stats.py (confidence intervals).
The ROS 2 service is ros_nodes/planner_service.py; the studies and their reports (`genie-robot
plan-eval`, `genie-robot agents`) are experiments/plan_report.py and experiments/agents.py. See
docs/planning.md.
"""

from genie_robot.planning.planner import PlanResult, RecedingHorizonPlanner, plan
from genie_robot.planning.scoring import SCORES, GoalScorer

__all__ = ["SCORES", "GoalScorer", "PlanResult", "RecedingHorizonPlanner", "plan"]
