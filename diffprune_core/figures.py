"""Tables and plots shared by the book's notebooks of Figures 1/4 and 5 and Tables 1, 4 and 5.

Our runs (:func:`experiments.table`) and the paper's rows (:func:`paper.paper_rows`) are put in the
same units by :func:`our_rows` and :func:`paper_rows_table`: #Params and MACs also as the share kept
of the dense model, which is comparable between the miniature and the paper while absolute sizes are
not. FID keeps its extractor in the column name ("FID (digits features)" for ours, "FID
(Inception-v3)" for the paper's) so the two scales are never mixed in one column or one axis.
:func:`beside_paper` joins them row for row and :func:`plot_beside_paper` draws the joined table,
one panel per metric and per source. :func:`teacher_loss_curve` is the teacher's L_t on Algorithm
1's batch (Figure 5, and the timestep counts of Table 5), :func:`pruned_size` the widths a ratio
leaves (Figure 4's 5%), :func:`plot_sample_rows` samples of several models side by side,
:func:`plot_build_profile` where a build of the book spent its time (the provenance chapter), and for
LD-Pruner's chapter :func:`ranking_table`, :func:`plot_operator_scores`, :func:`budget_tables`,
:func:`plot_budgets`. Every figure is drawn at most :data:`FIGURE_WIDTH` wide (:func:`fit_width`), so its
labels read at 100% in the book's text column; :func:`share_range` gives ours and the paper's panel of one
metric the same axis, and :func:`points_without_lines` draws two points as points, not as a trend.
"""
import copy
import math

import matplotlib.pyplot as plt
import pandas as pd
import torch
from torchvision.utils import make_grid

from .architectures import example_inputs
from .checkpoints import layer_widths, load_unet
from .complexity import count_macs
from .criteria import StructureImportance, timestep_losses
from .data import load_images
from .experiments import RunSpec
from .pruner import prune_unet
from .pipeline import noise_scheduler
from .results import PHASES
from .thresholds import relative_losses
from .verdicts import spoken_list

FIGURE_WIDTH = 7.5  # inches: at matplotlib's 100 dpi about the book's text column, so labels are not shrunk

METHOD_LABELS = {"pretrained": "Pretrained", "teacher": "Pretrained", "scratch": "Scratch training",
                 "random": "Random pruning", "magnitude": "Magnitude pruning", "taylor": "Taylor pruning",
                 "diff-pruning": "Diff-Pruning"}


def row_label(method: str, threshold=None) -> str:
    """The paper's name of a table row: 'Magnitude pruning', 'Diff-Pruning (T = 0.05)'."""
    label = METHOD_LABELS[method]
    return f"{label} (T = {float(threshold):g})" if method == "diff-pruning" and pd.notna(threshold) else label


def our_rows(metrics: pd.DataFrame, dense: pd.Series | None = None) -> pd.DataFrame:
    """Rows of :func:`experiments.table` in the paper's units; sizes also as the share kept of ``dense``."""
    method = metrics["method"].replace({"teacher": "pretrained"})
    threshold = pd.to_numeric(metrics["threshold"], errors="coerce").where(method == "diff-pruning")
    table = pd.DataFrame({
        "row": [row_label(m, t) for m, t in zip(method, threshold)],
        "method": method, "threshold": threshold,
        "params (M)": metrics["params"] / 1e6, "MACs (M)": metrics["macs"] / 1e6,
        "FID (digits features)": metrics["fid"], "SSIM": metrics["ssim"],
        "train steps": metrics["train_steps"], "timesteps used": metrics["timesteps_used"],
    })
    for column, name in (("inception_score", "IS (digits classifier)"), ("class_accuracy", "class accuracy")):
        if column in metrics:  # a class-conditional model's (experiments.measure)
            table.insert(table.columns.get_loc("SSIM") + 1, name, metrics[column])
    for column, name in (("fid", "FID (digits features)"), ("ssim", "SSIM"), ("timesteps_used", "timesteps used")):
        for bound in ("low", "high"):  # means over seeds (intervals.over_seeds) carry their intervals
            if f"{column}_{bound}" in metrics:
                table[f"{name} {bound}"] = metrics[f"{column}_{bound}"]
    if "seeds" in metrics:
        table["seeds"] = metrics["seeds"]
    if dense is not None:
        table.insert(5, "params kept", metrics["params"] / dense["params"])
        table.insert(6, "MACs kept", metrics["macs"] / dense["macs"])
    return table


