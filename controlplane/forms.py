"""Browser forms: they parse text into values; the rules live in the services."""

from __future__ import annotations

import json
from typing import Any

from django import forms


def parse_cost_tags(text: str) -> dict[str, str]:
    """Accept `key=value` lines (what people type) and return a dict; the service validates the tags."""
    tags: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line:
            continue
        if "=" not in line:
            raise forms.ValidationError(f"line {number}: expected key=value, got {line!r}")
        key, value = line.split("=", 1)
        key = key.strip()
        if key in tags:
            raise forms.ValidationError(f"line {number}: tag {key!r} appears twice")
        tags[key] = value.strip()
    return tags


def format_cost_tags(tags: dict[str, Any]) -> str:
    return "\n".join(f"{key}={value}" for key, value in tags.items())


class CostTagsField(forms.CharField):
    widget = forms.Textarea(attrs={"rows": 3, "placeholder": "team=fraud\ncost-center=1234"})

    def to_python(self, value: Any) -> dict[str, str]:  # type: ignore[override]
        return parse_cost_tags(super().to_python(value) or "")

    def prepare_value(self, value: Any) -> Any:
        return format_cost_tags(value) if isinstance(value, dict) else value


class ProjectCreateForm(forms.Form):
    name = forms.CharField(max_length=100, help_text="A short human-readable name, e.g. “Fraud scoring”.")
    slug = forms.CharField(
        max_length=63,
        help_text="Lowercase letters, digits and hyphens. Becomes the `project` cost-allocation tag; it never changes.",
    )
    description = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 3}))
    cost_tags = CostTagsField(required=False, label="Extra cost tags", help_text="One key=value a line.")


class ProjectChangeForm(forms.Form):
    description = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 3}))
    cost_tags = CostTagsField(required=False, label="Extra cost tags", help_text="One key=value a line.")
    reason = forms.CharField(required=False, max_length=500, help_text="Why the change (kept in the audit log).")


class ProjectMemberForm(forms.Form):
    username = forms.CharField(max_length=150, help_text="The user to add, or whose role to change.")
    role = forms.ChoiceField(choices=[("member", "member"), ("owner", "owner")], initial="member")
    reason = forms.CharField(required=False, max_length=500, help_text="Kept in the audit log.")


class ProjectRestrictForm(forms.Form):
    restricted = forms.BooleanField(
        required=False, label="Restricted to its members", help_text="Only members and admins see its work."
    )
    reason = forms.CharField(required=False, max_length=500, help_text="Kept in the audit log.")


def json_pretty(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, default=str)
