"""The web UI in a real browser: Debian's Chromium driven by Playwright, against the real app over
HTTP on 127.0.0.1 with the small models. Screenshots are kept in tests/artifacts/ (not committed).

Playwright's own browser download is never used: the system's /usr/bin/chromium is launched
(`apt-get install chromium`); without it, or without the playwright package, these tests skip.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import running
from PIL import Image

from glide_api.config import ServiceConfig
from glide_api.pipeline.images import read_png_metadata

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = Path(__file__).parent / "artifacts"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
BLOB_URL = re.compile(r"^blob:")  # a gallery image, fetched with the API key, is ready
TIMEOUT_MS = 30_000

pytestmark = pytest.mark.skipif(
    not CHROMIUM.is_file(), reason=f"no browser at {CHROMIUM} (apt-get install chromium)"
)
sync_api = pytest.importorskip(
    "playwright.sync_api", reason="playwright is not installed (pip install playwright)"
)
expect = sync_api.expect

# Records every value the progress bar takes (the attribute, so "no value" = indeterminate = None).
RECORD_PROGRESS = """(id) => {
  window.__progress = [];
  const bar = document.getElementById(id);
  new MutationObserver(() => window.__progress.push(bar.getAttribute("value")))
    .observe(bar, {attributes: true, attributeFilter: ["value"]});
}"""


def make_app(config: ServiceConfig, pipeline=None):
    from glide_api.server import create_app

    return create_app(config, pipeline=pipeline)


@pytest.fixture(scope="module")
def ui_url(small_pipeline) -> Iterator[str]:
    # A preview with every step, so the preview image is sure to change during a short job.
    with running(
        make_app(ServiceConfig(preview_every=1, max_queue=8, data_dir="none"), small_pipeline)
    ) as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser):
    """A fresh desktop-sized page (own storage); fails the test on an uncaught script error or on
    anything the page's Content-Security-Policy refused."""
    context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on(
        "console",
        lambda m: m.type == "error" and "Content Security Policy" in m.text and errors.append(m.text),
    )
    yield page
    context.close()
    assert not errors, f"script errors or refused content in the page: {errors}"


