"""Plot functions, one module per notebook area: data in, matplotlib Figure out; `show_in` shows figures in a widget."""

import base64
import io

import matplotlib.pyplot as plt


def show_in(out, figures, notes=()) -> None:
    """Show `notes` (lines) then `figures` in the ipywidgets Output `out` only, replacing what it showed, and close
    the figures (a figure made in a widget callback and left open is drawn a second time, below the Output).

    The outputs are set as the widget's state (each figure as a PNG, drawn as the inline backend draws it) rather
    than captured with ``with out:``: under papermill/nbclient that capture path hangs now and then (about 1 run in
    5 measured here, jupyter/nbclient#312); setting the state never did in 14 runs."""
    items = [{"output_type": "stream", "name": "stdout", "text": f"{note}\n"} for note in notes]
    for fig in figures:
        png = io.BytesIO()
        fig.savefig(png, format="png", bbox_inches="tight")
        items.append({"output_type": "display_data", "metadata": {},
                      "data": {"image/png": base64.b64encode(png.getvalue()).decode("ascii"), "text/plain": repr(fig)}})
        plt.close(fig)
    out.outputs = tuple(items)
