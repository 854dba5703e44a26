"""reconciler: a GitOps controller for infrastructure.

The flow, one module per step: source (Git) -> load (validate) -> providers
(observe) -> diff -> plan -> execute -> report, chained by controller and exposed
by cli and server. See ARCHITECTURE.md.
"""

__version__ = "0.1.0"
