"""Browser forms for datasets and runs: they parse text into values; the rules live in the services."""

from __future__ import annotations

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


def parameter_field(parameter: Any, *, columns: list[str] | None = None) -> forms.Field:
    """A form field for one declared recipe parameter (workers.recipes Parameter): text in, the recipe converts it.

    Blank means the recipe's default, so no field is required by the form; the recipe's own validation names
    what is missing or wrong.
    """
    help_text = parameter.help
    if parameter.minimum is not None or parameter.maximum is not None:
        help_text += f" ({parameter.minimum if parameter.minimum is not None else ''} … {parameter.maximum if parameter.maximum is not None else ''})"
    field: forms.Field
    if parameter.choices:
        field = forms.ChoiceField(choices=[("", "default")] + [(c, c) for c in parameter.choices], required=False)
    elif parameter.type == "bool":
        field = forms.ChoiceField(choices=[("", "default"), ("true", "true"), ("false", "false")], required=False)
    elif parameter.type == "column" and columns:
        field = forms.ChoiceField(choices=[("", "— none —")] + [(c, c) for c in columns], required=False)
    else:
        field = forms.CharField(required=False, max_length=2000)
        if parameter.type == "columns" and columns:
            help_text += " Comma-separated, from: " + ", ".join(columns) + "."
    field.label = parameter.name + (" *" if parameter.required else "")
    field.help_text = help_text.strip()
    if not isinstance(field, forms.ChoiceField):
        field.widget.attrs["placeholder"] = "" if parameter.default is None else str(parameter.default)
    return field


class TransformForm(forms.Form):
    """The derive form; its parameter fields (hp_<name>) are generated from the chosen recipe's declarations."""

    recipe = forms.ChoiceField()
    output_name = forms.SlugField(
        required=False, max_length=50, help_text="Base name of the derived dataset(s); defaults to <input>-<recipe>."
    )

    def __init__(self, *args: Any, recipes: list[Any], recipe: Any, columns: list[str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["recipe"].choices = [(r.name, f"{r.name} — {r.description}") for r in recipes]
        self.fields["recipe"].initial = recipe.name
        self.parameter_names = []
        for parameter in recipe.parameters:
            self.fields[f"hp_{parameter.name}"] = parameter_field(parameter, columns=columns)
            self.parameter_names.append(parameter.name)

    def parameters(self) -> dict[str, Any]:
        """Only what the user filled in; blanks take the recipe's defaults."""
        return {name: self.cleaned_data[f"hp_{name}"] for name in self.parameter_names if self.cleaned_data.get(f"hp_{name}") not in (None, "")}


BACKENDS = [("local", "local (this machine)"), ("sagemaker", "SageMaker")]


def unavailable_backends() -> dict[str, str]:
    """Backends this deployment cannot run, with the reason (the same settings training_run_launch checks)."""
    from django.conf import settings

    if not settings.SAGEMAKER_ROLE_ARN:
        return {"sagemaker": "SAGEMAKER_ROLE_ARN is not set"}
    if not settings.SAGEMAKER_S3_URL:
        return {"sagemaker": "it needs an s3:// OBJECT_STORE_URL or SAGEMAKER_S3_URL"}
    return {}


class SelectWithUnavailable(forms.Select):
    """A select whose unavailable choices are shown, disabled, with the reason in their label."""

    def __init__(self, *args: Any, unavailable: dict[str, str] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.unavailable = unavailable or {}

    def create_option(self, name: str, value: Any, label: Any, selected: Any, index: int, subindex: Any = None, attrs: Any = None) -> dict[str, Any]:
        option = super().create_option(name, value, label, selected, index, subindex=subindex, attrs=attrs)
        reason = self.unavailable.get(str(value))
        if reason:
            option["attrs"]["disabled"] = True
            option["label"] = f"{label} (not available: {reason})"
        return option


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
        self.unavailable_backends = unavailable_backends()
        self.fields["backend"].widget = SelectWithUnavailable(choices=BACKENDS, unavailable=self.unavailable_backends)
        if self.unavailable_backends:
            self.fields["backend"].help_text = " ".join(
                f"{dict(BACKENDS)[name]} is not available here: {reason}." for name, reason in self.unavailable_backends.items()
            )
        self.hyperparameter_names = []
        for parameter in recipe.parameters:
            if parameter.name in ("target", "seed"):
                continue
            self.fields[f"hp_{parameter.name}"] = parameter_field(parameter, columns=columns)
            self.hyperparameter_names.append(parameter.name)

    def clean_backend(self) -> str:
        backend = self.cleaned_data["backend"]
        if backend in self.unavailable_backends:
            raise forms.ValidationError(f"{dict(BACKENDS)[backend]} is not configured here: {self.unavailable_backends[backend]}")
        return backend

    def hyperparameters(self) -> dict[str, Any]:
        """Only what the user typed; blanks take the recipe's defaults. Text is converted by the recipe's types."""
        return {name: self.cleaned_data[f"hp_{name}"] for name in self.hyperparameter_names if self.cleaned_data.get(f"hp_{name}") not in (None, "")}
