"""Browser forms for environments and promotion requests: they parse text into values; the rules (ranges, gate
syntax, who may do what) live in deployments.services, whose messages the pages show on these fields."""

from __future__ import annotations

import inspect
import re
from typing import Any

from django import forms

from deployments import gates as gate_rules
from deployments.models import Environment, default_request_ttl_days
from deployments.services import MIN_OVERRIDE_REASON


def gate_syntax() -> list[tuple[list[str], str]]:
    """The gate syntax as deployments.gates documents it: (example expressions, what they mean) per kind of gate.

    The docstring's table wraps a meaning over two lines with a second example beside it; the gate parser tells
    which lines belong to the same kind, so they become one entry.
    """
    doc = inspect.cleandoc(gate_rules.__doc__ or "")
    entries: list[tuple[str, list[str], str]] = []
    for line in doc.splitlines():
        parts = re.split(r"\s{2,}", line.strip(), maxsplit=1)
        if not line.startswith(" ") or len(parts) != 2:
            continue
        example, meaning = parts
        try:
            kind = gate_rules.parse_gate(example).kind
        except gate_rules.GateSyntaxError:
            continue
        if entries and entries[-1][0] == kind:
            entries[-1][1].append(example)
            entries[-1] = (kind, entries[-1][1], f"{entries[-1][2]} {meaning}")
        else:
            entries.append((kind, [example], meaning))
    return [(examples, meaning) for _, examples, meaning in entries]


class GatesField(forms.CharField):
    """One gate expression a line; blank lines are left out. The service checks each expression."""

    widget = forms.Textarea(attrs={"rows": 5, "placeholder": "accuracy >= 0.90\napproved in staging", "cols": 50})

    def to_python(self, value: Any) -> list[str]:  # type: ignore[override]
        text = super().to_python(value) or ""
        return [line.strip() for line in text.splitlines() if line.strip()]

    def prepare_value(self, value: Any) -> Any:
        return "\n".join(value) if isinstance(value, list) else value


