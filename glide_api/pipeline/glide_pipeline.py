"""The GLIDE pipeline: prompts (and, for inpainting, images) in, PNG images with metadata out.

Which stages make each size: `stages.py`.

Every sample carries its own prompt, seed and guidance scale; its noise comes from its own
generator (`SeededNoise`), so a seed reproduces its image whatever else shares the batch.

Batch invariance: CPU and GPU kernels pick different algorithms for different batch shapes (a
convolution over one image is not summed in the order it is over six), so a sample computed in a
batch of three differs from its solo run by float rounding, enough to flip 8-bit pixels. With
`batch_invariant=True` (the default) the network runs once per sample inside a batch — the rows
that a solo run would compute, in the same shapes — so a seed gives byte-identical images however
requests are merged. `batch_invariant=False` runs the whole batch as one tensor: faster on a GPU,
equal to solo runs only within float rounding.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from functools import lru_cache
from typing import Any

import torch
from PIL import Image

from .. import __version__, checks
from ..diffusion.guidance import RowsModelFn, classifier_free_guidance
from ..diffusion.samplers import (
    DenoisedFn,
    ModelFn,
    SampleStep,
    SeededNoise,
    sample,
    sample_to_end,
    sampling_schedule,
)
from ..diffusion.schedule import Schedule
from ..errors import InvalidParameter, PipelineError
from ..model_selection import MODEL_ROLES, TASK_CAPABILITY, TASK_ROLES, ModelSelection
from ..models.config import ModelConfig
from ..models.glide import GlideUNet
from ..models.weights_source import WeightsSource
from ..options import WHOLE_SCHEDULE
from ..progress import StepProgress
from . import images, img2img
from .inpaint import InpaintInputs, impose_known
from .loading import LoadedModel, load_model, resolve_device, resolve_precision
from .outputs import GeneratedImage, PipelineOutput, StageProgress
from .params import BatchSettings, GenerationRequest, Sample
from .stages import Stage, output_sizes, plan_stages

logger = logging.getLogger(__name__)


def _load_models(
    specs: Mapping[str, str | None],
    *,
    device: torch.device,
    precision: str,
    source: WeightsSource,
    on_load: Callable[[str, str], None] | None,
) -> dict[str, LoadedModel | None]:
    loaded: dict[str, LoadedModel | None] = {}
    for role, spec in specs.items():
        if spec is not None and on_load is not None:
            on_load(role, spec)
        loaded[role] = (
            None if spec is None else load_model(spec, device=device, precision=precision, source=source)
        )
    return loaded


@lru_cache(maxsize=32)
def schedule_for(noise_schedule: str, diffusion_steps: int, respacing: str, sampler: str) -> Schedule:
    return sampling_schedule(
        noise_schedule=noise_schedule, diffusion_steps=diffusion_steps, respacing=respacing, sampler=sampler
    )


class _Role:
    """A model role of the pipeline (None until a model fills it), read from its current models."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.role = name

    def __get__(self, pipeline: GlidePipeline | None, owner: type | None = None) -> LoadedModel | None:
        return None if pipeline is None else pipeline._loaded.get(self.role)


