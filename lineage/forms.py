"""Browser forms for datasets and runs: they parse text into values; the rules live in the services."""

from __future__ import annotations

from typing import Any

from django import forms
from django.conf import settings
from django.core.validators import MaxValueValidator

from controlplane import access
from controlplane.models import Project
from lineage.services import runs


class DatasetRegisterForm(forms.Form):
    project = forms.ModelChoiceField(queryset=Project.objects.all(), to_field_name="slug", empty_label=None)
    dataset = forms.CharField(
        max_length=100, label="Dataset", help_text="An existing dataset's name adds a version; a new name creates it."
    )
    description = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}))
    file = forms.FileField(required=False, help_text="CSV, Parquet or JSON Lines (optionally .gz).")
    missing_values = forms.CharField(
        required=False,
        max_length=1000,
        label="Missing values",
        help_text="Text that means no value, comma-separated (e.g. NA, n/a). Empty fields always do; nothing else "
        "is guessed, so NA stays Namibia unless you name it.",
    )
    uri = forms.CharField(
        required=False,
        max_length=1024,
        label="…or a location",
        help_text="s3://bucket/key, s3://bucket/prefix/ (many objects), or file:///path under an allowed folder.",
    )

    field_order = ["project", "dataset", "description", "file", "uri", "missing_values"]

    def __init__(self, *args: Any, user: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Only the projects the user may see (and so register into): a restricted one they are not in is not offered.
        self.fields["project"].queryset = access.visible_projects(user)  # type: ignore[attr-defined]

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
        low = "" if parameter.minimum is None else parameter.minimum
        high = "" if parameter.maximum is None else parameter.maximum
        help_text += f" ({low} … {high})"
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
        return {
            name: self.cleaned_data[f"hp_{name}"]
            for name in self.parameter_names
            if self.cleaned_data.get(f"hp_{name}") not in (None, "")
        }


class SelectWithUnavailable(forms.Select):
    """A select whose unavailable choices are shown, disabled, with the reason in their label."""

    def __init__(self, *args: Any, unavailable: dict[str, str] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.unavailable = unavailable or {}

    def create_option(
        self, name: str, value: Any, label: Any, selected: Any, index: int, subindex: Any = None, attrs: Any = None
    ) -> dict[str, Any]:
        option = super().create_option(name, value, label, selected, index, subindex=subindex, attrs=attrs)
        reason = self.unavailable.get(str(value))
        if reason:
            option["attrs"]["disabled"] = True
            option["label"] = f"{label} (not available: {reason})"
        return option


class TrainingForm(forms.Form):
    """The launch form; its hyperparameter fields (hp_<name>) are generated from the recipe's declared parameters."""

    recipe = forms.ChoiceField()
    validation = forms.ChoiceField(
        required=False, label="Validation data", help_text="Optional: otherwise a seeded hold-out of the training data."
    )
    target = forms.ChoiceField(label="Target column")
    seed = forms.IntegerField(initial=runs.DEFAULT_SEED, min_value=0, max_value=2**31 - 1)
    backend = forms.ChoiceField(initial="local")
    instance_type = forms.ChoiceField(label="Instance type")
    instance_count = forms.IntegerField(initial=1, min_value=1)
    # The service owns the limit; the form states it in the unit the user types.
    max_runtime_minutes = forms.IntegerField(initial=60, min_value=1, label="Max runtime (minutes)")
    model_name = forms.SlugField(
        required=False,
        max_length=63,
        help_text="The registered model to add the version to; defaults to <dataset>-<recipe>.",
    )

    def __init__(
        self,
        *args: Any,
        recipes: list[Any],
        recipe: Any,
        columns: list[str],
        validations: list[tuple[str, str]],
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        limit = runs.max_runtime_seconds_limit() // 60
        self.fields["max_runtime_minutes"].max_value = limit
        self.fields["max_runtime_minutes"].validators.append(MaxValueValidator(limit))
        self.fields["max_runtime_minutes"].widget.attrs["max"] = limit
        self.fields["max_runtime_minutes"].help_text = f"At most {limit} minutes; the run is stopped then."
        self.fields["instance_count"].max_value = settings.TRAINING_MAX_INSTANCES
        self.fields["instance_count"].validators.append(MaxValueValidator(settings.TRAINING_MAX_INSTANCES))
        self.fields["instance_count"].widget.attrs["max"] = settings.TRAINING_MAX_INSTANCES
        self.fields["recipe"].choices = [(r.name, f"{r.name} — {r.description}") for r in recipes]
        self.fields["recipe"].initial = recipe.name
        self.fields["target"].choices = [(c, c) for c in columns]
        self.fields["target"].initial = "target" if "target" in columns else (columns[-1] if columns else None)
        self.fields["validation"].choices = [("", "— none —"), *validations]
        self.fields["instance_type"].choices = [("local", "local")] + [(t, t) for t in runs.sagemaker_instance_types()]
        backends = runs.training_backends()
        self.backend_labels = {b.name: b.label for b in backends}
        self.unavailable_backends = {b.name: b.reason for b in backends if not b.available}
        self.unavailable_messages = {b.name: b.unavailable_message for b in backends if not b.available}
        self.fields["backend"].choices = [(b.name, b.label) for b in backends]
        self.fields["backend"].widget = SelectWithUnavailable(
            choices=self.fields["backend"].choices, unavailable=self.unavailable_backends
        )
        if self.unavailable_backends:
            self.fields["backend"].help_text = " ".join(f"{message}." for message in self.unavailable_messages.values())
        self.hyperparameter_names = []
        for parameter in recipe.parameters:
            if parameter.name in ("target", "seed"):
                continue
            self.fields[f"hp_{parameter.name}"] = parameter_field(parameter, columns=columns)
            self.hyperparameter_names.append(parameter.name)

    def clean_backend(self) -> str:
        backend = self.cleaned_data["backend"]
        if backend in self.unavailable_backends:
            raise forms.ValidationError(self.unavailable_messages[backend])
        return backend

    def hyperparameters(self) -> dict[str, Any]:
        """Only what the user typed; blanks take the recipe's defaults. Text is converted by the recipe's types."""
        return {
            name: self.cleaned_data[f"hp_{name}"]
            for name in self.hyperparameter_names
            if self.cleaned_data.get(f"hp_{name}") not in (None, "")
        }
