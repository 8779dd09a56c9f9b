"""Split a dataset into train and test sets, optionally stratified on a column; the same seed gives the same split."""

from __future__ import annotations

import _contract as sm

RECIPE = {
    "name": "split",
    "kind": "transform",
    "version": "1",
    "description": "Split the input rows into a train and a test set (stratified on a column if given).",
    "channels": ["input"],
    "outputs": ["train", "test"],
    "metrics": ["rows_in", "rows_out", "train_rows", "test_rows"],
    "parameters": [
        {
            "name": "test_fraction",
            "type": "float",
            "default": 0.2,
            "minimum": 0.05,
            "maximum": 0.95,
            "help": "Share of the rows that go to the test set.",
        },
        {"name": "seed", "type": "int", "default": 42, "minimum": 0, "maximum": 4294967295, "help": "Shuffle seed."},
        {
            "name": "stratify_column",
            "type": "column",
            "help": "Keep this column's class proportions the same in both sets.",
        },
    ],
}


def main() -> None:
    from sklearn.model_selection import train_test_split

    params = sm.load_hyperparameters(RECIPE)
    frame = sm.read_channel("input")
    sm.check_columns(RECIPE, params, list(frame.columns))
    sm.emit_metric("rows_in", len(frame))
    column = params["stratify_column"]
    stratify = None
    if column is not None:
        stratify = frame[column]
        if stratify.isna().any():
            raise sm.RecipeFailure(f"cannot stratify on '{column}': it has missing values")
    try:
        train_index, test_index = train_test_split(
            range(len(frame)),
            test_size=params["test_fraction"],
            random_state=params["seed"],
            shuffle=True,
            stratify=stratify,
        )
    except ValueError as exc:
        raise sm.RecipeFailure(f"cannot split the {len(frame)} rows: {exc}") from exc
    out = sm.output_data_dir()
    out.mkdir(parents=True, exist_ok=True)
    # Rows keep their original order inside each set, so outputs diff cleanly against the input.
    train = frame.iloc[sorted(train_index)]
    test = frame.iloc[sorted(test_index)]
    train.to_csv(out / "train.csv", index=False)
    test.to_csv(out / "test.csv", index=False)
    sm.emit_metric("train_rows", len(train))
    sm.emit_metric("test_rows", len(test))
    sm.emit_metric("rows_out", len(train) + len(test))


if __name__ == "__main__":
    sm.run(main)