def screenshot(page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def open_ready(page, url: str) -> None:
    page.goto(url + "/")
    expect(page.locator("body")).to_have_attribute("data-ready", "true")
    expect(page.locator("#gen-submit")).to_be_enabled()


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def download_first_image(page, card) -> tuple[str, bytes]:
    link = card.locator("a[download]").first
    expect(link).to_have_attribute("href", BLOB_URL)
    with page.expect_download() as info:
        link.click()
    download = info.value
    return download.suggested_filename, Path(download.path()).read_bytes()


def test_generate_moves_the_progress_bar_and_adds_a_downloadable_png(page, ui_url) -> None:
    open_ready(page, ui_url)
    page.fill("#gen-prompt", "a lighthouse at dusk")
    page.select_option("#gen-size", "64")
    page.fill("#gen-steps", "4")
    page.fill("#gen-upsample_steps", "3")
    page.fill("#gen-seed", "1234")
    page.evaluate(RECORD_PROGRESS, "gen-progress")
    page.click("#gen-submit")

    card = page.locator("#gallery .job-card").first
    expect(card.locator("a[download]")).to_have_attribute("href", BLOB_URL)
    expect(page.locator("#gen-status")).to_have_attribute("data-state", "done")
    values = [int(v) for v in page.evaluate("window.__progress") if v is not None]
    moving = [v for v in values if 0 < v < 1000]
    assert len(set(moving)) >= 3, f"the bar should move step by step, saw {values}"
    assert values == sorted(values) and values[-1] == 1000, values
    assert page.get_attribute("#gen-preview", "src").startswith("data:image/png;base64,")
    expect(card.locator(".job-prompt")).to_have_text("a lighthouse at dusk")
    expect(card.locator(".seed")).to_have_text("seed 1234")
    screenshot(page, "generate-desktop")

    name, data = download_first_image(page, card)
    assert name == "glide-a-lighthouse-at-dusk-1234.png"
    assert data.startswith(PNG_MAGIC)
    assert Image.open(io.BytesIO(data)).size == (64, 64)
    metadata = read_png_metadata(data)
    assert metadata["prompt"] == "a lighthouse at dusk" and metadata["seed"] == 1234

    # "Same seed" puts the seed back into the form.
    page.fill("#gen-seed", "")
    card.locator('[data-action="same-seed"]').click()
    expect(page.locator("#gen-seed")).to_have_value("1234")


def test_the_line_under_the_header_names_the_active_models_and_their_limits(
    page, ui_url, small_pipeline
) -> None:
    open_ready(page, ui_url)
    line = page.locator("#active-model")
    expect(line).to_be_visible()
    expect(line).to_contain_text(f"Model: {small_pipeline.base.name} + {small_pipeline.upsample.name}")
    sizes = ", ".join(str(s) for s in small_pipeline.sizes("text2im"))
    expect(line).to_contain_text(f"{sizes} px")
    expect(line).to_contain_text(f"up to {ServiceConfig().max_batch_size} images per job")
    expect(line).to_contain_text(f"reads the first {small_pipeline.base.config.text_ctx} tokens")


def test_the_forms_take_their_defaults_and_limits_from_v1_settings(page, small_pipeline) -> None:
    config = ServiceConfig(
        base_steps="50", upsample_steps="ddim25", max_batch_size=2, max_prompt_chars=77, max_steps=500
    )
    # Defaults no configuration changes are changed in the answer itself, on its way to the page.
    changed = {"batch_size": 2, "guidance_scale": 7.5, "upsample_temp": 0.9, "sampler": "ddim", "eta": 0.25}

    def edit_settings(route) -> None:
        response = route.fetch()
        body = response.json()
        body["defaults"].update(changed)
        route.fulfill(response=response, json=body)

    with running(make_app(config, small_pipeline)) as url:
        page.route("**/v1/settings", edit_settings)
        open_ready(page, url)
        shown = {
            "#gen-steps": "50",
            "#gen-upsample_steps": "ddim25",
            "#gen-n": "2",
            "#gen-guidance_scale": "7.5",
            "#gen-upsample_temp": "0.9",
            "#gen-sampler": "ddim",
            "#gen-eta": "0.25",
            "#inp-steps": "50",
            "#inp-upsample_steps": "ddim25",
            "#basemodel-steps": "50",
        }
        for selector, value in shown.items():
            expect(page.locator(selector)).to_have_value(value)
        expect(page.locator("#gen-eta")).to_be_enabled()  # the ddim sampler uses it
        expect(page.locator("#gen-n")).to_have_attribute("max", "2")
        expect(page.locator("#gen-prompt")).to_have_attribute("maxlength", "77")
        expect(page.locator("#basemodel-steps")).to_have_attribute("max", "500")
        page.fill("#gen-steps", "7")
        page.fill("#gen-guidance_scale", "1")
        page.click("#gen-reset")
        expect(page.locator("#gen-steps")).to_have_value("50")
        expect(page.locator("#gen-guidance_scale")).to_have_value("7.5")


def test_the_forms_take_ranges_choices_and_help_from_v1_settings(page, ui_url) -> None:
    # The answer is edited on its way to the page: values no server sends prove where the form's come from.
    edits = {
        "guidance_scale": {"maximum": 12.5, "help": "how much the prompt counts"},
        "seed": {"maximum": 999},
        "eta": {"help": "noise of the ddim steps"},
        "sampler": {"choices": ["ddim", "ancestral", "plms"]},
    }

    def edit_options(route) -> None:
        response = route.fetch()
        body = response.json()
        for option in body["options"]:
            option.update(edits.get(option["name"], {}))
        route.fulfill(response=response, json=body)

    page.route("**/v1/settings", edit_options)
    open_ready(page, ui_url)
    expect(page.locator("#gen-guidance_scale")).to_have_attribute("min", "0")
    expect(page.locator("#gen-guidance_scale")).to_have_attribute("max", "12.5")
    expect(page.locator("#inp-guidance_scale")).to_have_attribute("max", "12.5")
    expect(page.locator("#gen-seed")).to_have_attribute("max", "999")
    expect(page.locator("#gen-n")).to_have_attribute("max", str(ServiceConfig().max_batch_size))
    expect(page.locator("#gen-guidance_scale")).to_have_attribute("title", "how much the prompt counts")
    expect(page.locator("#gen-eta-hint")).to_have_text("Noise of the ddim steps.")
    expect(page.locator("#gen-steps-hint")).to_contain_text("respacing")  # the server's own help
    options = page.locator("#gen-sampler option")
    expect(options).to_have_text(["ddim", "ancestral", "plms"])

    page.fill("#gen-prompt", "out of range")
    page.fill("#gen-guidance_scale", "20")
    page.fill("#gen-seed", "1000")
    page.click("#gen-submit")
    expect(page.locator("#gen-guidance_scale-error")).to_have_text("Enter a number, 0 to 12.5.")
    expect(page.locator("#gen-seed-error")).to_have_text("Enter a whole number, 0 to 999.")
    expect(page.locator("#gen-seed")).to_be_focused()  # the first field that is wrong
    expect(page.locator("#gallery .job-card")).to_have_count(0)
    expect(page.locator("#gen-status")).to_have_attribute("data-state", "idle")


def test_the_forms_write_no_defaults_of_their_own(page, ui_url) -> None:
    def drop_defaults(route) -> None:
        response = route.fetch()
        route.fulfill(response=response, json={**response.json(), "defaults": {}})

    page.route("**/v1/settings", drop_defaults)
    open_ready(page, ui_url)
    for name in ("n", "guidance_scale", "steps", "upsample_steps", "eta", "upsample_temp"):
        expect(page.locator(f"#gen-{name}")).to_have_value("")  # empty: the server's default applies


def test_cancel_stops_a_running_job(page, ui_url) -> None:
    open_ready(page, ui_url)
    page.fill("#gen-prompt", "a very long job")
    page.select_option("#gen-size", "32")  # the base model alone
    page.fill("#gen-steps", "1000")  # tens of seconds on a CPU
    page.click("#gen-submit")
    expect(page.locator("#gen-stage")).to_contain_text("step")
    expect(page.locator("#gen-cancel")).to_be_focused()  # focus followed the button it replaced
    page.keyboard.press("Enter")
    expect(page.locator("#gen-status")).to_have_attribute("data-state", "cancelled")
    expect(page.locator("#gen-cancel")).to_be_hidden()
    expect(page.locator("#gen-submit")).to_be_enabled()
    expect(page.locator("#gallery .job-card")).to_have_count(0)


def test_inpainting_repaints_only_the_painted_area(page, ui_url) -> None:
    open_ready(page, ui_url)
    page.get_by_role("tab", name="Inpaint").click()
    blue = (40, 120, 200)
    page.set_input_files(
        "#inp-file",
        files=[
            {
                "name": "blue.png",
                "mimeType": "image/png",
                "buffer": png_bytes(Image.new("RGB", (64, 64), blue)),
            }
        ],
    )
    canvas = page.locator("#inp-mask-canvas")
    expect(canvas).to_be_visible()
    box = canvas.bounding_box()
    # A diagonal stroke through the middle; the brush is 1/8 of the picture wide.
    page.mouse.move(box["x"] + box["width"] * 0.3, box["y"] + box["height"] * 0.3)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.7, box["y"] + box["height"] * 0.7, steps=10)
    page.mouse.up()
    page.fill("#inp-prompt", "a golden star")
    page.select_option("#inp-size", "64")
    page.fill("#inp-steps", "4")
    page.fill("#inp-upsample_steps", "3")
    page.evaluate(RECORD_PROGRESS, "inp-progress")
    page.click("#inp-submit")

    card = page.locator("#gallery .job-card").first
    expect(card.locator(".badge")).to_have_text("inpaint")
    expect(page.locator("#inp-status")).to_have_attribute("data-state", "done")
    values = [int(v) for v in page.evaluate("window.__progress") if v is not None]
    assert len({v for v in values if 0 < v < 1000}) >= 3, values
    screenshot(page, "inpaint-desktop")

    name, data = download_first_image(page, card)
    assert name.startswith("glide-inpaint-a-golden-star-") and data.startswith(PNG_MAGIC)
    result = Image.open(io.BytesIO(data)).convert("RGB")
    assert result.size == (64, 64)
    kept, painted = result.getpixel((3, 60)), result.getpixel((32, 32))
    assert all(abs(a - b) <= 8 for a, b in zip(kept, blue, strict=True)), kept  # outside the stroke
    assert any(abs(a - b) > 8 for a, b in zip(painted, blue, strict=True)), painted  # on the stroke


