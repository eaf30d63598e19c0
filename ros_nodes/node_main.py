"""What the node entry points share around rclpy: `-h/--help` and a clean stop.

`--help`: rclpy.init ignores arguments it does not know, so `genie-world-model-node --help` used to
start the node with its defaults. `help_requested` looks for -h/--help before `--ros-args` (what
follows belongs to ROS) and `usage` prints the node's docstring and parameters; the entry point then
exits 0 without calling rclpy.init.

`stop`: rclpy's Executor.shutdown() does not wait for callbacks already handed to a
MultiThreadedExecutor's thread pool (it sets its shutdown flag before testing it), and destroys the
guard condition those callbacks trigger when they start; each one then fails with "cannot use
Destroyable because destruction was requested", an error nobody fetches, which rclpy prints at exit
as "The following exception was never retrieved: ...". `stop` lets the pool finish what it was handed first (at
most one callback per timer / subscription / service), then shuts down the executor, the node and
rclpy. It reaches into the executor's pool (`_executor`, `_futures`), rclpy having no public way.
"""

from __future__ import annotations

import inspect


def help_requested(argv: list[str]) -> bool:
    """-h or --help among the node's own arguments (argv[1:] up to `--ros-args`)."""
    own = argv[1:]
    if "--ros-args" in own:
        own = own[: own.index("--ros-args")]
    return any(a in ("-h", "--help") for a in own)


def usage(prog: str, doc: str, parameters: dict) -> str:
    """The node's docstring, then every parameter as `name (type, default): description`."""
    lines = [inspect.cleandoc(doc), "", f"usage: {prog} [-h] [--ros-args [-p NAME:=VALUE ...] "
             "[-r __ns:=/NAMESPACE] [-r __node:=NAME]]", "", "parameters (--ros-args -p NAME:=VALUE):"]
    for name, (default, description) in parameters.items():
        shown = repr(default) if isinstance(default, str) else str(default).lower() if isinstance(default, bool) \
            else default
        lines.append(f"  {name} ({type(default).__name__}, default {shown}): {description}")
    return "\n".join(lines)


def stop(executor, *nodes, context=None) -> None:
    """Stop spinning `nodes` on `executor` without leaving callbacks to fail on destroyed handles, then
    shut down `context` (rclpy's default one unless given). Call it once nothing spins the executor."""
    import rclpy

    pool = getattr(executor, "_executor", None)  # MultiThreadedExecutor's ThreadPoolExecutor
    if pool is not None:
        pool.shutdown(wait=True)  # callbacks handed to it run to their end while the guard condition exists
    def pending():  # the executor's rclpy Tasks (`_tasks`: (task, entity, node)) and pool futures
        return [t[0] for t in getattr(executor, "_tasks", ())] + list(getattr(executor, "_futures", ()))

    tasks = pending()
    executor.shutdown()
    for node in reversed(nodes):
        node.destroy_node()
    rclpy.try_shutdown(context=context)
    for task in tasks + pending():
        # a callback that ran after SIGINT shut the context down may have failed (e.g. a publish, or a
        # handle destroyed just now): expected at exit, so fetch the error rather than have rclpy print
        # it as never retrieved; one still pending will never run
        if task.done():
            task.exception()
        else:
            task.cancel()
