"""Tables as the book shows them: words for column names, the precision a number carries, one style.

:func:`cells` turns a results table into the strings a reader sees: only the named columns, under
their reader's names, no index, each number in one of :data:`FORMATS` (FID and other measures to three
significant digits, SSIM to three decimals, sizes with their unit, percentages and signed changes in one style),
a mean with its interval as 'mean [low, high]' where the table has the bounds ('<column> low' or
'<column>_low'), and '–' for a value that does not apply. :func:`markdown` writes the same as a
Markdown table, which a chapter glues into a numbered MyST ``{table}`` (``{glue:md}`` with
``:format: myst``): the page then shows a captioned, numbered table that wraps inside the text column
instead of a notebook's wide HTML output. The unrounded numbers stay in the chapter's CSV files.
"""
import math

import pandas as pd

from .errors import InputError
from .intervals import formatted

NOT_APPLICABLE = "–"


def decimals_for(value: float, digits: int = 3) -> int:
    """Decimals that show ``value`` to ``digits`` significant digits (none beyond the units): 26.24 -> 1."""
    if value == 0 or not math.isfinite(value):
        return digits - 1
    return max(0, digits - 1 - math.floor(math.log10(abs(value))))


def with_unit(value: float) -> str:
    """A count with its unit, to three significant digits: 35_716_000 -> '35.7 M', 6.1e9 -> '6.1 G'."""
    for scale, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:.3g} {unit}"
    return f"{value:.3g}"


FORMATS = {
    "text": str,
    "significant": lambda value: f"{value:.{decimals_for(value)}f}",  # three significant digits: 26.2, 198, 0.0409
    "fid": lambda value: f"{value:.{decimals_for(value)}f}",  # the same, for FID and IS: 26.2, 198, 7.96
    "ssim": lambda value: f"{value:.3f}",
    "ratio": lambda value: f"{value:.2f}",  # a time or size ratio: 0.64
    "share": lambda value: f"{value:.1%}",  # a share of the dense model: 53.8%
    "change": lambda value: f"{round(value, 3) or 0.0:+.1%}",  # a signed change: -56.4%, +1.2%, +0.0% (never -0.0%)
    "count": lambda value: with_unit(float(value)),  # #Params or MACs as counted: 35.7 M, 6.1 G
    "millions": lambda value: f"{value:.3g} M",  # #Params or MACs already in millions (the paper's tables)
    "billions": lambda value: f"{value:.3g} G",
    "integer": lambda value: f"{value:,.0f}",  # steps, timesteps, channels: 1,500
    "seconds": lambda value: f"{value:.1f} s",
    "minutes": lambda value: f"{value:.1f} min",
}


def bounds(frame, column: str):
    """The interval columns of ``column`` in ``frame`` ('<column> low' or '<column>_low'), or None; of a row, its
    two bounds."""
    for low, high in ((f"{column} low", f"{column} high"), (f"{column}_low", f"{column}_high")):
        if low in frame and high in frame:
            return frame[low], frame[high]
    return None


def cell(value, kind: str, low=math.nan, high=math.nan) -> str:
    """One value as a reader sees it: formatted by ``kind``, with its interval when it has one."""
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return NOT_APPLICABLE
    if kind == "text" or isinstance(value, str):
        return str(value)
    if pd.isna(low) or pd.isna(high):
        return FORMATS[kind](value)
    if kind in ("significant", "fid", "ssim", "ratio"):  # the bounds at the mean's precision
        spec = f".{decimals_for(value)}f" if kind in ("significant", "fid") else ".3f" if kind == "ssim" else ".2f"
        return formatted({"value": value, "low": low, "high": high}, spec)
    return f"{FORMATS[kind](value)} [{FORMATS[kind](low)}, {FORMATS[kind](high)}]"


def of_row(row, column: str, kind: str) -> str:
    """``column`` of one table row (or a run's metrics) as :func:`cell` shows it, with its interval where the row has
    its bounds or the run its '<column>_interval' pair."""
    low, high = row[f"{column}_interval"] if f"{column}_interval" in row else bounds(row, column) or (math.nan, math.nan)
    return cell(row[column], kind, low, high)


def with_bounds(frame: pd.DataFrame, columns: list) -> pd.DataFrame:
    """``frame`` with '<column>_low' and '<column>_high' for each of ``columns`` from the runs' '<column>_interval'
    pairs (:func:`experiments.measure`); NaN (no interval shown) where a run has none."""
    frame = frame.copy()
    for column in columns:
        pairs = frame[f"{column}_interval"] if f"{column}_interval" in frame else [None] * len(frame)
        bounds_of = [pair if isinstance(pair, (list, tuple)) else (math.nan, math.nan) for pair in pairs]
        frame[f"{column}_low"], frame[f"{column}_high"] = [b[0] for b in bounds_of], [b[1] for b in bounds_of]
    return frame


def cells(frame: pd.DataFrame, columns: dict) -> pd.DataFrame:
    """``frame``'s ``columns`` ({column: (reader's name, kind of :data:`FORMATS`)}) as strings, in that order."""
    missing = [column for column in columns if column not in frame]
    unknown = {kind for _, kind in columns.values()} - set(FORMATS)
    if missing or unknown:
        raise InputError(f"no column {missing} in the table" if missing
                         else f"unknown format {sorted(unknown)}: one of {', '.join(FORMATS)}")
    shown = {}
    for column, (name, kind) in columns.items():
        lows, highs = bounds(frame, column) or ([math.nan] * len(frame),) * 2
        shown[name] = [cell(v, kind, lo, hi) for v, lo, hi in zip(frame[column], lows, highs)]
    return pd.DataFrame(shown)


def markdown(frame: pd.DataFrame, columns: dict):
    """:func:`cells` as a Markdown table (text columns left-aligned, numbers right-aligned): an IPython ``Markdown``
    object, which JupyterLab shows and myst-nb glues (IPython comes with the notebooks' kernel, the [book] extra)."""
    from IPython.display import Markdown

    shown = cells(frame, columns)
    align = [":---" if kind == "text" else "---:" for _, kind in columns.values()]
    row = lambda texts: "| " + " | ".join(str(text).replace("|", "\\|") for text in texts) + " |"  # noqa: E731
    lines = [row(shown.columns), "| " + " | ".join(align) + " |", *map(row, shown.itertuples(index=False))]
    return Markdown("\n".join(lines))