def paper_rows_table(rows: pd.DataFrame, dense: pd.Series | None = None) -> pd.DataFrame:
    """Rows of :func:`paper.paper_rows` in the same layout as :func:`our_rows` (MACs in G, Inception FID)."""
    threshold = rows["threshold"].where(rows["method"] == "diff-pruning")
    table = pd.DataFrame({
        "row": [row_label(m, t) for m, t in zip(rows["method"], threshold)],
        "method": rows["method"], "threshold": threshold,
        "params (M)": rows["params_M"], "MACs (G)": rows["macs_G"],
        "FID (Inception-v3)": rows["fid"], "SSIM": rows["ssim"], "IS (Inception-v3)": rows["is"],
        "train steps": rows["train_steps"], "timesteps used": rows["timesteps_used"],
    })
    if dense is not None:
        table.insert(5, "params kept", rows["params_M"] / dense["params_M"])
        table.insert(6, "MACs kept", rows["macs_G"] / dense["macs_G"])
    return table.dropna(axis="columns", how="all")


def beside_paper(ours: pd.DataFrame, papers: dict, *, on: list, in_order: bool = True) -> pd.DataFrame:
    """Our rows with each paper table's matching row beside them, columns prefixed 'ours ' and '<name> '.

    Rows match on the ``on`` columns and, with ``in_order``, among rows equal there by order of
    appearance (the paper's three scratch budgets pair with ours in order); without it several of our
    rows may share one paper row. A row without a match gets empty paper columns. Repeated row labels
    are numbered: 'Scratch training (1)', 'Scratch training (2)'.
    """
    def keyed(frame):
        frame = frame.reset_index(drop=True)
        return frame.assign(_occurrence=frame.groupby(on, dropna=False).cumcount() if in_order else 0)

    keys = [*on, "_occurrence"]
    table = keyed(ours)[[*keys, "row"]]
    repeated = table["row"].duplicated(keep=False)
    table.loc[repeated, "row"] += " (" + (table[repeated].groupby("row").cumcount() + 1).astype(str) + ")"
    table = table.join(ours.reset_index(drop=True).drop(columns=["row", *on]).add_prefix("ours "))
    for name, frame in papers.items():
        values = keyed(frame).drop(columns="row").drop_duplicates(keys).set_index(keys)
        table = table.join(values.add_prefix(f"{name} "), on=keys)
    return table.drop(columns="_occurrence")


