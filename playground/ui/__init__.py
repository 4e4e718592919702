"""Gradio user interface: one module per tab, assembled in app.py."""