def test_keyboard_alone_switches_views_and_makes_a_mask(page, ui_url) -> None:
    open_ready(page, ui_url)
    page.focus("#tab-generate")
    page.keyboard.press("ArrowRight")
    expect(page.locator("#tab-inpaint")).to_be_focused()
    expect(page.locator("#tab-inpaint")).to_have_attribute("aria-selected", "true")
    expect(page.locator("#panel-inpaint")).to_be_visible()
    expect(page.locator("#panel-generate")).to_be_hidden()
    page.keyboard.press("End")
    expect(page.locator("#panel-models")).to_be_visible()
    expect(page.locator("#models-table tbody tr")).to_have_count(4)  # base, upsample, two inpainting
    page.keyboard.press("Home")
    expect(page.locator("#panel-generate")).to_be_visible()

    page.get_by_role("tab", name="Inpaint").click()
    dropped = page.evaluate_handle("""async () => {
        const canvas = new OffscreenCanvas(48, 32);
        const ctx = canvas.getContext("2d");
        ctx.fillStyle = "grey";
        ctx.fillRect(0, 0, 48, 32);
        const blob = await canvas.convertToBlob({type: "image/png"});
        const file = new File([blob], "grey.png", {type: "image/png"});
        const transfer = new DataTransfer();
        transfer.items.add(file);
        return transfer;
    }""")
    page.dispatch_event("#inp-drop", "drop", {"dataTransfer": dropped})  # drag and drop
    expect(page.locator("#inp-image-info")).to_contain_text("48 × 32")
    page.get_by_role("button", name="Fill all").focus()
    page.keyboard.press("Enter")
    painted = page.evaluate("""() => {
        const c = document.getElementById("inp-mask-canvas");
        const px = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
        let n = 0; for (let i = 3; i < px.length; i += 4) n += px[i] >= 128; return n / (px.length / 4);
    }""")
    assert painted == 1.0


