"""Plot functions, one module per notebook area: data in, matplotlib Figure out; `show_in` shows figures in a widget."""

import matplotlib.pyplot as plt


def show_in(out, figures, notes=()) -> None:
    """Show `notes` (lines) then `figures` in the ipywidgets Output `out` only (replacing what it showed), then close
    the figures: a figure made in a widget callback and left open is drawn a second time, below the Output."""
    from IPython.display import display

    out.clear_output(wait=True)
    with out:
        for note in notes:
            print(note)
        for fig in figures:
            display(fig)
    for fig in figures:
        plt.close(fig)
