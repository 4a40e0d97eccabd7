"""Data Docs views share compiled templates: a step forked after `warm()` compiles none."""

from __future__ import annotations

from typing import Any

from great_expectations.render.view import DefaultJinjaIndexPageView, DefaultJinjaPageView

from churnflow.data_docs import IndexPageView, PageView, warm


def _compiles(view: Any, names: list[str]) -> int:
    """How many of `names` the view's environment compiles from source to load them."""
    env = view.env
    compiled: list[str] = []
    compile_source = env.compile

    def counting(source: Any, name: Any = None, *args: Any, **kwargs: Any) -> Any:
        compiled.append(name)
        return compile_source(source, name, *args, **kwargs)

    env.compile = counting
    for name in names:
        env.get_template(name)
    return len(compiled)


def test_views_after_warm_load_every_template_without_compiling() -> None:
    warm()
    names = PageView().env.list_templates()
    assert "page.j2" in names and "index_page.j2" in names
    assert _compiles(PageView(), names) == 0
    assert _compiles(IndexPageView(), ["index_page.j2"]) == 0
    # GX's own views, without the shared cache, compile each template again.
    assert _compiles(DefaultJinjaPageView(), ["page.j2"]) == 1
    assert _compiles(DefaultJinjaIndexPageView(), ["index_page.j2"]) == 1