def plot_beside_paper(table: pd.DataFrame, *, sources: dict, x: str, metrics: list, kind: str = "bar",
                      xlabel: str | None = None):
    """A :func:`beside_paper` table drawn as one column of panels per source, one row of panels per metric.

    ``sources`` maps a column prefix ("ours", "CIFAR-10") to its panel title. Each metric is a tuple
    of column names, the first one a source has is drawn (e.g. ("FID (digits features)", "FID
    (Inception-v3)")); where the table has '<column> low' and '<column> high' (means over seeds) they are
drawn as error bars. ``kind`` "bar": horizontal bars labelled by the column ``x`` (the rows' shared
    labels); "line": a line over ``x``, the source's own column '<prefix> <x>' if it has one.
    """
    if kind not in ("bar", "line"):
        raise ValueError(f"kind must be 'bar' or 'line', got {kind!r}")
    height = 0.3 * len(table) + 1.0 if kind == "bar" else 2.6
    width = min(FIGURE_WIDTH, 2.4 * len(sources) + (1.6 if kind == "bar" else 0))  # labels read at 100% in the book
    figure, axes = plt.subplots(len(metrics), len(sources), squeeze=False, sharey=kind == "bar",
                                figsize=(width, height * len(metrics)))
    for column, (prefix, title) in enumerate(sources.items()):
        colour = "tab:blue" if column == 0 else "tab:gray"
        for row, candidates in enumerate(metrics):
            ax = axes[row, column]
            name = next((c for c in candidates if f"{prefix} {c}" in table and table[f"{prefix} {c}"].notna().any()),
                        None)
            if name is None:
                ax.set_title(f"{title}\n(not reported)" if row == 0 else "(not reported)", fontsize=9)
                ax.tick_params(axis="x", bottom=False, labelbottom=False)
                continue
            values = table[f"{prefix} {name}"]
            error = interval_errors(table, f"{prefix} {name}")
            if kind == "bar":
                ax.barh(range(len(table)), values, xerr=error, capsize=3, color=colour)
                ax.set_yticks(range(len(table)), table[x].astype(str))
                ax.set_ylim(len(table) - 0.5, -0.5)
            else:
                ax.errorbar(table.get(f"{prefix} {x}", table.get(x)), values, yerr=error, fmt="o-", capsize=3,
                            color=colour)
                ax.set_xlabel(xlabel or x)
            ax.set_title(f"{title}\n{name}" if row == 0 else name, fontsize=9)
            ax.tick_params(labelsize=8)
    figure.tight_layout()
    return figure


def interval_errors(table: pd.DataFrame, column: str):
    """Error bars (below, above) for ``column`` from its '<column> low' / '<column> high' columns; None if it
    has none (the paper's numbers). A row without an interval (one seed) gets no bar."""
    if f"{column} low" not in table:
        return None
    below, above = table[column] - table[f"{column} low"], table[f"{column} high"] - table[column]
    return [below.fillna(0).to_numpy(), above.fillna(0).to_numpy()]


def teacher_loss_curve(spec: RunSpec, *, timesteps: int = 1000, progress: bool = True) -> pd.DataFrame:
    """L_t and L_t / L_max (running max) of the teacher for t < ``timesteps`` on Algorithm 1's batch and noise.

    The same batch (``load_images`` draws the subset as :func:`experiments.run` does) and noise as the
    runs of ``spec``, so :func:`thresholds.timesteps_kept` on this curve is the number of timesteps a
    Diff-Pruning run at that T uses (Figure 5, Table 5).
    """
    model = load_unet(spec.teacher)
    batch = load_images(spec.data, image_size=model.config.sample_size, channels=model.config.in_channels,
                        limit=spec.prune_batch, seed=spec.seed)
    losses = timestep_losses(model, batch, noise_scheduler().alphas_cumprod, timesteps=range(timesteps),
                             seed=spec.seed, progress=progress)
    return pd.DataFrame({"t": range(timesteps), "loss": losses.numpy(), "relative": relative_losses(losses).numpy()})


def plot_relative_losses(ax, curve: pd.DataFrame, marks: dict) -> None:
    """L_t / L_max against t on a log scale, with a vertical line per ``marks`` entry (label -> t)."""
    ax.plot(curve["t"], curve["relative"], color="tab:blue", lw=1.2, label=r"$\mathcal{L}_t / \mathcal{L}_{\max}$ (teacher)")
    for (label, t), style in zip(marks.items(), ["--", ":", "-.", (0, (5, 1, 1, 1))]):
        ax.axvline(t, color="black", ls=style, lw=1, label=label)
    ax.set(xlabel="timestep $t$", ylabel=r"$\mathcal{L}_t / \mathcal{L}_{\max}$", yscale="log")
    ax.legend(fontsize=8)


