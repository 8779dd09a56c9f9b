"""Every format the upload accepts trains and transforms, run for real through the local training backend."""

from __future__ import annotations

import gzip
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from workers.datasets import detect_format
from workers.recipes import get_recipe
from workers.recipes._contract import file_format, read_data_file
from workers.training import InputFile, JobSpec, JobStatus, LocalTrainingBackend

JOB_TIMEOUT = 180.0
# The names the portal gives channel files (`<slug>-v<n>-0000<suffix>`), and a content-addressed object with none.
FILES = {
    "csv": "penguins-v3-0000.csv",
    "csv.gz": "penguins-v3-0000.csv.gz",
    "parquet": "penguins-v3-0000.parquet",
    "jsonl": "penguins-v3-0000.jsonl",
    "jsonl.gz": "penguins-v3-0000.jsonl.gz",
    "no suffix": "4f1c0b9e2d",
}


def penguins(rows: int = 240) -> pd.DataFrame:
    """Data shaped like palmerpenguins: text, whole and fractional numbers, missing values, and "NA" as a value."""
    rng = np.random.default_rng(7)
    species = rng.choice(["Adelie", "Chinstrap", "Gentoo"], size=rows)
    bill = {"Adelie": 38.8, "Chinstrap": 48.8, "Gentoo": 47.5}
    flipper = {"Adelie": 190, "Chinstrap": 196, "Gentoo": 217}
    mass = [int(3700 + 1300 * (name == "Gentoo") + rng.normal(0, 300)) for name in species]
    return pd.DataFrame(
        {
            "species": species,
            "island": rng.choice(["Biscoe", "Dream", "Torgersen"], size=rows),
            "bill_length_mm": [round(bill[name] + rng.normal(0, 2.5), 1) for name in species],
            "flipper_length_mm": [int(flipper[name] + rng.normal(0, 6)) for name in species],
            "body_mass_g": [None if index % 37 == 5 else value for index, value in enumerate(mass)],
            # "NA" is a value here (the code of a sex not recorded), not a missing one.
            "sex": rng.choice(["male", "female", "NA"], size=rows),
            "year": rng.choice([2007, 2008, 2009], size=rows),
        }
    )


def write_formats(frame: pd.DataFrame, directory: Path) -> dict[str, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    rows = [
        {key: (None if value is None or value != value else value) for key, value in row.items()}
        for row in frame.astype(object).to_dict(orient="records")
    ]
    lines = "".join(json.dumps(row, default=int) + "\n" for row in rows)
    csv = frame.astype({"body_mass_g": "Int64"}).to_csv(index=False)
    paths = {kind: directory / name for kind, name in FILES.items()}
    paths["csv"].write_text(csv)
    paths["csv.gz"].write_bytes(gzip.compress(csv.encode()))
    frame.astype({"body_mass_g": "Int64"}).to_parquet(paths["parquet"], index=False)
    paths["jsonl"].write_text(lines)
    paths["jsonl.gz"].write_bytes(gzip.compress(lines.encode()))
    paths["no suffix"].write_bytes(gzip.compress(lines.encode()))
    return paths


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, JobStatus], pd.DataFrame]]:
    base = tmp_path_factory.mktemp("formats")
    frame = penguins()
    paths = write_formats(frame, base / "data")
    backend = LocalTrainingBackend(base / "jobs")
    jobs: list[str] = []
    for number, (kind, path) in enumerate(paths.items()):
        for job, recipe, channel, hyperparameters in (
            (f"train-{number}", "logistic_regression", "train", {"target": "species", "cv_folds": 0, "seed": 1}),
            (f"select-{number}", "select_columns", "input", {"columns": "species,sex,body_mass_g"}),
        ):
            spec = JobSpec(
                run_id=f"{job} ({kind})",
                recipe=get_recipe(recipe),
                hyperparameters=hyperparameters,
                inputs=[InputFile(channel, path, path.name)],
                work_dir=backend.root / job,
            )
            jobs.append(backend.start(spec))
    deadline = time.monotonic() + JOB_TIMEOUT
    while not all(backend.describe(job).finished for job in jobs):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)
    statuses = {job: backend.describe(job) for job in jobs}
    yield backend.root, statuses, frame


def card(jobs: Path, job: str) -> dict[str, Any]:
    return json.loads((jobs / job / "model" / "model.json").read_text())


def test_each_format_is_recognised_as_the_upload_recognises_it(tmp_path: Path) -> None:
    paths = write_formats(penguins(20), tmp_path)
    for kind, path in paths.items():
        found, compressed = file_format(path)
        assert found == detect_format(path.name, path.read_bytes()[:4096]), kind
        assert compressed == kind.endswith(".gz") or (kind == "no suffix" and compressed)
    assert [file_format(path)[0] for path in paths.values()] == ["csv", "csv", "parquet", "jsonl", "jsonl", "jsonl"]


def test_every_format_trains_the_same_model(runs: tuple[Path, dict[str, JobStatus], pd.DataFrame]) -> None:
    jobs, statuses, _ = runs
    cards = {}
    for number, kind in enumerate(FILES):
        status = statuses[f"train-{number}"]
        assert status.state == "succeeded", (kind, status.message)
        cards[kind] = card(jobs, f"train-{number}")
    first = cards["csv"]
    assert first["metrics"]["accuracy"] > 0.8
    assert first["feature_types"] == {
        "island": "categorical",
        "bill_length_mm": "numeric",
        "flipper_length_mm": "numeric",
        "body_mass_g": "numeric",
        "sex": "categorical",
        "year": "numeric",
    }
    for kind, found in cards.items():
        assert found["features"] == first["features"], kind
        assert found["feature_types"] == first["feature_types"], kind
        assert found["metrics"] == pytest.approx(first["metrics"], rel=1e-9), kind


def test_every_format_transforms_and_keeps_na_as_a_value(runs: tuple[Path, dict[str, JobStatus], pd.DataFrame]) -> None:
    jobs, statuses, frame = runs
    for number, kind in enumerate(FILES):
        status = statuses[f"select-{number}"]
        assert status.state == "succeeded", (kind, status.message)
        output = (jobs / f"select-{number}" / "output" / "data" / "output.csv").read_text().splitlines()
        assert output[0] == "species,sex,body_mass_g", kind
        sexes = [line.split(",")[1] for line in output[1:]]
        assert sexes == frame["sex"].tolist(), kind  # "NA" stays "NA", it is not turned into a missing value
        masses = [line.split(",")[2] for line in output[1:]]
        assert masses.count("") == frame["body_mass_g"].isna().sum() == 7, kind


def test_only_empty_csv_fields_are_missing_and_nan_among_numbers_is_not_a_number(tmp_path: Path) -> None:
    path = tmp_path / "codes.csv"
    path.write_text("country,score,name\nNA,1.5,Nan\nNO,nan,NaN\nNA,2,x\nNone,,y\n")
    frame = read_data_file(path)
    assert frame["country"].tolist() == ["NA", "NO", "NA", "None"]  # Namibia stays
    assert pd.api.types.is_float_dtype(frame["score"]) and frame["score"].isna().tolist() == [False, True, False, True]
    assert frame["name"].tolist() == ["Nan", "NaN", "x", "y"]  # text stays text
