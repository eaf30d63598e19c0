"""The one base of the errors that mean "an input the user must fix".

Every command reports these the same way (`genie_robot.cli.run_reporting_errors`): one
`genie-robot <command>: error: ...` line on stderr and exit status 2, never a traceback. The message
names the problem and the fix. Anything else that escapes a command is a bug and keeps its traceback.

    InputError (a ValueError)   a flag value, a file, a store, checkpoint, bundle or config that does not
                                fit: StoreError, CheckpointError, BundleError, ExportError, QuantizeError,
                                ConversionError, EvalError, ConfigError, AblationError, ImageError
    SetupError (also a RuntimeError)
                                this machine lacks what the job needs: a rendering backend
                                (RenderBackendError), I3D weights (I3DWeightsError), a CUDA device, an
                                ONNX Runtime provider, the simulator extra
"""

from __future__ import annotations


class InputError(ValueError):
    """An input the user must fix; the message names the problem and the fix."""


class SetupError(InputError, RuntimeError):
    """Something this machine lacks (a package, a backend, a device, a weight file); the message says
    what to install or pass instead. A RuntimeError too, as these were before the base existed."""
