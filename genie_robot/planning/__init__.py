"""Planning in imagination over latent actions, and agents built from latent actions.

    from genie_robot.planning import plan, RecedingHorizonPlanner
    result = plan(world_model, frame_HW3, goal_HW3, horizon=4)      # PlanResult
    result.actions_T, result.frames_THW3, result.score

Modules: scoring.py (goal distances), planner.py (CEM / random shooting, receding horizon),
evaluate.py (`genie-robot plan-eval`), agents.py (`genie-robot agents`: latent-action policies
mapped to robot actions from few labels), stats.py (confidence intervals), cli.py (registers the two
subcommands). The ROS 2 service is ros_nodes/planner_service.py. See docs/planning.md.
"""

from genie_robot.planning.planner import PlanResult, RecedingHorizonPlanner, plan
from genie_robot.planning.scoring import SCORES, GoalScorer

__all__ = ["SCORES", "GoalScorer", "PlanResult", "RecedingHorizonPlanner", "plan"]
