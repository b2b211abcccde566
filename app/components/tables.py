"""Tables (gr.Dataframe) that show their real column names before anything fills them.

A gr.Dataframe created without a value, or sent None or a DataFrame without columns, shows
Gradio's placeholder headers "1 | 2 | 3". Every table starts with, and every handler that has
nothing to show returns, an empty DataFrame with the columns its handler produces.
"""
from __future__ import annotations


def empty_table(columns):
    """An empty pandas DataFrame with these column names, each once, in order (a gr.Dataframe shows
    them as its headers)."""
    import pandas as pd

    return pd.DataFrame(columns=list(dict.fromkeys(str(c) for c in columns)))

