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


BACKENDS = [("local", "local (this machine)"), ("sagemaker", "SageMaker")]


class TrainingForm(forms.Form):
    """The launch form; its hyperparameter fields (hp_<name>) are generated from the recipe's declared parameters."""

    recipe = forms.ChoiceField()
    validation = forms.ChoiceField(required=False, label="Validation data", help_text="Optional: otherwise a seeded hold-out of the training data.")
    target = forms.ChoiceField(label="Target column")
    seed = forms.IntegerField(initial=42, min_value=0, max_value=2**31 - 1)
    backend = forms.ChoiceField(choices=BACKENDS, initial="local")
    instance_type = forms.ChoiceField(label="Instance type")
    instance_count = forms.IntegerField(initial=1, min_value=1, max_value=100)
    max_runtime_minutes = forms.IntegerField(initial=60, min_value=1, max_value=7 * 24 * 60, label="Max runtime (minutes)")
    model_name = forms.SlugField(required=False, max_length=63, help_text="The registered model to add the version to; defaults to <dataset>-<recipe>.")

    def __init__(self, *args: Any, recipes: list[Any], recipe: Any, columns: list[str], validations: list[tuple[str, str]],
                 instance_types: list[str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["recipe"].choices = [(r.name, f"{r.name} — {r.description}") for r in recipes]
        self.fields["recipe"].initial = recipe.name
        self.fields["target"].choices = [(c, c) for c in columns]
        self.fields["target"].initial = "target" if "target" in columns else (columns[-1] if columns else None)
        self.fields["validation"].choices = [("", "— none —"), *validations]
        self.fields["instance_type"].choices = [("local", "local")] + [(t, t) for t in instance_types]
        self.hyperparameter_names = []
        for parameter in recipe.parameters:
            if parameter.name in ("target", "seed"):
                continue
            name = f"hp_{parameter.name}"
            help_text = parameter.help
            if parameter.minimum is not None or parameter.maximum is not None:
                help_text += f" ({parameter.minimum if parameter.minimum is not None else ''} … {parameter.maximum if parameter.maximum is not None else ''})"
            if parameter.choices:
                field: forms.Field = forms.ChoiceField(choices=[("", "default")] + [(c, c) for c in parameter.choices], required=False)
            elif parameter.type == "bool":
                field = forms.ChoiceField(choices=[("", "default"), ("true", "true"), ("false", "false")], required=False)
            else:
                field = forms.CharField(required=False, max_length=500)
            field.label = parameter.name + (" *" if parameter.required else "")
            field.help_text = help_text.strip()
            field.widget.attrs["placeholder"] = "" if parameter.default is None else str(parameter.default)
            self.fields[name] = field
            self.hyperparameter_names.append(parameter.name)

    def hyperparameters(self) -> dict[str, Any]:
        """Only what the user typed; blanks take the recipe's defaults. Text is converted by the recipe's types."""
        return {name: self.cleaned_data[f"hp_{name}"] for name in self.hyperparameter_names if self.cleaned_data.get(f"hp_{name}") not in (None, "")}