def test_the_phone_layout_is_one_column_without_sideways_scrolling(browser, ui_url) -> None:
    context = browser.new_context(
        viewport={"width": 390, "height": 844},
        device_scale_factor=2,
        is_mobile=True,
        has_touch=True,
        color_scheme="dark",
    )
    page = context.new_page()
    try:
        open_ready(page, ui_url)
        form = page.locator("#gen-form").bounding_box()
        run = page.locator("#panel-generate .run").bounding_box()
        assert run["y"] >= form["y"] + form["height"], "the progress panel should sit below the form"
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
        screenshot(page, "generate-phone-dark")
        page.get_by_role("tab", name="Inpaint").click()
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
        screenshot(page, "inpaint-phone-dark")
    finally:
        context.close()


def test_a_server_with_api_keys_gets_one_from_the_dialog(page, small_pipeline) -> None:
    config = ServiceConfig(api_keys=("test-key-1",), max_queue=2)
    with running(make_app(config, small_pipeline)) as url:
        page.goto(url + "/")
        dialog = page.locator("#key-dialog")
        expect(dialog).to_be_visible()
        screenshot(page, "api-key-dialog")
        page.fill("#key-input", "not-the-key")
        page.keyboard.press("Enter")
        expect(page.locator("#key-message")).to_contain_text("not valid")
        page.fill("#key-input", "test-key-1")
        page.keyboard.press("Enter")
        expect(dialog).to_be_hidden()
        expect(page.locator("#gen-submit")).to_be_enabled()
        expect(page.locator("#gen-size option")).not_to_have_count(0)


