"""Training throughput of tlkit's model on an accelerator: precision, XLA, steps_per_execution, frozen vs full.

Every variant builds tlkit's training model (tlkit.model.build.build_model: preprocessing, backbone
with weights=None, pooling, head), sets what trains the way the trainer does (tlkit.training.stages.Freezer,
bn=frozen) and compiles it with tlkit.training.optim.compile_for_stage (Adam, warmup + cosine LR, tlkit's loss
and accuracy) plus the trainer's compile options (jit_compile, steps_per_execution), inside
tlkit.training.runtime.dtype_policy. It then trains with model.fit on synthetic in-memory images: uint8
pixels made once with numpy, converted to float32 (what the trainer's pipeline hands the model),
numpy arrays straight into fit (no tf.data). The first epoch (tracing, XLA compile, first
transfers) is warm-up; the throughput is the median images/s of the later epochs, each
timed from on_epoch_begin to the end of the epoch with the device synchronised.

All variants run in one process, on the same data, so the ratios between them are like for like.

Backend-neutral, no TensorFlow import: meant for KERAS_BACKEND=jax on a GPU machine with no
TensorFlow (BENCHMARKS.md section 4 says how the packages were carried there).

A KerasHub preset (tlkit's backbone=hub) is measured from a local preset folder, built from its config with random
weights as the registry backbones are: --hub-preset DIR; --vit-base-preset DIR first writes a randomly initialised
ViT-B/16 preset (hidden 768, 12 layers, 12 heads, MLP 3072, patch 16, ViT's converter) at --size into DIR when DIR
holds none, so no download is needed. With either, only the presets are measured unless --only names backbones too.

    KERAS_BACKEND=jax python scripts/bench_gpu.py            # the full set (a GPU; several minutes)
    KERAS_BACKEND=jax python scripts/bench_gpu.py --quick    # tiny sizes: checks the script on a CPU
    python scripts/bench_gpu.py --only resnet50 --json out.jsonl
    python scripts/bench_gpu.py --cpu --size 96 --batch 16 --steps 8 --epochs 3 --vit-base-preset /tmp/vit_b16_96
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import numpy as np  # noqa: E402


@dataclass(frozen=True)
class Variant:
    backbone: str
    precision: str  # float32 | mixed_bfloat16 | mixed_float16
    jit: bool
    spe: int  # steps_per_execution
    train: str  # head (backbone frozen) | all (full fine-tuning, BatchNorm frozen as the trainer's default)
    batch: int
    size: int
    steps: int  # steps per epoch
    epochs: int  # the first is warm-up
    preset: str = ""  # a KerasHub preset folder (backbone is then hub:FOLDER_NAME); "" for a registry backbone

    @property
    def label(self) -> str:
        prec = {"float32": "fp32", "mixed_bfloat16": "bf16", "mixed_float16": "fp16"}[self.precision]
        return (f"{self.backbone} {self.size}px b{self.batch} {prec} jit={'on' if self.jit else 'off'} "
                f"spe={self.spe} {'head-only' if self.train == 'head' else 'full'}")


# --cpu: the families people fine-tune today beside the classic ones (BENCHMARKS.md section 4, CPU table)
CPU_BACKBONES = ("mobilenet_v2", "efficientnet_b0", "resnet50", "convnext_tiny", "efficientnet_v2_b0")
# ViT-B/16 (Dosovitskiy et al. 2021; keras_hub's vit_base_patch16_224_imagenet has the same shape)
VIT_BASE = {"patch_size": 16, "num_layers": 12, "num_heads": 12, "hidden_dim": 768, "mlp_dim": 3072}


def write_vit_base_preset(folder: str, size: int) -> None:
    """A randomly initialised ViT-B/16 at `size` px and ViT's image converter (x / 127.5 - 1), saved as a KerasHub
    preset folder; nothing is written when `folder` already holds a preset."""
    if (Path(folder) / "config.json").is_file():
        return
    import keras_hub

    keras_hub.models.ViTBackbone(image_shape=(size, size, 3), **VIT_BASE).save_to_preset(folder)
    keras_hub.layers.ViTImageConverter(image_size=(size, size), scale=1 / 127.5, offset=-1.0).save_to_preset(folder)


def hub_name(folder: str) -> str:
    return f"hub:{Path(folder).name}"


def plan(args) -> list[Variant]:
    """Variants in priority order (a time budget drops the tail). Names for --only: the backbone."""
    presets = args.hub_preset or []
    if args.cpu:  # float32, no XLA (tlkit's CPU defaults), full fine-tuning and head-only, every family asked for
        names = (args.only or ("" if presets else ",".join(CPU_BACKBONES))).split(",")
        return [Variant(name, "float32", False, 1, train, args.batch, args.size, args.steps, args.epochs, preset)
                for name, preset in [(n, "") for n in names if n] + [(hub_name(f), f) for f in presets]
                for train in ("all", "head")]
    if args.quick:
        size, batch, steps, epochs = 32, 8, 4, 3
        nojit_steps = 4
    else:
        size, batch, steps, epochs = args.size, args.batch, args.steps, args.epochs
        nojit_steps = max(2, steps // 8)  # eager JAX dispatches op by op: far slower, so fewer steps
    bf16, fp32 = "mixed_bfloat16", "float32"
    spe = min(32, steps)

    def v(backbone, precision, jit=True, s=spe, train="all", b=batch, st=steps, ep=epochs):
        return Variant(backbone, precision, jit, s, train, b, size, st, ep)

    out = [
        # ResNet50: each knob against the GPU default (bf16, XLA, spe 32, full fine-tuning)
        v("resnet50", bf16),
        v("resnet50", fp32),
        v("resnet50", bf16, s=1),
        v("resnet50", bf16, train="head"),
        # eager JAX (jit off) runs op by op: few steps, spe 1, compared with the jit spe=1 variant
        v("resnet50", bf16, s=1, jit=False, st=nojit_steps, ep=min(epochs, 3)),
        # smaller backbones: precision only
        v("mobilenet_v2", bf16),
        v("mobilenet_v2", fp32),
        v("efficientnet_b0", bf16),
        v("efficientnet_b0", fp32),
        v("resnet50", fp32, train="head"),
        v("resnet50", fp32, s=1),
    ]
    if args.only or presets:
        keep = set((args.only or "").split(","))
        out = [x for x in out if x.backbone in keep]
    for folder in presets:  # the GPU default (bf16, XLA, spe), full and head-only
        out += [Variant(hub_name(folder), bf16, True, spe, train, batch, size, steps, epochs, folder)
                for train in ("all", "head")]
    return out


def sync(model) -> None:
    """Wait for the device: the last step's updated weights exist only once it has finished."""
    import keras

    keras.ops.convert_to_numpy(model.trainable_variables[-1] if model.trainable_variables else model.variables[-1])


