"""The Generate tab in a real browser: the guidance method radio starts at the model's default,
and switching it re-generates with the other method (reported in the notes, a different image)."""
import re

import pytest

from backends.shapes.generator import WEIGHTS
from browser_pages import fill_settled, open_page

pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(not WEIGHTS.exists(), reason="no Shapes generator weights in assets/ yet")]


@pytest.fixture
def page(atlas_app, browser):
    with open_page(browser, atlas_app[0], tab="Generate", ready="#gen-go") as p:
        yield p


def _image_src(page) -> str:
    page.wait_for_function("(() => { const i = document.querySelector('#gen-image img');"
                           " return i && i.complete && i.naturalWidth >= 32; })()", timeout=60_000)
    return page.get_attribute("#gen-image img", "src")


def test_guidance_method_radio_switches_the_method(page):
    from backends.generative.sd import GeneratorSpec, guidance_methods

    methods = guidance_methods(GeneratorSpec("shapes"))
    if len(methods) < 2:
        pytest.skip("the shipped generator has no guide model")
    default = {"auto": "autoguidance", "cfg": "classifier-free"}[methods[0]]
    other = {"auto": "autoguidance", "cfg": "classifier-free"}[methods[1]]
    assert page.get_by_label(default).is_checked()
    page.fill("#gen-prompt textarea, #gen-prompt input", "a large blue square in the center")
    page.click("#gen-go")
    page.wait_for_function(f"document.querySelector('#gen-notes').innerText.includes('{default} guidance')",
                           timeout=60_000)
    first = _image_src(page)
    page.get_by_label(other).check()
    page.click("#gen-go")
    page.wait_for_function(f"document.querySelector('#gen-notes').innerText.includes('{other} guidance')",
                           timeout=60_000)
    # a new image is drawn (the API test checks that the two methods give different pixels)
    page.wait_for_function("src => document.querySelector('#gen-image img').getAttribute('src') !== src", arg=first,
                           timeout=60_000)
    assert _image_src(page) != first


def test_find_failures_runs_a_token_gradient_search_from_the_page(page):
    """The "Find failures" accordion: a small token-gradient search with one backward pass reports its
    failures and their count, shows what was drawn and names the Atlas corpus they went to."""
    page.get_by_text("Find failures").click()
    fill_settled(page.get_by_label("Budget (images)"), "8")
    page.get_by_label("token-gradient").check()
    fill_settled(page.locator("#gen-failures-grad-steps input"), "1")
    assert page.get_by_label("Budget (images)").input_value() == "8"
    page.click("#gen-failures-go")
    page.wait_for_function("document.querySelector('#gen-failures-summary').innerText.includes(' images (') || "
                           "document.querySelector('.toast-body')", timeout=300_000)
    errors = page.locator(".toast-body").all_inner_texts()
    assert not errors, errors
    summary = page.inner_text("#gen-failures-summary")
    assert "in 8 images" in summary, summary
    assert "token-gradient search" in summary and "Atlas" in summary, summary
    used = re.search(r"(\d+) gradient steps?", summary)
    assert used and int(used.group(1)) <= 1, summary  # the page's limit of one backward pass
