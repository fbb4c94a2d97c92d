"""`glide-api generate` and `glide-api inpaint` with the golden small models."""

from __future__ import annotations

from PIL import Image

from glide_api.cli import main
from glide_api.pipeline.images import read_png_metadata


def model_flags(dirs, *, inpaint: bool = False) -> list[str]:
    if inpaint:
        return [
            "--base-inpaint",
            str(dirs["small-base-inpaint"]),
            "--upsample-inpaint",
            str(dirs["small-upsample-inpaint"]),
            "--offline",
        ]
    return ["--base", str(dirs["small-base"]), "--upsample", str(dirs["small-upsample"]), "--offline"]


def test_generate_writes_each_image_with_its_seed_and_parameters(small_model_dirs, tmp_path, capsys) -> None:
    out = tmp_path / "corgi.png"
    status = main(
        [
            "generate",
            "a corgi in a field",
            "--seed",
            "7",
            "--batch-size",
            "2",
            "--steps",
            "3",
            "--upsample-steps",
            "2",
            "--guidance-scale",
            "4",
            "--out",
            str(out),
            "--no-progress",
            *model_flags(small_model_dirs),
        ]
    )
    assert status == 0
    printed = capsys.readouterr().out
    first, second = tmp_path / "corgi-1.png", tmp_path / "corgi-2.png"
    assert f"{first}  seed 7" in printed and f"{second}  seed 8" in printed
    assert "base 32 -> upsample 64" in printed
    assert Image.open(first).size == (64, 64)  # the upsampler's size by default
    metadata = read_png_metadata(first)
    assert metadata["prompt"] == "a corgi in a field" and metadata["seed"] == 7
    assert metadata["base_respacing"] == "3" and metadata["guidance_scale"] == 4.0


def test_generate_reproduces_an_image_from_the_same_seed(small_model_dirs, tmp_path) -> None:
    args = [
        "generate",
        "a red cube",
        "--seed",
        "5",
        "--size",
        "32",
        "--steps",
        "3",
        "--no-progress",
        *model_flags(small_model_dirs),
    ]
    assert main([*args, "--out", str(tmp_path / "a.png")]) == 0
    assert main([*args, "--out", str(tmp_path / "b.png")]) == 0
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()


def test_inpaint_uses_the_mask_file(small_model_dirs, tmp_path) -> None:
    Image.new("RGB", (64, 64), (200, 30, 30)).save(tmp_path / "in.png")
    mask = Image.new("L", (64, 64), 255)
    mask.paste(0, (0, 0, 64, 32))
    mask.save(tmp_path / "mask.png")
    status = main(
        [
            "inpaint",
            str(tmp_path / "in.png"),
            str(tmp_path / "mask.png"),
            "blue sky",
            "--seed",
            "1",
            "--steps",
            "3",
            "--upsample-steps",
            "2",
            "--no-progress",
            "--out",
            str(tmp_path / "out.png"),
            *model_flags(small_model_dirs, inpaint=True),
        ]
    )
    assert status == 0
    out = Image.open(tmp_path / "out.png").convert("RGB")
    assert out.getpixel((32, 60)) == (200, 30, 30)  # kept
    assert read_png_metadata(tmp_path / "out.png")["task"] == "inpaint"


def test_a_size_the_models_cannot_make_is_one_line_and_exit_1(small_model_dirs, capsys) -> None:
    status = main(["generate", "x", "--size", "100", *model_flags(small_model_dirs)])
    err = capsys.readouterr().err
    assert status == 1
    assert err.strip() == (
        "glide-api: error: size: must be one of 32, 64, 128, 256 for text2im with the loaded models (got 100)"
    )


def test_an_unknown_model_is_one_line_naming_the_official_names(capsys) -> None:
    status = main(["generate", "x", "--base", "no-such-model", "--offline"])
    err = capsys.readouterr().err
    assert status == 1 and len(err.strip().splitlines()) == 1
    assert "no-such-model" in err and "base, upsample" in err


def test_building_the_command_line_imports_no_torch() -> None:
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from glide_api.cli import build_parser\n"
        "build_parser()\n"
        "assert 'torch' not in sys.modules, 'building the parser imported torch'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_generate_flags_come_from_the_option_declarations(capsys) -> None:
    from glide_api.cli import main
    from glide_api.options import GENERATION_OPTIONS

    assert main(["generate", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    for option in GENERATION_OPTIONS:
        assert option.flag in text
        assert " ".join(option.help.split()[:4]) in text, option.name
        if option.default is not None:
            assert f"(default: {option.default})" in text, option.name


def test_generate_offline_without_the_models_names_every_file_one_command_and_the_demo(
    tmp_path, monkeypatch, capsys
) -> None:
    monkeypatch.setenv("GLIDE_API_CACHE", str(tmp_path))
    assert main(["generate", "a corgi", "--offline", "--no-progress"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    for name in ("encoder.json", "vocab.bpe", "base.pt", "upsample.pt"):
        assert str(tmp_path / name) in err, name
    assert "fetch them with: glide-api download base upsample;" in err
    assert "glide-api generate --model demo works offline now" in err


def test_inpaint_offline_without_the_models_names_its_own_models_and_no_demo(
    tmp_path, monkeypatch, capsys
) -> None:
    monkeypatch.setenv("GLIDE_API_CACHE", str(tmp_path))
    picture = tmp_path / "in.png"
    Image.new("RGBA", (64, 64)).save(picture)
    assert main(["inpaint", str(picture), "-", "x", "--offline", "--no-progress"]) == 1
    err = capsys.readouterr().err.strip()
    assert "fetch them with: glide-api download base-inpaint upsample-inpaint" in err
    assert "--model demo" not in err  # the demo cannot inpaint