def measure(variant: Variant, x: np.ndarray, y: np.ndarray, num_classes: int) -> dict:
    import keras

    from tlkit.training import runtime
    from tlkit.backbones import get_spec
    from tlkit.config.schema import BackboneConfig, BNPolicy, HeadConfig, OptimizerConfig, StageConfig
    from tlkit.model.build import build_model
    from tlkit.training.optim import compile_for_stage
    from tlkit.training.stages import Freezer, count_params, plan_stages

    keras.backend.clear_session()
    gc.collect()
    keras.utils.set_random_seed(0)
    if variant.preset:  # its architecture from the preset's files, randomly initialised (tlkit.backbones.hub)
        from tlkit.backbones.hub import HUB, hub_spec

        spec, backbone_cfg = hub_spec(HUB, variant.preset, None), BackboneConfig(name=HUB, preset=variant.preset,
                                                                                 weights=None)
    else:
        spec = get_spec(variant.backbone)
        backbone_cfg = BackboneConfig(name=spec.name, weights=None)
    with runtime.dtype_policy(variant.precision):  # as tlkit.training.trainer: the policy applies to the layers built here
        model = build_model(spec, backbone_cfg, HeadConfig(), num_classes, variant.size)
    stage = plan_stages([StageConfig(name=variant.train, train=variant.train, epochs=variant.epochs)], spec, 1e-3)[0]
    Freezer(model, spec, BNPolicy.frozen).apply(stage)
    compile_for_stage(model, OptimizerConfig(), stage, variant.steps,
                      {"jit_compile": runtime.resolve_jit_compile(variant.jit), "steps_per_execution": variant.spe})

    times: list[float] = []

    class Timer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            sync(self.model)
            times.append(time.perf_counter() - self.start)

    n = variant.batch * variant.steps
    started = time.perf_counter()
    history = model.fit(x[:n], y[:n], batch_size=variant.batch, epochs=variant.epochs, shuffle=False,
                        verbose=0, callbacks=[Timer()])
    total = time.perf_counter() - started
    steady = statistics.median(times[1:]) if len(times) > 1 else times[0]
    loss = history.history.get("loss", [float("nan")])
    result = {
        **asdict(variant),
        "label": variant.label,
        "images_per_s": round(n / steady, 1),
        "step_ms": round(1000 * steady / variant.steps, 2),
        "epoch_s": [round(t, 3) for t in times],
        "warmup_s": round(times[0], 2),
        "fit_s": round(total, 2),
        "trainable_params": count_params(model.trainable_weights),
        "jit_compile_resolved": getattr(model, "jit_compile", None),
        "loss_first_last": [round(float(loss[0]), 4), round(float(loss[-1]), 4)],
        "compute_dtype": model.get_layer("backbone").compute_dtype,
    }
    del model
    return result


