"""Keep only the listed columns, in the order given."""

from __future__ import annotations

import _contract as sm

RECIPE = {
    "name": "select_columns",
    "kind": "transform",
    "version": "1",
    "description": "Keep only the listed columns, in the order given.",
    "channels": ["input"],
    "outputs": ["output"],
    "metrics": ["rows_in", "rows_out", "columns_in", "columns_out"],
    "parameters": [
        {"name": "columns", "type": "columns", "required": True, "help": "The columns to keep, in order."},
    ],
}


def main() -> None:
    params = sm.load_hyperparameters(RECIPE)
    frame = sm.read_channel("input")
    sm.check_columns(RECIPE, params, list(frame.columns))
    sm.emit_metric("rows_in", len(frame))
    sm.emit_metric("columns_in", len(frame.columns))
    selected = frame[params["columns"]]
    out = sm.output_data_dir()
    out.mkdir(parents=True, exist_ok=True)
    selected.to_csv(out / "output.csv", index=False)
    sm.emit_metric("rows_out", len(selected))
    sm.emit_metric("columns_out", len(selected.columns))


if __name__ == "__main__":
    sm.run(main)