class EnvironmentForm(forms.Form):
    name = forms.CharField(max_length=40, help_text="Lowercase letters, digits and hyphens, e.g. staging, production.")
    order = forms.IntegerField(initial=0, help_text="Promotion order: lower comes first (staging before production).")
    description = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}))
    approvals_required = forms.IntegerField(
        initial=1, label="Approvals required", help_text="Distinct approvers, none of them the requester (1 to 10)."
    )
    gates = GatesField(required=False, help_text="One expression a line; see the syntax below.")
    allow_override = forms.BooleanField(
        required=False,
        label="Allow override",
        help_text="A request whose gates fail may still be made, with a written reason (audited).",
    )
    request_ttl_days = forms.IntegerField(
        initial=default_request_ttl_days,
        label="Request expires after (days)",
        help_text="An open request nobody decides expires (1 to 365).",
    )
    bake_minutes = forms.FloatField(
        initial=10,
        widget=forms.NumberInput(attrs={"min": 0, "max": 1440, "step": "any"}),
        label="Bake time (minutes)",
        help_text="How long a new revision is watched against the objectives before it is kept (0 to 1440). Each "
        "deployment keeps the bake time it was made with: a change applies from the next one.",
    )
    deploy_on_approval = forms.BooleanField(
        required=False,
        label="Deploy on approval",
        help_text="Deploy a version as soon as it is approved here; otherwise an approver clicks Deploy.",
    )
    strategy = forms.ChoiceField(
        choices=[
            ("all_at_once", "All at once (blue/green)"),
            ("canary", "Canary, then all"),
            ("linear", "Linear steps"),
            ("rolling", "Rolling (ECS replaces tasks as new ones pass health checks)"),
        ],
        initial="all_at_once",
        label="Deployment strategy",
    )
    # The browser says the range at once; the service checks it (and says it in the same words everywhere).
    canary_percent = forms.FloatField(
        initial=10,
        label="Canary share (%)",
        help_text="A canary's share of traffic while it bakes (1 to 99).",
        widget=forms.NumberInput(attrs={"min": 1, "max": 99, "step": "any"}),
    )
    linear_step_percent = forms.FloatField(
        initial=25,
        label="Linear step (%)",
        help_text="Traffic moved at each linear step (1 to 99).",
        widget=forms.NumberInput(attrs={"min": 1, "max": 99, "step": "any"}),
    )
    linear_interval_minutes = forms.FloatField(
        initial=1, label="Linear step every (minutes)", help_text="Minutes between linear steps."
    )
    autoscaling_metric = forms.ChoiceField(
        required=False,
        choices=[("", "None"), ("requests", "Requests per task"), ("cpu", "Average CPU %")],
        label="Autoscaling (aws)",
        help_text="Target tracking between the desired count's bounds, on the aws backend.",
    )
    autoscaling_target = forms.FloatField(
        required=False, label="Autoscaling target", help_text="Requests per task per minute, or CPU %."
    )
    objective_p99_latency_ms = forms.FloatField(
        required=False, label="Objective: p99 latency (ms)", help_text="Empty for none."
    )
    objective_error_rate = forms.FloatField(
        required=False, label="Objective: error rate", help_text="A fraction: 0.01 is 1%. Empty for none."
    )
    objective_drift_share = forms.FloatField(
        required=False, label="Objective: drift share", help_text="The share of features allowed to drift, a fraction."
    )
    min_desired_count = forms.IntegerField(initial=1, label="Desired count: at least")
    max_desired_count = forms.IntegerField(initial=4, label="Desired count: at most")
    backend_settings = forms.JSONField(
        required=False,
        label="Backend settings",
        widget=forms.Textarea(attrs={"rows": 3, "placeholder": '{"cluster": "ml-prod"}'}),
        help_text="A JSON object the serving backend reads (cluster, subnets, …). Empty for none.",
    )

    capture_fraction = forms.FloatField(
        required=False,
        initial=0.1,
        label="Capture fraction",
        widget=forms.NumberInput(attrs={"min": 0, "max": 1, "step": "any"}),
        help_text="The share of requests sampled into capture files for the drift job (0 to 1). Takes effect with "
        "the next deployment: the serving processes read it when they start.",
    )
    drift_window_minutes = forms.IntegerField(
        required=False,
        initial=60,
        label="Drift window (minutes)",
        help_text="Each drift report compares this many minutes of captured requests with the training data.",
    )
    drift_share = forms.FloatField(
        required=False,
        initial=0.5,
        label="Drifted when this share of features drifted",
        widget=forms.NumberInput(attrs={"min": 0, "max": 1, "step": "any"}),
        help_text="A fraction above 0, at most 1.",
    )
    drift_methods = forms.JSONField(
        required=False,
        label="Drift methods",
        widget=forms.Textarea(attrs={"rows": 3, "placeholder": '{"numeric": {"method": "psi", "threshold": 0.2}}'}),
        help_text="How features are judged, per kind (numeric, categorical) and per feature. Empty for the defaults.",
    )

    def clean_drift_methods(self) -> Any:
        value = self.cleaned_data.get("drift_methods")
        return {} if value in (None, "") else value

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        # Left empty (or not sent by an older page): the environment keeps what it has.
        for name in ("capture_fraction", "drift_window_minutes", "drift_share"):
            if cleaned.get(name) is None and name not in self.errors:
                cleaned.pop(name, None)
        return cleaned

    def clean_backend_settings(self) -> Any:
        value = self.cleaned_data.get("backend_settings")
        return {} if value in (None, "") else value

    @staticmethod
    def initial_from(environment: Environment) -> dict[str, Any]:
        return {name: getattr(environment, name) for name in EnvironmentForm.base_fields}

    @staticmethod
    def field_label(name: str) -> str:
        """The label a person knows a setting by (the form's), for names such as an audit event's keys."""
        field = EnvironmentForm.base_fields.get(name)
        if field is not None and field.label:
            return str(field.label)
        return name.replace("_", " ").capitalize()


class ApprovalRequestForm(forms.Form):
    environment = forms.ModelChoiceField(
        queryset=Environment.objects.none(), to_field_name="name", empty_label=None, label="Environment"
    )
    justification = forms.CharField(
        max_length=5000,
        widget=forms.Textarea(attrs={"rows": 4}),
        help_text="Why this version should be promoted: approvers read it next to the evidence.",
    )
    override_reason = forms.CharField(
        required=False,
        max_length=5000,
        label="Override reason",
        widget=forms.Textarea(attrs={"rows": 3}),
    )

    def __init__(self, *args: Any, environments: list[Environment], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        field = self.fields["environment"]
        assert isinstance(field, forms.ModelChoiceField)
        field.queryset = Environment.objects.filter(pk__in=[environment.pk for environment in environments])
        overridable = [environment.name for environment in environments if environment.allow_override]
        if overridable:
            self.fields["override_reason"].help_text = (
                f"Only if a gate fails: {', '.join(overridable)} "
                f"{'allows' if len(overridable) == 1 else 'allow'} a request whose gates fail, with a reason of at "
                f"least {MIN_OVERRIDE_REASON} characters (kept in the audit log and shown to the approvers). "
                "An 'approved in …' gate is never overridden; other environments refuse any failed gate."
            )
        else:
            # No environment accepts an override, so the field would only mislead.
            del self.fields["override_reason"]
