"""Drop or fill missing values in some or all columns."""

from __future__ import annotations

import _contract as sm

RECIPE = {
    "name": "clean_missing",
    "kind": "transform",
    "version": "1",
    "description": (
        "Drop the rows with missing values, or fill them with the column's mean, median or most frequent value."
    ),
    "channels": ["input"],
    "outputs": ["output"],
    "metrics": ["rows_in", "rows_out", "missing_cells_in", "missing_cells_out"],
    "parameters": [
        {
            "name": "strategy",
            "type": "choice",
            "default": "drop_rows",
            "choices": ["drop_rows", "impute_mean", "impute_median", "impute_most_frequent"],
            "help": "What to do with a missing value.",
        },
        {"name": "columns", "type": "columns", "help": "The columns to clean (default: all)."},
    ],
}


def main() -> None:
    import pandas as pd

    params = sm.load_hyperparameters(RECIPE)
    frame = sm.read_channel("input")
    sm.check_columns(RECIPE, params, list(frame.columns))
    columns = params["columns"] or list(frame.columns)
    strategy = params["strategy"]
    sm.emit_metric("rows_in", len(frame))
    sm.emit_metric("missing_cells_in", int(frame[columns].isna().sum().sum()))
    if strategy == "drop_rows":
        frame = frame.dropna(subset=columns)
    else:
        for column in columns:
            values = frame[column]
            if not values.isna().any():
                continue
            if strategy in ("impute_mean", "impute_median"):
                if not pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
                    raise sm.RecipeFailure(
                        f"column '{column}' is not numeric, so {strategy} cannot fill it "
                        "(use impute_most_frequent or drop_rows, or leave it out of columns)"
                    )
                fill = values.mean() if strategy == "impute_mean" else values.median()
            else:
                modes = values.mode(dropna=True)
                fill = modes.iloc[0] if len(modes) else None
            if fill is None or pd.isna(fill):
                raise sm.RecipeFailure(f"column '{column}' has no values to fill its missing ones from")
            frame[column] = values.fillna(fill)
    out = sm.output_data_dir()
    out.mkdir(parents=True, exist_ok=True)
    frame.to_csv(out / "output.csv", index=False)
    sm.emit_metric("rows_out", len(frame))
    sm.emit_metric("missing_cells_out", int(frame[columns].isna().sum().sum()))


if __name__ == "__main__":
    sm.run(main)
