"""notebooks/text2im.ipynb runs end to end as shipped and shows its images: the demo models, and the
small reference models for its inpainting section (the demo has no inpainting twins).

The notebook is stored without outputs (clean diffs); this test executes a copy with nbclient, as
a user would run all cells, and checks the executed copy: no errors, and images among its outputs.
"""

from __future__ import annotations

import base64
import io
import json
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "text2im.ipynb"
CELL_TIMEOUT_S = 300  # per cell, generous: the whole notebook takes about a minute on 2 quiet cores


def _stored() -> dict:
    return json.loads(NOTEBOOK.read_text(encoding="utf-8"))


def test_notebook_is_stored_without_outputs_and_uses_the_demo_models_by_default() -> None:
    cells = _stored()["cells"]
    code = [c for c in cells if c["cell_type"] == "code"]
    assert code, "the notebook has code cells"
    for cell in code:
        assert cell.get("outputs") == [] and cell.get("execution_count") is None, (
            "clear the outputs before committing (CI executes the notebook itself)"
        )
    switch = "".join(code[0]["source"])
    assert "USE_OFFICIAL_WEIGHTS = False" in switch, "the first code cell is the switch, off by default"
    assert any('model="demo"' in "".join(cell["source"]) for cell in code), "the switch off loads the demo"


def test_notebook_runs_end_to_end_and_shows_images(tmp_path, monkeypatch) -> None:
    nbformat = pytest.importorskip("nbformat", reason="pip install nbformat (dev extra)")
    nbclient = pytest.importorskip("nbclient", reason="pip install nbclient (dev extra)")
    pytest.importorskip("ipykernel", reason="pip install ipykernel (dev extra): the python3 kernel")
    from PIL import Image

    monkeypatch.setenv("GLIDE_API_OFFLINE", "1")  # the demo and small models need no network; prove it
    monkeypatch.setenv("GLIDE_API_CACHE", str(tmp_path / "cache"))
    # The toy models gain little from threads, and one thread never fights other processes for the
    # cores (on a busy 2-core machine two threads ran this notebook 2-6x slower than one).
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(
        notebook,
        kernel_name="python3",
        timeout=CELL_TIMEOUT_S,
        resources={"metadata": {"path": str(NOTEBOOK.parent)}},
    )
    start = time.perf_counter()
    try:
        client.execute()  # raises CellExecutionError, naming the cell, on the first error
    finally:
        nbformat.write(notebook, tmp_path / "text2im.executed.ipynb")  # kept for a look after a failure
    elapsed = time.perf_counter() - start

    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    pngs = [
        base64.b64decode(o.data["image/png"])
        for o in outputs
        if o.output_type in ("display_data", "execute_result") and "image/png" in o.get("data", {})
    ]
    assert len(pngs) >= 4, f"expected the schedule plot and the generated images, got {len(pngs)} images"
    for png in pngs:
        with Image.open(io.BytesIO(png)) as image:
            assert image.format == "PNG" and min(image.size) >= 32
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "the same pixels" in text, "the hand-written loops reproduce GlidePipeline's images"
    assert "reads: a red circle on a blue background" in text, "the demo draws the prompt, not noise"
    assert "kept area 0.00" in text, "inpainting keeps the unmasked pixels"
    print(f"notebook executed in {elapsed:.1f} s, {len(pngs)} images")
