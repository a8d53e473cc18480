"""Figures with matplotlib, for the main job (`losses.png`, `evaluation.png`) and the guides.

Every function builds a `matplotlib.figure.Figure` directly (no `pyplot`, so no display and
no global state: PNGs are drawn by the Agg canvas), returns it, and saves it when given a
`path`.
"""

import numpy as np
from matplotlib import ticker
from matplotlib.figure import Figure

_DPI = 100

# The validation metrics of `ValidationEvaluation`, in the order they are drawn.
VALIDATION_NAMES = {
    "val_colour": "zero-shot colour accuracy",
    "val_shape": "zero-shot shape accuracy",
    "val_t2i_r1": "text→image recall@1",
    "val_box_iou": "LocCa referring box IoU",
}


def smooth(values, span=None):
    """A bias-corrected exponential moving average of `values` (as TensorBoard's smoothing).

    `span` (in steps; default: 1/50 of the curve, at least 1) sets the decay 1 − 1/span;
    NaN values are skipped and stay NaN.

    Example:
    >>> smooth([1.0, 1.0, 4.0, 4.0], span=2).round(3).tolist()
    [1.0, 1.0, 2.714, 3.4]
    """
    values = np.asarray(values, "float64")
    span = max(1.0, len(values) / 50 if span is None else float(span))
    decay, mean, weight = 1 - 1 / span, 0.0, 0.0
    out = np.full(len(values), np.nan)
    for i, value in enumerate(values):
        if np.isnan(value):
            continue
        mean, weight = decay * mean + (1 - decay) * value, decay * weight + (1 - decay)
        out[i] = mean / weight
    return out


def _wants_log_scale(curves):
    """Log scale when every drawn value is positive and they span more than a decade."""
    values = np.concatenate([np.asarray(v, "float64").ravel() for v in curves] or [[]])
    values = values[np.isfinite(values)]
    return bool(values.size) and values.min() > 0 and values.max() / values.min() > 10


def _mark_switch_on(ax, step, label):
    ax.axvline(step, color="0.3", linestyle="--", linewidth=1)
    ax.annotate(f"{label} {step:g}", xy=(step, 1), xycoords=("data", "axes fraction"),
                xytext=(-4, -4), textcoords="offset points", ha="right", va="top",
                fontsize=8, color="0.3")


def _save(figure, path):
    if path is not None:
        figure.savefig(path, dpi=_DPI)
    return figure


def plot_losses(log, path=None, switch_on_step=None, switch_on_label="terms on after step",
                log_scale=None, size=(10, 5.5)):
    """The loss terms over the steps: each step's value faint, `smooth`ed on top.

    Args:
        log: dict of columns, `step` and one list per term (`StepLog.read`'s).
        path: PNG file to write, or None.
        switch_on_step: the number of steps after which terms are switched on (a vertical
            line, labelled `switch_on_label` and the step).
        log_scale: None picks a log y axis when the values span more than a decade. A term
            that is 0 (switched off) is not drawn there.
        size: (width, height) in inches, at 100 dpi.

    Example:
    >>> figure = plot_losses({"step": [1, 2, 3, 4], "loss": [9.0, 4.0, 2.0, 1.5],
    ...                       "aux_loss": [0.0, 0.0, 0.5, 0.4]}, switch_on_step=3)
    >>> ax = figure.axes[0]
    >>> ax.get_xlabel(), ax.get_ylabel(), ax.get_yscale()
    ('step', 'loss (log scale)', 'log')
    """
    steps = np.asarray(log["step"], "float64")
    terms = {k: np.asarray(v, "float64") for k, v in log.items() if k != "step"}
    if log_scale is None:
        log_scale = _wants_log_scale([v[v > 0] for v in terms.values()])
    figure = Figure(figsize=size, layout="constrained")
    ax = figure.add_subplot()
    for i, (name, values) in enumerate(terms.items()):
        if log_scale:
            values = np.where(values > 0, values, np.nan)
        colour = "black" if name == "loss" else f"C{i}"
        ax.plot(steps, values, color=colour, alpha=0.2, linewidth=0.8)
        # Smoothed apart on each side of the switch, so that the jump stays a jump.
        after = steps > (switch_on_step if switch_on_step is not None else np.inf)
        span = len(values) / 50
        smoothed = np.concatenate([smooth(values[~after], span), smooth(values[after], span)])
        ax.plot(steps, smoothed, color=colour, linewidth=1.8,
                label="total loss" if name == "loss" else name.replace("_", " "))
    if log_scale:  # ticks at 1, 2, 5 × 10^k, written as plain numbers
        ax.set_yscale("log")
        ax.yaxis.set_major_locator(ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(ticker.StrMethodFormatter("{x:g}"))
        ax.yaxis.set_minor_formatter(ticker.NullFormatter())
    if switch_on_step is not None:
        _mark_switch_on(ax, switch_on_step, switch_on_label)
    ax.set_xlabel("step")
    ax.set_ylabel("loss (log scale)" if log_scale else "loss")
    ax.set_title("Training loss terms (faint: each step; bold: smoothed)")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=9)
    return _save(figure, path)