def test_missing_models_show_the_files_and_the_command_and_block_generate(page, tmp_path) -> None:
    config = ServiceConfig(
        base=str(tmp_path / "no-such-model"),
        upsample="upsample",
        base_inpaint="none",
        upsample_inpaint="none",
        offline=True,
        cache_dir=str(tmp_path / "cache"),
    )
    with running(make_app(config)) as url:
        page.goto(url + "/")
        banner = page.locator("#ready-banner")
        expect(banner).to_be_visible()
        expect(page.locator("#ready-missing-list li")).not_to_have_count(0)
        expect(page.locator("#ready-command")).to_contain_text("glide-api download")
        expect(page.locator("#ready-advice")).to_contain_text("glide-api serve --model demo")
        expect(page.locator("#gen-submit")).to_be_disabled()
        expect(page.locator("#active-model")).to_be_hidden()
        screenshot(page, "models-missing")


def test_missing_inpainting_models_leave_generate_working_and_say_what_is_missing(
    page, small_model_dirs, tmp_path
) -> None:
    config = ServiceConfig(
        base=str(small_model_dirs["small-base"]),
        upsample="none",
        offline=True,
        cache_dir=str(tmp_path / "cache"),
    )
    with running(make_app(config)) as url:
        page.goto(url + "/")
        expect(page.locator("#ready-title")).to_have_text("Inpainting cannot be loaded.")
        expect(page.locator("#ready-command")).to_contain_text(
            "glide-api download base-inpaint upsample-inpaint"
        )
        expect(page.locator("#ready-missing-list li")).to_have_count(4)
        expect(page.locator("#ready-advice")).to_be_hidden()  # the demo cannot inpaint
        expect(page.locator("#gen-submit")).to_be_enabled()
        screenshot(page, "inpainting-missing")
        page.click("#tab-inpaint")
        expect(page.locator("#inp-unavailable")).to_be_visible()


def test_the_image_to_image_tab_redraws_the_chosen_picture(page, ui_url) -> None:
    open_ready(page, ui_url)
    page.get_by_role("tab", name="Image to image").click()
    page.fill("#i2i-prompt", "a green field")
    page.click("#i2i-submit")
    expect(page.locator("#i2i-file-error")).to_have_text("Choose a picture first.")
    green = (30, 160, 60)
    picture = {
        "name": "green.png",
        "mimeType": "image/png",
        "buffer": png_bytes(Image.new("RGB", (48, 32), green)),
    }
    page.set_input_files("#i2i-file", files=[picture])
    expect(page.locator("#i2i-picture")).to_be_visible()
    page.select_option("#i2i-size", "32")
    page.fill("#i2i-steps", "4")
    page.fill("#i2i-strength", "0")  # nothing is redrawn: the picture comes back
    page.click("#i2i-submit")

    card = page.locator("#gallery .job-card").first
    expect(card.locator(".badge")).to_have_text("img2img")
    expect(page.locator("#i2i-status")).to_have_attribute("data-state", "done")
    screenshot(page, "img2img-desktop")
    name, data = download_first_image(page, card)
    assert name.startswith("glide-img2img-a-green-field-")
    metadata = read_png_metadata(data)
    assert (metadata["task"], metadata["strength"], metadata["prompt"]) == ("img2img", 0.0, "a green field")
    assert Image.open(io.BytesIO(data)).convert("RGB").getpixel((16, 16)) == green


def test_a_preset_is_one_click_and_fields_changed_after_it_win(page, ui_url) -> None:
    open_ready(page, ui_url)
    fast = page.locator('#gen-form [data-preset="fast"]')
    fast.click()
    expect(fast).to_have_attribute("aria-pressed", "true")
    expect(page.locator("#gen-steps")).to_have_value("25")
    expect(page.locator("#gen-sampler")).to_have_value("ddim")
    expect(page.locator("#gen-preset-chosen")).to_contain_text("Fast: 25 DDIM base steps")
    page.fill("#gen-prompt", "a fast fox")
    page.select_option("#gen-size", "32")
    page.fill("#gen-steps", "3")  # changed after the preset: this wins
    page.click("#gen-submit")
    card = page.locator("#gallery .job-card").first
    expect(card.locator(".job-prompt")).to_have_text("a fast fox")
    metadata = read_png_metadata(download_first_image(page, card)[1])
    assert (metadata["base_sampler"], metadata["base_respacing"]) == ("ddim", "3")
    page.click("#gen-reset")
    expect(fast).to_have_attribute("aria-pressed", "false")
    expect(page.locator("#gen-sampler")).to_have_value("ancestral")
