"""The stage's figures: Fig. 1 (a panel per model), Fig. 2 (every model), Fig. 7 (rectified vs
power law on one model)."""

from __future__ import annotations

import math

import numpy as np

from synthllm.core.files import save_figure
from synthllm.stages.scaling.laws import ScalingError

FIGURES = ("fig1", "fig2", "fig7")

FIT_COLOUR, HELD_COLOUR, BASE_COLOUR, POWER_COLOUR = "tab:green", "tab:red", "0.4", "black"


def _curve(r: dict, max_tokens: float | None = None):
    c = r["curve"]
    d = np.array(c["tokens"])
    keep = d > 0 if max_tokens is None else (d > 0) & (d <= max_tokens)
    as_array = lambda xs: np.array([np.nan if x is None else x for x in xs])  # noqa: E731
    return (
        d[keep],
        np.array(c["predicted"])[keep],
        as_array(c["low"])[keep],
        as_array(c["high"])[keep],
    )


def _points(ax, a: dict, label_roles: bool = True, colour=None) -> None:
    for role, colour_role, label in (
        ("fit", FIT_COLOUR, "fit points"),
        ("held_out", HELD_COLOUR, "held-out points"),
        ("excluded", BASE_COLOUR, "excluded points"),
    ):
        pts = [p for p in a["points"] if p["role"] == role and p["tokens"] > 0]
        if pts:
            ax.scatter(
                [p["tokens"] for p in pts],
                [p["value"] for p in pts],
                zorder=3,
                s=28,
                color=colour or colour_role,
                label=label if label_roles else None,
                marker="o" if role != "held_out" else "D",
            )
    for p in a["points"]:
        if p["tokens"] == 0:  # the untrained model has no place on a log axis: a level line
            ax.axhline(
                p["value"],
                color=colour or BASE_COLOUR,
                ls="--",
                lw=0.8,
                label="untrained model (D = 0)" if label_roles else None,
            )


def _log_axes(ax) -> None:
    """Log-log axes with plain numbers on the value axis (called after plotting)."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    ax.set_xscale("log")
    ax.set_yscale("log")
    plain = FuncFormatter(lambda v, _: f"{v:.3g}")
    ax.yaxis.set_major_formatter(plain)
    low, high = ax.get_ylim()
    # within a decade the major ticks are too few to read values off: label the minor ones
    ax.yaxis.set_minor_formatter(plain if high / low < 10 else NullFormatter())
    ax.xaxis.set_minor_formatter(NullFormatter())


def _no_fit_note(ax, r: dict) -> None:
    ax.text(
        0.5,
        0.5,
        "no fit: " + "; ".join(r["flags"]),
        transform=ax.transAxes,
        ha="center",
        va="center",
        wrap=True,
        fontsize=8,
        color="tab:red",
    )


def _measured_max(a: dict) -> float:
    return max([p["tokens"] for p in a["points"]] + [1.0])


def plot_fig1(analyses: list[dict], stem, quantity: str) -> None:
    """Fig. 1: a panel per model, rectified fit with its band, fit vs held-out points."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = max(len(analyses), 1)
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.6 * rows), squeeze=False)
    for ax, a in zip(axes.flat, analyses):
        r = a["laws"]["rectified"]
        _points(ax, a)
        if r["curve"]:
            d, centre, lo, hi = _curve(r, _measured_max(a) * 1.5)
            ax.plot(d, centre, color=FIT_COLOUR, label="rectified fit")
            ax.fill_between(
                d,
                lo,
                hi,
                color=FIT_COLOUR,
                alpha=0.2,
                lw=0,
                label=f"{r['bootstrap']['confidence']:.0%} band" if r["bootstrap"] else None,
            )
            p = r["params"]
            ax.set_title(
                f"{a['model']}: beta={p['beta']:.2f}, B/D_l={p['B'] / p['D_l']:.3g}, "
                f"E={p['E']:.3g}",
                fontsize=9,
            )
        else:
            ax.set_title(a["model"], fontsize=9)
            _no_fit_note(ax, r)
        _log_axes(ax)
        ax.set_xlabel("training tokens")
        ax.set_ylabel(quantity, fontsize=8)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(analyses) :]:
        ax.axis("off")
    fig.tight_layout()
    save_figure(fig, f"{stem}.png", f"{stem}.pdf")
    plt.close(fig)


def plot_fig2(analyses: list[dict], stem, quantity: str) -> None:
    """Fig. 2: every model's rectified fit, solid over measured tokens, dotted beyond."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for i, a in enumerate(analyses):
        colour = f"C{i}"
        r = a["laws"]["rectified"]
        pts = [p for p in a["points"] if p["tokens"] > 0]
        ax.scatter(
            [p["tokens"] for p in pts],
            [p["value"] for p in pts],
            color=colour,
            s=18,
            zorder=3,
            label=f"{a['model']}" + ("" if r["curve"] else " (no fit)"),
        )
        if r["curve"]:
            d, centre, _, _ = _curve(r)
            inside = d <= _measured_max(a)
            ax.plot(d[inside], centre[inside], color=colour)
            ax.plot(d[~inside], centre[~inside], color=colour, ls=":")
    _log_axes(ax)
    ax.set_xlabel("training tokens (solid: fitted range, dotted: extrapolation)")
    ax.set_ylabel(quantity, fontsize=8)
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, f"{stem}.png", f"{stem}.pdf")
    plt.close(fig)


def plot_fig7(a: dict, stem, quantity: str) -> None:
    """Fig. 7: rectified (solid) vs power law (dotted) on one model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.2, 4.0))
    _points(ax, a)
    notes = []
    for law, style in (
        ("rectified", {"color": FIT_COLOUR, "ls": "-"}),
        ("power", {"color": POWER_COLOUR, "ls": ":"}),
    ):
        r = a["laws"].get(law)
        if r is None:
            continue
        if r["curve"]:
            d, centre, _, _ = _curve(r, _measured_max(a) * 1.5)
            ax.plot(d, centre, label=f"{law} law", **style)
        else:
            notes.append(f"{law}: no fit ({'; '.join(r['flags'])})")
    if notes:
        ax.text(
            0.5,
            0.5,
            "\n".join(notes),
            transform=ax.transAxes,
            ha="center",
            va="center",
            fontsize=8,
            color="tab:red",
            wrap=True,
        )
    _log_axes(ax)
    ax.set_title(f"{a['model']}: rectified vs power law", fontsize=9)
    ax.set_xlabel("training tokens")
    ax.set_ylabel(quantity, fontsize=8)
    ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, f"{stem}.png", f"{stem}.pdf")
    plt.close(fig)


def pick_compare_model(analyses: list[dict], wanted: str | None) -> dict | None:
    """Fig. 7's model: the configured one, else the first with both laws fitted, else the first."""
    if not analyses:
        return None
    if wanted is not None:
        for a in analyses:
            if a["model"] == wanted:
                return a
        raise ScalingError(
            f"config key scaling.compare_model: {wanted!r} is not among the "
            f"models {[a['model'] for a in analyses]}"
        )
    fitted = [a for a in analyses if all(r["curve"] for r in a["laws"].values())]
    return (fitted or analyses)[0]