def pruned_size(model, ratio: float) -> dict:
    """What channel ratio ``ratio`` leaves of ``model`` (unchanged): params, MACs, shares removed, block widths, and
    the layers it shrinks by kind (:func:`shrunk_layers`).

    Widths depend on the ratio alone (the paper's rounding, pruner.py), so magnitude scores are used.
    """
    inputs = example_inputs(model)
    pruned = prune_unet(copy.deepcopy(model), StructureImportance("magnitude"), ratio=ratio, inputs=inputs)
    before, after = count_macs(model, inputs), count_macs(pruned, inputs)
    return {"ratio": ratio, "params": after["params"], "macs": after["macs"],
            "params_removed": 1 - after["params"] / before["params"],
            "macs_removed": 1 - after["macs"] / before["macs"],
            "widths": [block.resnets[0].conv1.out_channels for block in pruned.down_blocks],
            "dense_widths": [block.resnets[0].conv1.out_channels for block in model.down_blocks],
            "shrunk": shrunk_layers(model, pruned)}


SHRUNK_KINDS = ("GroupNorm", "time embedding", "attention", "convolution", "other")


def shrunk_layers(dense, pruned) -> dict:
    """{kind: names} of the layers (:func:`checkpoints.layer_widths`) whose width differs between ``dense`` and
    ``pruned``, one of :data:`SHRUNK_KINDS`: the GroupNorms (a GroupNorm-coupled group lost channels), the time
    embedding and its projections into the resnets, the attention projections, the other convolutions."""
    before, after = layer_widths(dense), layer_widths(pruned)
    modules = dict(dense.named_modules())
    shrunk = {kind: [] for kind in SHRUNK_KINDS}
    for name in (name for name in before if before[name] != after[name]):
        kind = ("GroupNorm" if isinstance(modules[name], torch.nn.GroupNorm) else
                "time embedding" if "time_emb" in name else "attention" if ".attentions." in name else
                "convolution" if isinstance(modules[name], torch.nn.Conv2d) else "other")
        shrunk[kind].append(name)
    return shrunk


def shrunk_sentence(shrunk: dict) -> str:
    """What :func:`shrunk_layers` found, in words: 'the time embedding and its projections into the resnets (20
    layers), the attention projections (24 layers) and 6 convolutions'; 'nothing' when no layer shrank."""
    words = {"GroupNorm": "GroupNorm-coupled channel groups ({} GroupNorms)",
             "time embedding": "the time embedding and its projections into the resnets ({} layers)",
             "attention": "the attention projections ({} layers)", "convolution": "{} convolutions",
             "other": "{} other layers"}
    parts = [words[kind].format(len(shrunk[kind])) for kind in SHRUNK_KINDS if shrunk.get(kind)]
    if not parts:
        return "nothing"
    return spoken_list(parts)


def equal_macs_table(result, ratio: float) -> pd.DataFrame:
    """Chapter 9's runs (:class:`experiments.EqualMacs`) as one row per model and budget."""
    dense = result.dense

    def row(label: str, metrics: dict) -> dict:
        return {"model": label, "fine-tune steps": metrics["train_steps"], "params": metrics["params"],
                "MACs (M)": metrics["macs"] / 1e6, "MACs removed": 1 - metrics["macs"] / dense["macs"],
                "operators modified": metrics.get("operators_modified", 0),
                "s / image (CPU)": metrics["seconds_per_image"], "FID (digits features)": metrics["fid"],
                "SSIM to teacher": metrics["ssim"], "confident digits": metrics.get("confident_rate"),
                "class accuracy": metrics.get("class_accuracy")}

    rows = [row("Teacher", dense)]
    for steps in result.dp:
        rows += [row(f"Diff-Pruning (p = {ratio:g})", result.dp[steps]), row("LD-Pruner", result.ld[steps])]
    rows.append(row("LD-Pruner architecture, from scratch", result.scratch))
    return pd.DataFrame(rows).dropna(axis="columns", how="all")


