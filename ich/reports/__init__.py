"""What a person reads: the evaluation and prediction pages (jinja2 templates), charts (Vega-Lite) and plots."""
