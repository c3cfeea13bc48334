"""matplotlib, imported on demand: it is an optional dependency (requirements-viz.txt)."""

INSTALL_HINT = "pip install -r requirements-viz.txt (or: pip install matplotlib)"


class PlottingUnavailable(ImportError):
    """matplotlib is not installed; the message says how to get it."""


def pyplot():
    """matplotlib.pyplot on the file-only Agg backend, or PlottingUnavailable."""
    try:
        import matplotlib
    except ImportError:
        raise PlottingUnavailable(
            f"plots need matplotlib, which is not installed: {INSTALL_HINT}"
        ) from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def have_matplotlib():
    try:
        pyplot()
    except PlottingUnavailable:
        return False
    return True


def save_figure(fig, path):
    """Write `fig` to `path` (PNG) and free it."""
    fig.savefig(path, dpi=fig.dpi, bbox_inches="tight")
    fig.clf()
    import matplotlib.pyplot as plt

    plt.close(fig)
