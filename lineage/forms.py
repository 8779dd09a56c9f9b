"""Browser forms for datasets and runs: they parse text into values; the rules live in the services."""

from __future__ import annotations

import json
from typing import Any

from django import forms

from controlplane.models import Project


class DatasetRegisterForm(forms.Form):
    project = forms.ModelChoiceField(queryset=Project.objects.all(), to_field_name="slug", empty_label=None)
    dataset = forms.CharField(
        max_length=100, label="Dataset", help_text="An existing dataset's name adds a version; a new name creates it."
    )
    description = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}))
    file = forms.FileField(required=False, help_text="CSV, Parquet or JSON Lines (optionally .gz).")
    uri = forms.CharField(
        required=False,
        max_length=1024,
        label="…or a location",
        help_text="s3://bucket/key, s3://bucket/prefix/ (many objects), or file:///path under an allowed folder.",
    )

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        has_file, has_uri = bool(data.get("file")), bool((data.get("uri") or "").strip())
        if has_file == has_uri:
            self.add_error("file", "choose a file to upload or give a location, not both")
        return data


class TransformForm(forms.Form):
    recipe = forms.ChoiceField()
    output_name = forms.SlugField(
        required=False, max_length=50, help_text="Base name of the derived dataset(s); defaults to <input>-<recipe>."
    )
    parameters = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text='Parameters as JSON, e.g. {"test_fraction": 0.25}. The fields below fill it for you.',
    )

    def __init__(self, *args: Any, recipes: list[Any], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["recipe"].choices = [(r.name, f"{r.name} — {r.description}") for r in recipes]

    def clean_parameters(self) -> dict[str, Any]:
        text = (self.cleaned_data.get("parameters") or "").strip()
        if not text:
            return {}
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise forms.ValidationError(f"not valid JSON ({exc.msg} at character {exc.pos})") from None
        if not isinstance(value, dict):
            raise forms.ValidationError('expected a JSON object, e.g. {"seed": 7}')
        return value