def plot_latency_vs_macs(ax, latency: pd.DataFrame, title: str) -> None:
    """Latency reduction against MACs removed (:func:`experiments.latency_versus_macs`), with the diagonal."""
    for (method, group), colour in zip(latency.groupby("method"), ["tab:blue", "tab:red"]):
        ax.plot(100 * group["MACs removed"], 100 * group["latency reduction"], "o-", color=colour, label=method)
    ax.plot([0, 100], [0, 100], color="black", ls=":", lw=1, label="latency in proportion to MACs")
    top = 100 * latency[["MACs removed", "latency reduction"]].max().max() + 5
    ax.set(xlim=(0, top), ylim=(min(0, 100 * latency["latency reduction"].min() - 5), top),
           xlabel="MACs removed (%)", ylabel="sampling latency reduction (%)", title=title)
    ax.legend(fontsize=8)


def plot_sample_rows(samples: dict, captions: dict, *, n: int = 8):
    """One row of the first ``n`` samples (in [-1, 1]) per model, its caption (e.g. the SSIM) on the left."""
    figure, axes = plt.subplots(len(samples), 1, figsize=(0.75 * n + 2.2, 0.85 * len(samples)), squeeze=False)
    for ax, (label, images) in zip(axes[:, 0], samples.items()):
        grid = make_grid((images[:n].float() + 1) / 2, nrow=n, padding=1, pad_value=1.0)
        ax.imshow(grid.permute(1, 2, 0).clamp(0, 1).numpy(), cmap="gray", interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_ylabel(f"{label}\n{captions.get(label, '')}", rotation=0, ha="right", va="center", fontsize=8)
    figure.tight_layout()
    return figure


def fit_width(figure, width: float = FIGURE_WIDTH):
    """``figure`` narrowed to at most ``width`` inches (its height scaled alike), fonts kept, laid out again: it
    then shows at the text column's width without shrinking its labels."""
    w, h = figure.get_size_inches()
    if w > width:
        figure.set_size_inches(width, h * width / w)
        figure.tight_layout()
    return figure


def points_without_lines(figure, at_most: int = 2):
    """Every line of ``figure`` through ``at_most`` points or fewer drawn as its markers only ('o' where it had
    none): two points joined by a line suggest a trend the data do not show."""
    for ax in figure.axes:
        for line in ax.get_lines():
            if len(line.get_xdata()) <= at_most and line.get_linestyle() not in ("None", "none", ""):
                line.set_linestyle("none")
                if line.get_marker() in (None, "None", "none", ""):
                    line.set_marker("o")
    return figure


def share_range(axes):
    """One y-range for ``axes`` (e.g. ours and the paper's panel of the same metric): the union of their ranges,
    so a panel whose values span a tiny range is not zoomed to make it look large."""
    lows, highs = zip(*(ax.get_ylim() for ax in axes))
    for ax in axes:
        ax.set_ylim(min(lows), max(highs))
    return axes


def plot_build_profile(profile: pd.DataFrame):
    """Minutes per chapter (:func:`results.build_profile`, without its 'all' row) as stacked bars, one colour per
    phase of the runs the chapter computed and grey for the rest of its time."""
    chapters = profile[profile["chapter"] != "all"].iloc[::-1]  # the first chapter at the top
    figure, ax = plt.subplots(figsize=(8, 0.45 * len(chapters) + 1.2))
    left = pd.Series(0.0, index=chapters.index)
    for phase, colour in zip([*PHASES, "other"], ["tab:blue", "tab:orange", "tab:green", "tab:purple", "0.7"]):
        ax.barh(chapters["chapter"], chapters[phase], left=left, color=colour, label=phase.replace("_", "-"))
        left += chapters[phase]
    ax.set(xlabel="minutes", title="Where the build's time went")
    ax.legend(fontsize=8, loc="lower right")
    figure.tight_layout()
    return figure


# Chapter 9 (LD-Pruner) as a reader sees it: tables of a few columns, figures at the text column's width.
PATHS = {"down": "tab:blue", "mid": "tab:orange", "up": "tab:green"}


def operator_words(operator: str, modification: str = "") -> str:
    """A U-Net operator's name in words: 'down_blocks.3.resnets.1', 'remove' -> 'down block 3, resnet 1 (removed)';
    'mid_block.attentions.0' -> 'mid block, attention 0'."""
    parts = operator.split(".")
    words = [parts[0].replace("_blocks", " block").replace("_block", " block")]
    rest = parts[1:]
    if rest and rest[0].isdigit():
        words[0] += f" {rest.pop(0)}"
    inner = " ".join(part.rstrip("s") if not part.isdigit() else part for part in rest)
    text = ", ".join(filter(None, [words[0], inner]))
    done = {"remove": "removed", "replace": "replaced"}.get(modification, modification)
    return f"{text} ({done})" if done else text


def ranking_table(ranking: pd.DataFrame, dense_macs: float, n: int = 10) -> pd.DataFrame:
    """The first ``n`` modifications of an LD-Pruner ranking (lowest score first) for :func:`tables.markdown`:
    'operator' in words, 'score', 'macs share' (of the dense model's MACs it removes), 'applied' (yes / no)."""
    first = ranking.sort_values("rank").head(n)
    return pd.DataFrame({"operator": [operator_words(o, m) for o, m in zip(first["operator"], first["modification"])],
                         "score": first["score"].to_numpy(), "macs share": (first["macs_removed"] / dense_macs).to_numpy(),
                         "applied": ["yes" if a else "no" for a in first["applied"]]})


def plot_operator_scores(ranking: pd.DataFrame, title: str, *, width: float = FIGURE_WIDTH):
    """LD-Pruner's scores, lowest (pruned first) on top, on a log axis so that scores near zero still show as
    bars; coloured by the U-Net path, hatched where applied; the legend (only the paths drawn) below the axes,
    never over a bar."""
    ranking = ranking.sort_values("rank")
    paths = ranking["operator"].str.split("_").str[0]
    floor = 10 ** math.floor(math.log10(max(ranking["score"][ranking["score"] > 0].min(), 1e-12)) - 0.3)  # below the least
    figure, ax = plt.subplots(figsize=(width, 0.24 * len(ranking) + 1.6))
    ax.barh(range(len(ranking)), ranking["score"].clip(lower=floor) - floor, left=floor, color=paths.map(PATHS).fillna("0.6"),
            hatch=["//" if a else "" for a in ranking["applied"]], edgecolor="black", linewidth=0.4)
    ax.set_xscale("log")
    ax.set_xlim(floor, ranking["score"].max() * 1.5)
    ax.set_yticks(range(len(ranking)), [operator_words(o, m) for o, m in zip(ranking["operator"], ranking["modification"])],
                  fontsize=8)
    ax.set_ylim(len(ranking) - 0.5, -0.5)
    ax.set(xlabel="LD-Pruner score (log scale; lower = pruned first)")
    ax.set_title(title, fontsize=10)
    handles = [plt.Rectangle((0, 0), 1, 1, color=PATHS[p], label=f"{p} path") for p in PATHS if (paths == p).any()]
    if ranking["applied"].any():
        handles.append(plt.Rectangle((0, 0), 1, 1, facecolor="white", edgecolor="black", hatch="//", label="applied"))
    ax.legend(handles=handles, fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.6 / (0.24 * len(ranking) + 1.6) - 0.06),
              ncol=len(handles), frameon=False)
    figure.tight_layout()
    return figure