def environment() -> dict:
    import keras

    from tlkit.training import runtime

    device = runtime.detect_device()
    facts = {
        "python": platform.python_version(),
        "keras": keras.__version__,
        "backend": keras.backend.backend(),
        "device": f"{device.kind} {device.name}".strip(),
        "bfloat16_units": device.bfloat16,
        "tlkit_auto_precision": runtime.resolve_precision("auto", device),
        "tlkit_default_steps_per_execution": runtime.resolve_steps_per_execution(None, device, 1000),
        "tlkit_default_jit_compile": runtime.resolve_jit_compile(None),
        "tensorflow_imported": "tensorflow" in sys.modules,
    }
    if keras.backend.backend() == "jax":
        import jax
        import jaxlib

        facts.update(jax=jax.__version__, jaxlib=jaxlib.__version__, jax_devices=[str(d) for d in jax.devices()],
                     jax_default_matmul_precision=str(jax.config.jax_default_matmul_precision))
    return facts


# For each knob, the value expected to be faster goes over the other (spe: the larger).
FASTER = {"precision": "mixed_bfloat16", "jit": True, "spe": None, "train": "head"}


def comparisons(variants: list[Variant], results: dict) -> list[tuple[str, float]]:
    """Every pair of measured variants that differ in exactly one knob (precision, jit, spe, train)."""
    out = []
    for i, a in enumerate(variants):
        for b in variants[i + 1:]:
            if (a.backbone, a.batch, a.size) != (b.backbone, b.batch, b.size):
                continue
            diffs = [f for f in FASTER if getattr(a, f) != getattr(b, f)]
            if len(diffs) != 1 or a.label not in results or b.label not in results:
                continue
            knob = diffs[0]
            if knob == "spe":
                a_first = a.spe > b.spe
            else:
                a_first = getattr(a, knob) == FASTER[knob]
            top, bottom = (a, b) if a_first else (b, a)
            value = results[top.label]["images_per_s"] / results[bottom.label]["images_per_s"]
            out.append((f"{top.label}  /  {bottom.label}", round(value, 2)))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes (32 px, batch 8): checks the script on a CPU")
    parser.add_argument("--cpu", action="store_true", help="the CPU table: float32, no XLA, CPU_BACKBONES (use "
                        "--size 96 --batch 16 --steps 8 --epochs 3 on 2 cores)")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=32, help="steps per epoch (jit variants)")
    parser.add_argument("--epochs", type=int, default=4, help="epochs per variant; the first is warm-up")
    parser.add_argument("--only", help="comma-separated backbones (resnet50,mobilenet_v2,efficientnet_b0)")
    parser.add_argument("--budget-s", type=float, default=None, help="start no new variant after this many seconds")
    parser.add_argument("--json", help="append one JSON line per variant (and the environment) to this file")
    parser.add_argument("--hub-preset", action="append", metavar="DIR",
                        help="also measure this local KerasHub preset folder (random weights); repeatable")
    parser.add_argument("--vit-base-preset", metavar="DIR", help="write a random ViT-B/16 preset at --size into DIR "
                        "(unless DIR holds one), then measure it as --hub-preset DIR (needs keras_hub)")
    args = parser.parse_args()
    if args.vit_base_preset:
        write_vit_base_preset(args.vit_base_preset, 32 if args.quick else args.size)
        args.hub_preset = [*(args.hub_preset or []), args.vit_base_preset]

    began = time.perf_counter()
    env = environment()
    print("environment:", json.dumps(env), flush=True)
    sink = open(args.json, "a") if args.json else None
    if sink:
        sink.write(json.dumps({"environment": env, "args": vars(args)}) + "\n")
        sink.flush()

    variants = plan(args)
    if not variants:
        parser.error(f"--only {args.only}: no such variants (resnet50, mobilenet_v2, efficientnet_b0)")
    num_classes = 10
    largest = max(v.batch * v.steps for v in variants)
    size = variants[0].size
    rng = np.random.default_rng(0)
    # uint8 pixels -> float32 RGB 0-255, what tlkit's pipeline gives the model
    x = rng.integers(0, 256, size=(largest, size, size, 3), dtype=np.uint8).astype("float32")
    y = rng.integers(0, num_classes, size=(largest,), dtype=np.int64).astype("int32")

    results: dict[str, dict] = {}
    for variant in variants:
        elapsed = time.perf_counter() - began
        if args.budget_s and elapsed > args.budget_s:
            print(f"skipped (budget {args.budget_s:.0f}s used): {variant.label}", flush=True)
            continue
        try:
            result = measure(variant, x, y, num_classes)
        except Exception as error:  # one broken variant must not lose the others
            result = {**asdict(variant), "label": variant.label, "error": f"{type(error).__name__}: {error}"[:500]}
            print(f"FAILED {variant.label}: {result['error']}", flush=True)
        else:
            results[variant.label] = result
            print(f"{variant.label:60s} {result['images_per_s']:9.1f} img/s  step {result['step_ms']:7.2f} ms  "
                  f"warm-up {result['warmup_s']:6.1f} s  epochs {result['epoch_s']}  "
                  f"loss {result['loss_first_last']}  at {time.perf_counter() - began:.0f}s", flush=True)
        if sink:
            sink.write(json.dumps(result) + "\n")
            sink.flush()

    print(f"\n{env['device']}, Keras {env['keras']} ({env['backend']})"
          + (f", jax {env['jax']}" if "jax" in env else "") + f", TensorFlow imported: {env['tensorflow_imported']}")
    print(f"{'variant':60s} {'img/s':>9s} {'ms/step':>8s}")
    for label, r in results.items():
        print(f"{label:60s} {r['images_per_s']:9.1f} {r['step_ms']:8.2f}")
    print("\nratios (same process, same data):")
    for name, value in comparisons(variants, results):
        print(f"  {value:6.2f}  {name}")
    if sink:
        sink.write(json.dumps({"ratios": comparisons(variants, results),
                               "total_s": round(time.perf_counter() - began, 1)}) + "\n")
        sink.close()


if __name__ == "__main__":
    main()