class GlidePipeline:
    """Text-to-image and inpainting with loaded GLIDE models, one sampling batch at a time.

    Not thread-safe: one thread (the engine's worker) drives it. Another thread may add models to
    empty roles meanwhile (`load_more`): they appear all at once, and a role once filled keeps its
    model, so a run always sees the models it started with, or more.
    """

    base = _Role()
    upsample = _Role()
    base_inpaint = _Role()
    upsample_inpaint = _Role()

    def __init__(
        self,
        *,
        base: LoadedModel | None = None,
        upsample: LoadedModel | None = None,
        base_inpaint: LoadedModel | None = None,
        upsample_inpaint: LoadedModel | None = None,
        device: torch.device | str = "cpu",
        precision: str = "fp32",
        batch_invariant: bool = True,
    ) -> None:
        self.device = torch.device(device)
        self.batch_invariant = batch_invariant
        self.precision = resolve_precision(precision, self.device)
        self._loaded: dict[str, LoadedModel] = {}
        self.add_models(
            {
                "base": base,
                "upsample": upsample,
                "base_inpaint": base_inpaint,
                "upsample_inpaint": upsample_inpaint,
            }
        )

    def add_models(self, models: Mapping[str, LoadedModel | None]) -> None:
        """Fill empty roles with `models` (None: leave the role empty), all in one swap."""
        added = {role: m for role, m in models.items() if m is not None}
        for role, loaded in added.items():
            checks.one_of("role", role, MODEL_ROLES)
            if role in self._loaded:
                raise InvalidParameter(f"{role}: already holds {self._loaded[role].name}")
            if loaded.config.kind != MODEL_ROLES[role]:
                raise InvalidParameter(
                    f"{role}: {loaded.name} is a {loaded.config.kind} model, not a {MODEL_ROLES[role]} model"
                )
        self._loaded = {**self._loaded, **added}  # one assignment: the worker sees all or none

    def load_more(
        self,
        specs: Mapping[str, str | None],
        *,
        source: WeightsSource,
        on_load: Callable[[str, str], None] | None = None,
    ) -> None:
        """Load models for empty roles on this pipeline's device and precision, then add them at
        once (`add_models`); the arguments are those of `load`."""
        self.add_models(
            _load_models(specs, device=self.device, precision=self.precision, source=source, on_load=on_load)
        )

    @classmethod
    def load(
        cls,
        *,
        base: str | None = "base",
        upsample: str | None = "upsample",
        base_inpaint: str | None = None,
        upsample_inpaint: str | None = None,
        device: str | torch.device = "auto",
        precision: str = "auto",
        batch_invariant: bool = True,
        source: WeightsSource | None = None,
        on_load: Callable[[str, str], None] | None = None,
    ) -> GlidePipeline:
        """Load the named models (official names or model folders) once, on one device.

        Official files come from `source` (default: `WeightsSource.from_env()`). `on_load(role,
        spec)` is called before each model is fetched and built (for status displays).
        """
        resolved = resolve_device(device)
        chosen = resolve_precision(precision, resolved)
        specs = {
            "base": base,
            "upsample": upsample,
            "base_inpaint": base_inpaint,
            "upsample_inpaint": upsample_inpaint,
        }
        loaded = _load_models(
            specs,
            device=resolved,
            precision=chosen,
            source=source or WeightsSource.from_env(),
            on_load=on_load,
        )
        return cls(**loaded, device=resolved, precision=chosen, batch_invariant=batch_invariant)

    @classmethod
    def from_selection(
        cls,
        selection: ModelSelection,
        *,
        task: str | None = None,
        source: WeightsSource | None = None,
        on_load: Callable[[str, str], None] | None = None,
    ) -> GlidePipeline:
        """Load what `selection` names (every role, or only those `task` needs), on its device.

        Official files come from `source` (default: the environment's, with the selection's
        `offline` and `cache_dir`).
        """
        specs = selection.specs() if task is None else selection.task_specs(task)
        return cls.load(
            **{role: specs.get(role) for role in MODEL_ROLES},
            device=selection.device,
            precision=selection.precision,
            batch_invariant=selection.batch_invariant,
            source=source or WeightsSource.from_env(offline=selection.offline, cache=selection.cache_dir),
            on_load=on_load,
        )

    # ---- what can be made -----------------------------------------------------------------------

    def _models(self, task: str) -> tuple[LoadedModel | None, LoadedModel | None]:
        loaded = self._loaded  # one read: models added together are seen together
        base, upsample = TASK_ROLES[TASK_CAPABILITY[task]]
        return loaded.get(base), loaded.get(upsample)

    def sizes(self, task: str = "text2im") -> list[int]:
        """The output sizes this pipeline can make for a task (empty if its models are not loaded)."""
        base, up = self._models(task)
        if base is None:
            return []
        return output_sizes(
            base=base.config.image_size, upsample=up and up.config.image_size, chained=task != "inpaint"
        )

    def default_size(self, task: str = "text2im") -> int:
        """The size of the reference recipe: the upsampler's (256), else the base model's."""
        base, up = self._models(task)
        if base is None:
            raise InvalidParameter(f"task: {task} needs models that are not loaded")
        return (up or base).config.image_size

    def plan(self, settings: BatchSettings) -> list[Stage]:
        """The stages that make `settings.size` with these models (see `stages.py`)."""
        self.validate(settings)
        base, up = self._models(settings.task)
        return plan_stages(settings.size, base=base.config.image_size, upsample=up and up.config.image_size)

    def validate(self, settings: BatchSettings) -> None:
        """Raise ValueError naming the field when these models cannot honour `settings`."""
        base, up = self._models(settings.task)
        if base is None:
            raise InvalidParameter(
                f"task: {settings.task} needs models that are not loaded "
                f"(start the service with the inpainting models to use it)"
            )
        allowed = self.sizes(settings.task)
        if settings.size not in allowed:
            raise InvalidParameter(
                f"size: must be one of {', '.join(map(str, allowed))} for {settings.task} "
                f"with the loaded models (got {settings.size})"
            )
        if base.config.diffusion_steps != settings.diffusion_steps:
            raise InvalidParameter(
                f"base_respacing: the base model has {base.config.diffusion_steps} "
                f"diffusion steps, the settings assume {settings.diffusion_steps}"
            )
        stages = [("base_respacing", base, settings.base_respacing, settings.base_sampler)]
        if up is not None and settings.size > base.config.image_size:
            stages.append(("upsample_respacing", up, settings.upsample_respacing, settings.upsample_sampler))
        for name, model, respacing, sampler in stages:
            try:
                schedule_for(model.config.noise_schedule, model.config.diffusion_steps, respacing, sampler)
            except InvalidParameter as e:
                raise InvalidParameter(f"{name}: {e}, for the {sampler} sampler") from None

    def device_memory(self) -> dict[str, int]:
        """Bytes of device memory allocated and reserved by torch now (0 on the CPU)."""
        if self.device.type != "cuda":
            return {"allocated": 0, "reserved": 0}
        return {
            "allocated": torch.cuda.memory_allocated(self.device),
            "reserved": torch.cuda.memory_reserved(self.device),
        }

    def capabilities(self) -> dict[str, dict[str, Any]]:
        """Per task whose models are loaded, as plain data (what a worker tells the fleet, for API
        replicas to validate requests with): sizes, default size, base diffusion steps, model names."""
        served = {}
        for task, roles in TASK_ROLES.items():
            models = self._models(task)
            if models[0] is None:
                continue
            served[task] = {
                "sizes": self.sizes(task),
                "default_size": self.default_size(task),
                "diffusion_steps": models[0].config.diffusion_steps,
                "models": {role: m.name for role, m in zip(roles, models, strict=True) if m is not None},
            }
        return served

    def describe(self) -> dict[str, object]:
        """Loaded models and what they can make (for /v1/models and the UI)."""
        loaded = self._loaded  # one read, as in `_models`
        models = {role: loaded[role].describe() for role in MODEL_ROLES if role in loaded}
        return {
            "models": models,
            "device": str(self.device),
            "precision": self.precision,
            "batch_invariant": self.batch_invariant,
            "sizes": {"text2im": self.sizes("text2im"), "inpaint": self.sizes("inpaint")},
        }

    # ---- running ------------------------------------------------------------------------------

    def generate(self, request: GenerationRequest) -> PipelineOutput:
        """Run one request to completion."""
        for event in self.stream(request.settings, request.samples()):
            if isinstance(event, PipelineOutput):
                return event
        raise PipelineError("the pipeline ended without an output")  # pragma: no cover

    def stream(
        self, settings: BatchSettings, samples: Sequence[Sample]
    ) -> Iterator[StageProgress | PipelineOutput]:
        """Yield progress after every sampling step, then the output. Close the iterator to cancel."""
        if not samples:
            raise InvalidParameter("samples: at least one sample is needed")
        stages = self.plan(settings)
        base, up = self._models(settings.task)
        inpaint = InpaintInputs(samples) if settings.task == "inpaint" else None
        pictures = img2img.Img2ImgInputs(samples) if settings.task == "img2img" else None
        noise = SeededNoise([s.seed for s in samples], device=self.device)
        sampling = [s for s in stages if s.samples]
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        start = time.perf_counter()
        stage_seconds: dict[str, float] = {}
        x: torch.Tensor | None = None
        for stage in sampling:
            stage_start = time.perf_counter()
            picture = None if pictures is None else pictures.tensors(stage.size, self.device)
            if stage.kind == "base":
                steps = self._base_steps(
                    loaded=base,
                    settings=settings,
                    samples=samples,
                    noise=noise,
                    inpaint=inpaint,
                    picture=picture,
                )
            else:
                assert x is not None and up is not None
                steps = self._upsample_steps(
                    loaded=up,
                    settings=settings,
                    samples=samples,
                    noise=noise,
                    size=stage.size,
                    previous=x,
                    inpaint=inpaint,
                    picture=picture,
                )
            if picture is not None:
                x = picture  # a stage left no step by `strength` returns the picture as it is
            for step in steps:
                x = step.x
                progress = StepProgress(
                    stage=stage.label,
                    stage_index=sampling.index(stage),
                    stages=len(sampling),
                    step=step.step,
                    total=step.total,
                )
                yield StageProgress(
                    progress=progress, elapsed=time.perf_counter() - start, pred_x0=step.pred_x0
                )
            stage_seconds[stage.label] = time.perf_counter() - stage_start
        assert x is not None
        pictures = images.to_pil(x)
        del x
        if stages[-1].kind == "lanczos":
            size = stages[-1].size
            pictures = [p.resize((size, size), images.DOWNSCALE) for p in pictures]
        chain = [s.label for s in stages]
        names = {"base": base.name, **({"upsample": up.name} if len(sampling) > 1 and up else {})}
        outputs = [
            self._image(picture=p, sample_=s, settings=settings, chain=chain, models=names)
            for p, s in zip(pictures, samples, strict=True)
        ]
        peak = torch.cuda.max_memory_allocated(self.device) if self.device.type == "cuda" else None
        yield PipelineOutput(
            images=outputs,
            chain=chain,
            stage_seconds=stage_seconds,
            total_seconds=time.perf_counter() - start,
            peak_memory_bytes=peak,
            models=names,
        )

    def upsample_images(
        self, low_res: torch.Tensor, samples: Sequence[Sample], settings: BatchSettings
    ) -> list[Image.Image]:
        """One upsampler pass over given low-res images (B x 3 x b x b in [-1, 1]) to its own size,
        sample i with its prompt and seed: how a trainer previews an upsampler on its data."""
        if self.upsample is None:
            raise InvalidParameter("upsample: no upsampler is loaded")
        if low_res.shape[0] != len(samples):
            raise InvalidParameter(f"samples: one per low-res image ({low_res.shape[0]}), got {len(samples)}")
        noise = SeededNoise([s.seed for s in samples], device=self.device)
        steps = self._upsample_steps(
            loaded=self.upsample,
            settings=settings,
            samples=samples,
            noise=noise,
            size=self.upsample.config.image_size,
            previous=low_res.to(self.device),
            inpaint=None,
            picture=None,
        )
        return images.to_pil(sample_to_end(steps))

    def _base_steps(
        self,
        *,
        loaded: LoadedModel,
        settings: BatchSettings,
        samples: Sequence[Sample],
        noise: SeededNoise,
        inpaint: InpaintInputs | None,
        picture: torch.Tensor | None,
    ) -> Iterator[SampleStep]:
        """The base stage: classifier-free guidance over B prompt rows and B negative-prompt rows
        (the empty prompt unless a sample has one)."""
        net, config = loaded.network, loaded.config
        b, size = len(samples), config.image_size
        negatives = [s.negative_prompt for s in samples]
        tokens, mask = loaded.tokenizer.batch([s.prompt for s in samples] + negatives, config.text_ctx)
        extra: dict[str, torch.Tensor] = {}
        denoised_fn = None
        if inpaint is not None:
            image, keep = inpaint.tensors(size, self.device)
            extra = {"inpaint_image": torch.cat([image * keep] * 2), "inpaint_mask": torch.cat([keep] * 2)}
            denoised_fn = impose_known(image, keep)
        # Sample i's rows are its prompt row i and its negative-prompt row b + i.
        paired = self._network_fn(net, tokens, mask, extra, groups=[[i, b + i] for i in range(b)])
        intervals = [s.guidance_interval for s in samples]
        model_fn = classifier_free_guidance(
            paired,
            [s.guidance_scale for s in samples],
            intervals=None if all(i == WHOLE_SCHEDULE for i in intervals) else intervals,
            diffusion_steps=config.diffusion_steps,
        )
        return self._sample(
            model_fn=model_fn,
            config=config,
            respacing=settings.base_respacing,
            sampler=settings.base_sampler,
            eta=settings.eta,
            threshold=settings.dynamic_threshold,
            x_T=noise(torch.Size([b, 3, size, size])),
            noise=noise,
            denoised_fn=denoised_fn,
            picture=picture,
            strength=settings.strength,
        )

    def _upsample_steps(
        self,
        *,
        loaded: LoadedModel,
        settings: BatchSettings,
        samples: Sequence[Sample],
        noise: SeededNoise,
        size: int,
        previous: torch.Tensor,
        inpaint: InpaintInputs | None,
        picture: torch.Tensor | None,
    ) -> Iterator[SampleStep]:
        """An upsampler pass to `size`, conditioned on the previous image quantised to 8 bits."""
        net, config = loaded.network, loaded.config
        b = len(samples)
        tokens, mask = loaded.tokenizer.batch([s.prompt for s in samples], config.text_ctx)
        extra = {"low_res": images.quantize(previous)}
        denoised_fn = None
        if inpaint is not None:
            image, keep = inpaint.tensors(size, self.device)
            extra |= {"inpaint_image": image * keep, "inpaint_mask": keep}
            denoised_fn = impose_known(image, keep)
        model_fn = self._network_fn(net, tokens, mask, extra, groups=[[i] for i in range(b)])

        # upsample_temp scales only the start noise, as the reference.
        x_T = noise(torch.Size([b, 3, size, size])) * settings.upsample_temp
        return self._sample(
            model_fn=model_fn,
            config=config,
            respacing=settings.upsample_respacing,
            sampler=settings.upsample_sampler,
            eta=settings.eta,
            threshold=0.0,  # guidance, which saturates x̂₀, is the base's alone
            x_T=x_T,
            noise=noise,
            denoised_fn=denoised_fn,
            picture=picture,
            strength=settings.strength,
        )

    def _network_fn(
        self,
        net: GlideUNet,
        tokens: torch.Tensor,
        mask: torch.Tensor,
        extra: dict[str, torch.Tensor],
        *,
        groups: list[list[int]],
    ) -> RowsModelFn:
        """The network as a (x, t, rows=None) -> output function, its text encoded once for the run.

        `groups` lists each sample's rows; with `batch_invariant` the network runs group by group.
        `rows` (default: all) are the rows that x holds, in order: guidance outside its interval
        asks for a sample's prompt row alone, and a group runs on those of its rows that are asked.
        """
        tokens, mask = tokens.to(self.device), mask.to(self.device)
        if not self.batch_invariant:
            groups = [list(range(tokens.shape[0]))]
        # The weights are stored in the pipeline's precision (loading.prepare): no autocast here.
        texts: dict[tuple[int, ...], Any] = {}

        def text_of(rows: list[int]) -> Any:
            """The text encoding of these rows, made once (for each group's whole rows, right away)."""
            key = tuple(rows)
            if key not in texts:
                with torch.no_grad():
                    texts[key] = net.encode_text(tokens[rows], mask[rows])
            return texts[key]

        for g in groups:
            text_of(g)

        def network(x: torch.Tensor, t: torch.Tensor, rows: Sequence[int] | None = None) -> torch.Tensor:
            at = {row: place for place, row in enumerate(range(x.shape[0]) if rows is None else rows)}
            runs = [run for g in groups if (run := [row for row in g if row in at])]
            if len(runs) == 1 and [at[row] for row in runs[0]] == list(range(x.shape[0])):
                run = runs[0]  # x holds these rows in order: no gathering
                chosen = extra if len(run) == tokens.shape[0] else {k: v[run] for k, v in extra.items()}
                return net(x, t, text=text_of(run), **chosen)
            out = torch.empty(x.shape[0], 6, *x.shape[2:], device=x.device, dtype=x.dtype)
            for run in runs:
                places = [at[row] for row in run]
                out[places] = net(
                    x[places], t[places], text=text_of(run), **{k: v[run] for k, v in extra.items()}
                )
            return out

        return network

    @staticmethod
    def _sample(
        *,
        model_fn: ModelFn,
        config: ModelConfig,
        respacing: str,
        sampler: str,
        eta: float,
        threshold: float,
        x_T: torch.Tensor,
        noise: SeededNoise,
        denoised_fn: DenoisedFn | None,
        picture: torch.Tensor | None = None,
        strength: float | None = None,
    ) -> Iterator[SampleStep]:
        """The stage's sampling loop from x_T; with an image-to-image `picture`, from it noised to
        `strength` (`img2img.start`)."""
        schedule = schedule_for(config.noise_schedule, config.diffusion_steps, respacing, sampler)
        if picture is not None:
            schedule, x_T = img2img.start(schedule, strength, picture, x_T)
            if schedule is None:
                return iter(())
        return sample(
            model_fn,
            schedule,
            x_T,
            noise=noise,
            sampler=sampler,
            eta=eta if sampler == "ddim" else 0.0,
            threshold=threshold,
            denoised_fn=denoised_fn,
        )

    @staticmethod
    def _image(
        *,
        picture: Image.Image,
        sample_: Sample,
        settings: BatchSettings,
        chain: list[str],
        models: dict[str, str],
    ) -> GeneratedImage:
        metadata = {
            "generator": f"glide-api {__version__}",
            "prompt": sample_.prompt,
            "seed": sample_.seed,
            "guidance_scale": sample_.guidance_scale,
            "negative_prompt": sample_.negative_prompt,
            "guidance_interval": list(sample_.guidance_interval),
            **{k: v for k, v in settings.to_dict().items() if k != "diffusion_steps" and v is not None},
            "chain": chain,
            "models": models,
        }
        return GeneratedImage(
            image=picture,
            png=images.encode_png(picture, metadata),
            seed=sample_.seed,
            prompt=sample_.prompt,
            metadata=metadata,
        )