def budget_tables(result, ratio: float) -> tuple:
    """Chapter 9's runs (:class:`experiments.EqualMacs`) as two reader's tables: the sizes (one row per model:
    'model', 'params', 'macs', 'macs removed', 'operators') and the quality (one row per model and budget: 'model'
    with its fine-tuning steps, 'fid', 'ssim' and 'class accuracy' each with its bounds ('fid low'/'fid high')
    where the runs measured them)."""
    dense, first, final = result.dense, min(result.ld), max(result.ld)
    dp_label = f"Diff-Pruning (p = {ratio:g})"
    sizes = pd.DataFrame([{"model": label, "params": m["params"], "macs": m["macs"], "macs removed": 1 - m["macs"] / dense["macs"],
                           "operators": m.get("operators_modified", math.nan) if label == "LD-Pruner" else math.nan}
                          for label, m in (("Teacher", dense), (dp_label, result.dp[first]), ("LD-Pruner", result.ld[first]))])

    def row(label: str, m: dict) -> dict:
        values = {"model": label}
        for column in ("fid", "ssim", "class_accuracy"):
            if column in m:
                low, high = m.get(f"{column}_interval", (math.nan, math.nan))
                name = column.replace("_", " ")
                values |= {name: m[column], f"{name} low": low, f"{name} high": high}
        return values

    rows = [row("Teacher", dense)]
    for steps in sorted(result.dp):
        rows += [row(f"{dp_label}, {steps:,} steps", result.dp[steps]), row(f"LD-Pruner, {steps:,} steps", result.ld[steps])]
    rows.append(row(f"LD-Pruner's architecture from scratch, {final:,} steps", result.scratch))
    return sizes, pd.DataFrame(rows)


