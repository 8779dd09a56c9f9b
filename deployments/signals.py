"""What the rest of the system can subscribe to.

`model_version_approved` is sent once per approval request that becomes approved, after the transaction that
approved it commits, with `request` (a deployments.ApprovalRequest: its `model_version`, `environment` and
decisions). The deployments issue connects its "start the deployment" step here; receivers must be quick and
enqueue their slow work.
"""

from django.dispatch import Signal

model_version_approved = Signal()
