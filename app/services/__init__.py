"""What each tab does, in plain Python: no gradio imports; each service takes a
backends.registry.Backends and returns values. Tested without Gradio.

One module per tab (``app/services/<tab>.py``); the tab's layout and event wiring live in
``app/tabs/<tab>.py`` and adapt these values to Gradio (updates, progress bars, errors).
"""
