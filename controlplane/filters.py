"""How every list is filtered, on its page and in the API: one django-filter FilterSet per list, applied by
`apply_filters` in its selector. A bad value is a ValidationError naming each bad filter, which the page shows beside
the field (HTTP 400, nothing listed) and the API answers as HTTP 400 with field errors.

The filters lists share live here: a project by slug and an environment by name (refused when there is none, in the
same words as the approval list's), a choice that names its choices, and `since`/`until` dates
(DateRangeFilterSet). Pages read them through `filtered_list`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any
from urllib.parse import urlencode

import django_filters
from django import forms
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.utils import timezone

MAX_ID = 2**63 - 1


def filter_values(filterset_class: type[django_filters.FilterSet], data: Mapping[str, Any] | None) -> dict[str, str]:
    """The filter parameters as typed (stripped), for pages that echo them back and build page links."""
    return {name: str((data or {}).get(name, "")).strip() for name in filterset_class.base_filters}


@dataclass(frozen=True)
class _Viewer:
    """What a FilterSet's `request` is to its filters here: whose choices they are (see ExistingFilter `scoped`)."""

    user: Any


def apply_filters(
    filterset_class: type[django_filters.FilterSet],
    data: Mapping[str, Any] | None,
    queryset: QuerySet[Any],
    *,
    user: Any = None,
) -> QuerySet[Any]:
    """`queryset` narrowed by the filter parameters in `data`; a ValidationError names each bad parameter. With
    `user`, a filter naming a project or service refuses one the user may not see exactly as one that does not
    exist, so a filter cannot tell an outsider that a restricted project's object is there."""
    values = {name: value for name, value in filter_values(filterset_class, data).items() if value}
    filterset = filterset_class(values, queryset=queryset, request=_Viewer(user) if user is not None else None)
    if not filterset.is_valid():
        raise ValidationError(filterset.errors.as_data())
    return filterset.qs


def _one_of(values: list[str]) -> str:
    return values[0] if len(values) == 1 else ", ".join(values[:-1]) + " or " + values[-1]


class ListFilterForm(forms.Form):
    """The form of every list's FilterSet (its fields come from the filters): `until` may not be before `since`."""

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if data.get("since") and data.get("until") and data["since"] > data["until"]:
            self.add_error("until", "expected a date on or after 'since'")
        return data


class _NamedChoiceField(forms.ChoiceField):
    def validate(self, value: Any) -> None:
        try:
            super().validate(value)
        except ValidationError:
            choices = [str(key) for key, _ in self.choices if key != ""]
            raise ValidationError(f"expected {_one_of(choices)}, got {value!r}", code="invalid_choice") from None


class ChoiceFilter(django_filters.ChoiceFilter):
    """A choice whose refusal names the choices: "expected queued, running or succeeded, got 'finished'"."""

    field_class = _NamedChoiceField


class _ExistingField(forms.ModelChoiceField):
    """One row named by a unique field; anything else is "there is no <noun> 'x'" (with the names there are, when
    `list_known`)."""

    def __init__(self, *args: Any, noun: str, list_known: bool, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.noun, self.list_known = noun, list_known

    def to_python(self, value: Any) -> Any:
        if value in self.empty_values:
            return None
        key = self.to_field_name or "pk"
        if key == "pk" and not (str(value).isascii() and str(value).isdigit() and 0 < int(value) <= MAX_ID):
            raise ValidationError(f"expected a {self.noun} id, got {value!r}", code="invalid_choice")
        found = self.queryset.filter(**{key: value}).first() if len(str(value)) <= 200 else None
        if found is None:
            message = f"there is no {self.noun} {value!r}"
            if self.list_known:
                known = ", ".join(str(v) for v in self.queryset.values_list(key, flat=True)[:20])
                message += f" ({self.noun}s: {known or 'none yet'})"
            raise ValidationError(message, code="invalid_choice")
        return found


class ExistingFilter(django_filters.ModelChoiceFilter):
    """A filter naming one existing row: `ExistingFilter(field_name="project", queryset=Project.objects.all(),
    to_field_name="slug", noun="project")`."""

    field_class = _ExistingField

    def __init__(self, *args: Any, noun: str, list_known: bool = False, scoped: bool = False, **kwargs: Any) -> None:
        """`scoped`: the rows to choose from are those the filterset's user may see (apply_filters `user=`;
        `access.visible_projects`, `access.scope`); without a user, all of them."""
        kwargs.setdefault("label", noun.capitalize())
        if scoped:
            rows = kwargs["queryset"]

            def visible(request: Any) -> QuerySet[Any]:
                from controlplane import access
                from controlplane.models import Project

                user = getattr(request, "user", None)
                if user is None:
                    return rows
                return access.visible_projects(user) if rows.model is Project else access.scope(rows, user)

            kwargs["queryset"] = visible
        super().__init__(*args, noun=noun, list_known=list_known, **kwargs)


def project_filter(field_name: str) -> ExistingFilter:
    """A project by its slug, through `field_name` (e.g. "registered_model__project")."""
    from controlplane.models import Project

    return ExistingFilter(
        field_name=field_name,
        queryset=Project.objects.all(),
        to_field_name="slug",
        noun="project",
        label="Project",
        scoped=True,
    )


def environment_filter(field_name: str) -> ExistingFilter:
    """An environment by its name, refused naming the environments there are."""
    from deployments.models import Environment

    return ExistingFilter(
        field_name=field_name,
        queryset=Environment.objects.all(),
        to_field_name="name",
        noun="environment",
        list_known=True,
        label="Environment",
    )


def _day_start(value: date) -> datetime:
    return timezone.make_aware(datetime.combine(value, time.min))


class DateRangeFilterSet(django_filters.FilterSet):
    """A list's FilterSet with `since` and `until`: whole days (both included) of `date_field`. Its subclasses'
    Meta names `form = ListFilterForm`, which refuses an `until` before `since`."""

    date_field = "created_at"
    # Labelled here: a filter with a `method` has no model field for django-filter to take a label from.
    since = django_filters.DateFilter(
        method="filter_since", label="Since", widget=forms.DateInput(attrs={"type": "date"})
    )
    until = django_filters.DateFilter(
        method="filter_until", label="Until", widget=forms.DateInput(attrs={"type": "date"})
    )

    def filter_since(self, queryset: QuerySet[Any], name: str, value: date) -> QuerySet[Any]:
        return queryset.filter(**{f"{self.date_field}__gte": _day_start(value)})

    def filter_until(self, queryset: QuerySet[Any], name: str, value: date) -> QuerySet[Any]:
        # The whole day named, up to midnight after it.
        return queryset.filter(**{f"{self.date_field}__lt": _day_start(value + timedelta(days=1))})


@dataclass
class FilteredList:
    """What a list page shows: the filters as typed, each bad one's messages, the rows (none while any filter is
    bad) and the query string that keeps the filters on its page links."""

    values: dict[str, str]
    errors: dict[str, list[str]]
    rows: Any
    query: str


def filtered_list(
    data: Mapping[str, Any],
    filterset_class: type[django_filters.FilterSet],
    select: Callable[[dict[str, str]], Any],
) -> FilteredList:
    """`select(filters)` (a selector that applies `filterset_class`) for the page's query parameters `data`."""
    values = filter_values(filterset_class, data)
    try:
        rows, errors = select(values), {}
    except ValidationError as exc:
        rows, errors = [], exc.message_dict
    return FilteredList(values, errors, rows, urlencode({k: v for k, v in values.items() if v}))
