"""The Generate tab in a real browser: the guidance method radio starts at the model's default,
and switching it re-generates with the other method (reported in the notes, a different image)."""
import pytest

from backends.shapes.generator import WEIGHTS
from browser_pages import open_page

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
