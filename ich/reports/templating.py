"""The one jinja2 environment of the pages: templates in ``ich/reports/templates/``, autoescaped, strict.

Every page extends ``base.html`` (one skeleton, one inline stylesheet ``style.css``, the research-use note),
so a page is one self-contained, offline file. Numbers are written with the filters of
:mod:`ich.reports.formatting`; text is escaped on the way in, never by hand.
"""

from __future__ import annotations

from functools import cache

import jinja2

from ich.reports.formatting import FORMATTERS, data_uri, formatted

__all__ = ["environment", "render_page"]


@cache
def environment() -> jinja2.Environment:
    """The pages' environment: package templates, HTML autoescaping, an error on any undefined name."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("ich.reports", "templates"),
        autoescape=jinja2.select_autoescape(enabled_extensions=("html", "css"), default_for_string=True, default=True),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(FORMATTERS)
    env.filters["formatted"] = formatted
    env.filters["data_uri"] = data_uri
    return env


def render_page(template: str, **context: object) -> str:
    """Render the page ``template`` (``evaluation.html``, ``predict.html``) with ``context``.

    Raises:
        jinja2.UndefinedError: if the template uses a name the context lacks.
    """
    return environment().get_template(template).render(**context)