def run_error_bars(metrics: list, column: str):
    """Error bars (below, above) of ``column`` from runs' '<column>_interval' pairs (experiments.measure); None
    when a run has none (one set of samples)."""
    if not all(f"{column}_interval" in m for m in metrics):
        return None
    return [[m[column] - m[f"{column}_interval"][0] for m in metrics], [m[f"{column}_interval"][1] - m[column] for m in metrics]]


def plot_budgets(result, ratio: float, columns: list, *, width: float = FIGURE_WIDTH):
    """FID, SSIM (or class accuracy) against the fine-tuning budget for both methods, two panels a row at the
    text column's width, with each run's interval as error bars; markers only when there are two budgets or fewer (no line suggesting a trend), the
    teacher dotted, scratch training a grey square, the legend below the panels. The title states the MACs each
    method removed (they need not be equal)."""
    budgets = sorted(result.dp)
    labels = {"fid": "FID (digits features)", "ssim": "SSIM to teacher", "class_accuracy": "class accuracy"}
    rows = math.ceil(len(columns) / 2)
    figure, axes = plt.subplots(rows, 2, figsize=(width, 2.9 * rows + 0.9), squeeze=False)
    style = "o-" if len(budgets) > 2 else "o"
    for ax, column in zip(axes.flat, columns):
        for label, series, colour in [(f"Diff-Pruning (p = {ratio:g})", result.dp, "tab:blue"), ("LD-Pruner", result.ld, "tab:red")]:
            ax.errorbar(budgets, [series[s][column] for s in budgets], yerr=run_error_bars([series[s] for s in budgets], column),
                        fmt=style, color=colour, capsize=3, label=label)
        ax.errorbar([budgets[-1]], [result.scratch[column]], yerr=run_error_bars([result.scratch], column), fmt="s",
                    color="tab:gray", capsize=3, label="LD-Pruner's architecture, from scratch")
        ax.axhline(result.dense[column], color="black", ls=":", lw=1, label="teacher")
        ax.set(xlabel="fine-tuning steps", ylabel=labels[column])
        ax.set_xticks(budgets)
    for ax in list(axes.flat)[len(columns):]:
        ax.axis("off")
    handles, names = axes[0, 0].get_legend_handles_labels()
    figure.legend(handles, names, loc="lower center", ncol=2, fontsize=8, frameon=False)
    first = result.ld[budgets[0]]
    figure.suptitle(f"MACs removed: Diff-Pruning {1 - result.dp[budgets[0]]['macs'] / result.dense['macs']:.1%}, "
                    f"LD-Pruner {1 - first['macs'] / result.dense['macs']:.1%}", fontsize=10)
    figure.tight_layout(rect=(0, 0.9 / (2.9 * rows + 0.9), 1, 1))
    return figure
