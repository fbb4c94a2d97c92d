"""The shipped demo models: a 64 px base and a 256 px upsampler trained on synthetic shapes.

They are ordinary model folders (config.json, model.safetensors, tokenizer.json) inside the
package, so they load with no network. See README.md beside this file for the model card.
This module only names the folders; it imports nothing heavy.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["DEMO_ABOUT", "DEMO_DIR", "DEMO_EXAMPLE", "DEMO_MODELS", "demo_name"]

DEMO_DIR = Path(__file__).resolve().parent
DEMO_MODELS: dict[str, Path] = {
    "demo-base": DEMO_DIR / "base",
    "demo-upsample": DEMO_DIR / "upsample",
}
# What a user of the demo should know before typing a prompt (shown by /v1/models and the UI).
DEMO_EXAMPLE = "a red circle on a blue background"
DEMO_ABOUT = (
    "A small demo trained only on synthetic pictures of one shape (circle, square, triangle or "
    "cross) in one colour (red, green, blue, yellow, white or black) on a plain background of "
    'another, e.g. "' + DEMO_EXAMPLE + '". Other words mean nothing to it.'
)


def demo_name(path: str | Path) -> str | None:
    """ "demo-base" or "demo-upsample" when `path` is that shipped folder, else None."""
    try:
        resolved = Path(path).expanduser().resolve()
    except (OSError, RuntimeError):
        return None
    return next((name for name, folder in DEMO_MODELS.items() if folder == resolved), None)
