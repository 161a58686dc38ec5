"""The papers' own numbers, typed from their tables into ``data/paper_tables.csv``: never our results.

One row per table row: source (diff-pruning, ld-pruner), table, dataset, method, threshold T,
ratio, #Params (M), MACs (G), FID, SSIM, IS, training steps and a note. Table 5's counts of
timesteps (and Table 3's 534) are in the note; :func:`paper_rows` reads them into ``timesteps_used``.
"""
import re

import pandas as pd

from .architectures import DATA_DIR
from .errors import InputError

PAPER_TABLES = DATA_DIR / "paper_tables.csv"
TIMESTEPS_NOTE = re.compile(r"(\d+) timesteps (?:used|kept)")

# The paper's U-Net shapes (architectures.paper_unet_configs) and the (table, dataset) rows that report them.
PAPER_UNET_ROWS = {
    "cifar10-32": ("1", "cifar10-32"),
    "celeba-64": ("1", "celeba-64"),
    "lsun-256": ("2", "lsun-church-256"),  # LSUN Bedroom has the same shape and the same #Params/MACs
    "imagenet-ldm-cin256-v2": ("3", "imagenet-256-ldm"),
}


def paper_tables() -> pd.DataFrame:
    table = pd.read_csv(PAPER_TABLES, dtype={"table": str, "train_steps": str, "note": str})
    found = table["note"].fillna("").str.extract(TIMESTEPS_NOTE, expand=False)
    table["timesteps_used"] = pd.to_numeric(found).astype("Int64")
    return table


def paper_rows(**filters) -> pd.DataFrame:
    """The rows where every ``column=value`` holds; a list or tuple value means any of its values.

    Numeric columns compare as numbers (``threshold=0.05`` matches "0.05" and "0.050"), others as text
    (``table=5`` matches "5"). Example: ``paper_rows(source="diff-pruning", table=5)``.
    """
    table = paper_tables()
    keep = pd.Series(True, index=table.index)
    for column, wanted in filters.items():
        if column not in table.columns:
            raise InputError(f"paper_tables.csv has no column {column!r}; choose from {', '.join(table.columns)}")
        values = list(wanted) if isinstance(wanted, (list, tuple)) else [wanted]
        if pd.api.types.is_numeric_dtype(table[column]):
            keep &= table[column].isin([float(v) for v in values])
        else:
            keep &= table[column].isin([str(v) for v in values])
    return table[keep].reset_index(drop=True)


def paper_unet_numbers(name: str) -> dict:
    """The paper's #Params (M) and MACs (G) of U-Net ``name``, dense and pruned by Diff-Pruning at ratio 0.3."""
    if name not in PAPER_UNET_ROWS:
        raise InputError(f"no paper table reports U-Net {name!r}; choose from {sorted(PAPER_UNET_ROWS)}")
    table, dataset = PAPER_UNET_ROWS[name]
    rows = paper_rows(source="diff-pruning", table=table, dataset=dataset)
    dense = rows[rows["method"] == "pretrained"].iloc[0]
    pruned = rows[rows["method"] == "diff-pruning"].iloc[0]
    return {"table": table, "dataset": dataset, "params_M": float(dense["params_M"]), "macs_G": float(dense["macs_G"]),
            "pruned_params_M": float(pruned["params_M"]), "pruned_macs_G": float(pruned["macs_G"])}