def plot_validation(log, path=None, switch_on_step=None, switch_on_label="terms on after step",
                    title="Validation during training", size=(8, 4.5)):
    """The per-epoch validation metrics (`ValidationEvaluation.read`'s columns) over the steps.

    Every metric in `VALIDATION_NAMES` that `log` holds is one line with a marker per
    evaluation, on a shared 0..1 axis.

    Example:
    >>> figure = plot_validation({"epoch": [1, 2], "step": [10, 20], "val_colour": [0.4, 0.7],
    ...                           "val_shape": [0.2, 0.3]})
    >>> ax = figure.axes[0]
    >>> ax.get_xlabel(), [line.get_label() for line in ax.get_lines()]
    ('step', ['zero-shot colour accuracy', 'zero-shot shape accuracy'])
    """
    steps = np.asarray(log["step"], "float64")
    figure = Figure(figsize=size, layout="constrained")
    ax = figure.add_subplot()
    for key, name in VALIDATION_NAMES.items():
        if key in log:
            ax.plot(steps, np.asarray(log[key], "float64"), marker="o", markersize=4,
                    label=name)
    if switch_on_step is not None:
        _mark_switch_on(ax, switch_on_step, switch_on_label)
    ax.set_xlim(0, max(steps.max(initial=1), switch_on_step or 0) * 1.02)
    ax.set_ylim(0, 1)
    ax.set_xlabel("step")
    ax.set_ylabel("accuracy / recall / IoU")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=9)
    return _save(figure, path)


def plot_curves(curves, path=None, width=640, height=160, xlabel="step"):
    """One panel per named curve (a dict name → sequence of numbers), stacked, `width` ×
    `height` pixels each; the name is the panel's title, the x axis counts from 0.

    Example:
    >>> import tempfile, os
    >>> from PIL import Image
    >>> path = os.path.join(tempfile.mkdtemp(), "curves.png")
    >>> figure = plot_curves({"loss": [3.0, 2.0, 1.5], "accuracy": [0.1, 0.5, 0.9]}, path)
    >>> Image.open(path).size, figure.axes[1].get_xlabel()
    ((640, 320), 'step')
    """
    figure = Figure(figsize=(width / _DPI, height * len(curves) / _DPI), layout="constrained")
    axes = figure.subplots(len(curves), 1, squeeze=False)[:, 0]
    for ax, (name, values) in zip(axes, curves.items()):
        values = np.asarray(values, "float64")
        ax.plot(np.arange(len(values)), values, color="C0", linewidth=1.5,
                marker="o" if len(values) <= 20 else None, markersize=3)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel(xlabel, fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(True, alpha=0.3)
    return _save(figure, path)
