"""The one training loop every convlens script uses, plus evaluation and checkpoints.

- Device chosen once (`pick_device`): cuda, else mps, else cpu; bfloat16 autocast on CUDA.
- Whole uint8 datasets sit on the device; each step indexes a batch, augments and
  normalizes it there (see data.py).
- Progressive resizing (`low_res`, off by default): the first epochs train on downsampled
  images, which cost about (low_res / H)^2 of a full step, and the last ones at full size
  (Howard's fast.ai DAWNBench entry, 2018; FFCV); for networks that end in global or adaptive
  pooling, which take any image size.
- Deterministic: epoch e shuffles, augments and drops out from seeds derived from
  (seed, e), so a run resumed after epoch e continues exactly as if never stopped.
- Distributed: under `torchrun --nproc_per_node=N` the model is wrapped in
  DistributedDataParallel (nccl on CUDA, gloo on CPU) and every global batch, with its
  shifts and flips, is split across the N processes (so without batch norm and dropout they
  compute the one-process gradient); rank 0 alone writes files.
- A time budget (`time_budget`, --time-budget): before training, a few steps are timed on a copy
  of the model and the epochs set to as many as end the run within the budget
  (`fit_epochs_to_budget`); then training runs exactly as with that many epochs.
- A resumed run must match the saved one: the same training settings and the same training
  images (a hash of them), else it stops with the option to fix.
- Checkpoints hold the model's class name and constructor arguments, the class names and
  normalization, so `load_checkpoint` rebuilds the exact model from the file alone.
"""
import bisect
import contextlib
import copy
import csv
import ctypes
import dataclasses
import errno
import functools
import hashlib
import math
import os
import platform
import shutil
import sys
import time
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

import cli
import data
from cli import UserError
from files import atomic_path, code_hash, write_json
from hooks import eval_mode, hooks_set_aside
from cnn import CNN, GAPNet
from ffn import FFN

MODELS = {"FFN": FFN, "CNN": CNN, "GAPNet": GAPNet}
CHECKPOINT_FORMAT = "convlens-checkpoint-v1"


# ---- device, seeds, processes --------------------------------------------------------------

def pick_device(name: str = "auto") -> torch.device:
    """The --device to run on: "auto" takes CUDA, else Apple's MPS, else the CPU; a named device
    must exist here. Under torchrun each process takes the GPU of its LOCAL_RANK."""
    if name != "auto":
        device = _named_device(name)
    elif torch.cuda.is_available():
        device = torch.device("cuda")
    elif torch.backends.mps.is_available():
        device = torch.device("mps")
    else:
        device = torch.device("cpu")
    return _local_gpu(device, name) if device.type == "cuda" else device


def _local_gpu(device: torch.device, name: str) -> torch.device:
    local_rank, world = int(os.environ.get("LOCAL_RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    if world == 1:
        return device if device.index is not None else torch.device("cuda", 0)
    if device.index is not None:
        raise UserError(f"--device {name}: under torchrun every process takes the GPU of its LOCAL_RANK; "
                        "use --device cuda or auto")
    if local_rank >= torch.cuda.device_count():
        raise UserError(f"torchrun started process {local_rank} on a machine with {torch.cuda.device_count()} "
                        f"CUDA GPU(s); use --nproc_per_node={torch.cuda.device_count()} or fewer")
    return torch.device("cuda", local_rank)


def _named_device(name: str) -> torch.device:
    fix = "use --device auto, cpu, cuda, cuda:N or mps"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"--device {name!r} is not a device; {fix}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {name}: torch finds no CUDA GPU here (torch.cuda.is_available() is "
                        "False); use --device auto or cpu")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise UserError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA GPU(s); {fix}")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise UserError("--device mps: Apple's MPS is not available here; use --device auto or cpu")
    if device.type not in ("cpu", "cuda", "mps"):
        raise UserError(f"--device {name}: convlens runs on the CPU, CUDA or MPS; {fix}")
    return device


def setup_distributed(device: torch.device):
    """Join the torchrun process group when launched by torchrun; return (rank, world_size)."""
    world = os.environ.get("WORLD_SIZE", "1")
    launched = all(os.environ.get(k) for k in ("RANK", "MASTER_ADDR", "MASTER_PORT"))  # set by torchrun
    if not world.isdecimal() or (int(world) > 1 and not launched):
        raise UserError(f"WORLD_SIZE={world} is set, but this process was not started by torchrun (it sets RANK, "
                        "MASTER_ADDR and MASTER_PORT too); unset WORLD_SIZE, or launch with torchrun")
    if int(world) > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return rank_and_world()


@contextlib.contextmanager
def distributed(device: torch.device):
    """The block runs in torchrun's process group (if launched by torchrun); at its end the other
    processes wait for rank 0's evaluation and files, then every process leaves the group."""
    setup_distributed(device)
    try:
        yield
        if dist.is_initialized():
            dist.barrier()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def rank_and_world():
    return (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)


def is_main_process() -> bool:
    return rank_and_world()[0] == 0


def seed_everything(seed: int):
    torch.manual_seed(seed)  # also seeds CUDA
    if torch.cuda.is_available():  # same seed, same GPU: same numbers (cuDNN's deterministic kernels)
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True


def autocast(device: torch.device, cpu_bf16: bool = False):
    """Mixed precision on CUDA (bfloat16: no loss scaling needed); full precision elsewhere,
    unless cpu_bf16 (bfloat16 on a CPU with native support, e.g. AVX512-BF16/AMX, where its
    convolutions run faster than float32; see cpu_bf16_supported)."""
    if device.type == "cpu" and cpu_bf16:
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")


def precision(device: torch.device, cpu_bf16: bool) -> str:
    """What autocast(device, cpu_bf16) trains in, in words (for the console and metrics.json)."""
    return "bfloat16 autocast" if device.type == "cuda" or (device.type == "cpu" and cpu_bf16) else "float32"


@functools.cache
def keep_freed_memory() -> bool:
    """Let glibc's malloc keep freed memory for reuse (True where it could: Linux with glibc).

    By default glibc gives every block over 128 KiB (a threshold it raises to at most 32 MiB as
    blocks are freed) its own mmap and hands it back to the OS on free, so each training step's
    activations and gradients arrive as fresh pages the kernel must fault in and zero: measured
    10% of a float32 Fashion-MNIST CNN epoch and more of a single step (docs/experiments.md).
    Serving every block from the heap (no mmap at all: many glibc versions take no mmap threshold
    above 32 MiB, and a CIFAR-10 activation at batch 256 is larger) and never trimming it keeps
    those pages for reuse, the effect PyTorch's CPU
    performance guide gets from jemalloc or tcmalloc, at the cost of the process holding on to
    its peak memory until it exits. (Where the heap cannot grow, glibc still falls back to mmap.)"""
    if sys.platform != "linux" or platform.libc_ver()[0] != "glibc":
        return False
    M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # <malloc.h>
    libc = ctypes.CDLL(None)  # the C library this process already uses
    return bool(libc.mallopt(M_MMAP_MAX, 0) and libc.mallopt(M_TRIM_THRESHOLD, (1 << 31) - 1))


def cpu_bf16_supported() -> bool:
    """True where oneDNN runs bfloat16 natively (AVX512-BF16 or AMX); elsewhere it is emulated
    and slower than float32."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


# ---- models and checkpoints -----------------------------------------------------------------

def build_model(name: str, args: dict) -> nn.Module:
    """MODELS[name](**args), first built on the meta device (no memory) to check its arguments
    and that its weights fit in this machine's memory: a one-line error instead of an
    allocation failure."""
    if name not in MODELS:
        raise UserError(f"unknown model {name!r}; known models: {', '.join(MODELS)}")
    try:
        with torch.device("meta"):
            meta = MODELS[name](**args)
    except (TypeError, ValueError, RuntimeError) as err:  # an unknown or bad argument (RuntimeError: a size < 0)
        raise UserError(f"cannot build a {name} with {args}: {err}; check the model options "
                        "(or the checkpoint was written by other code: retrain it)") from None
    need = 4 * count_parameters(meta)  # float32 weights
    if need > available_memory():
        raise UserError(f"a {name} with {args} has {count_parameters(meta):,} parameters ({need / 2**30:.1f} GiB), "
                        f"more than this machine's free memory ({available_memory() / 2**30:.1f} GiB); "
                        "choose fewer or narrower layers")
    return MODELS[name](**args)


def available_memory(device="cpu") -> int:
    """Bytes free for tensors: the GPU's free memory, or the machine's available memory
    (MemAvailable in /proc/meminfo on Linux, else physical memory)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 1 << 62  # unknown: do not refuse


def check_trainable(model: nn.Module, cfg, image_shape, device):
    """Before training: refuse in one line what would crash later. Every resolution training
    shows the model ((C, H, W), and (C, low_res, low_res) in progressive resizing) must pass
    through it (one image, eval mode, no gradients, the model's own hooks set aside: a few
    milliseconds and no state changed), --crop must be smaller than the image, and weights,
    gradients, optimizer state and the activations of one batch must fit in the device's free
    memory (a lower estimate: 4 bytes a number, every layer's output kept for backward), so what
    is refused surely cannot train."""
    c, h, w = image_shape
    if cfg.crop >= min(h, w):
        raise UserError(f"--crop {cfg.crop} shifts {h}x{w} images by their whole size or more; "
                        f"use at most {min(h, w) - 1}")
    sizes = [(h, w)] + ([(cfg.low_res, cfg.low_res)] if may_train_low_res(cfg) else [])
    probe = unwrap(model)
    leaves = [m for m in probe.modules() if not list(m.children())]  # containers repeat their leaves
    activations = 0
    for size in sizes:
        outputs = []
        with hooks_set_aside(probe), eval_mode(probe), torch.no_grad():
            handles = [m.register_forward_hook(lambda m, i, o: outputs.append(o.numel() if torch.is_tensor(o) else 0))
                       for m in leaves]
            try:
                probe(torch.zeros(1, c, *size, device=next(probe.parameters(), torch.empty(0, device=device)).device))
            except (RuntimeError, ValueError) as err:
                what = f"{h}x{w} images" if size == (h, w) else f"the {size[0]}x{size[1]} images of --low-res {size[0]}"
                raise UserError(f"the network cannot take {what} "
                                f"({str(err).splitlines()[0][:120]}); use fewer pooling stages (fewer --channels) "
                                "or a larger --low-res (or 0: off)") from None
            finally:
                for handle in handles:
                    handle.remove()
        activations = max(activations, sum(outputs) * cfg.batch_size)
    need = 4 * (4 * count_parameters(model) + activations)  # weights, grads, 2 optimizer moments, saved outputs
    free = available_memory(device)
    if need > free:
        raise UserError(f"training this network needs about {need / 2**30:.1f} GiB, more than the "
                        f"{free / 2**30:.1f} GiB free on {device}; use a smaller --batch-size or narrower "
                        "layers (--channels, --hidden)")


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module under DistributedDataParallel and torch.compile wrappers."""
    model = getattr(model, "module", model)
    return getattr(model, "_orig_mod", model)


def save_checkpoint(path, state: dict):
    """Write `state` atomically (temporary file, then rename), stamped with the format marker and
    the hash of the code that made it (a --resume refuses a checkpoint of other code)."""
    with atomic_path(path) as tmp:
        try:
            torch.save({"format": CHECKPOINT_FORMAT, "code": running_code(), **state}, tmp)
        except RuntimeError as err:  # torch's zip writer reports a failed write as "unexpected pos"
            if "unexpected pos" in str(err) or "write" in str(err).lower():
                raise OSError(errno.ENOSPC if _disk_full(tmp) else errno.EIO,
                              "could not write the checkpoint", str(path)) from None
            raise


def _disk_full(path) -> bool:
    return shutil.disk_usage(Path(path).parent).free < 1 << 20


@functools.cache
def running_code() -> str:
    """Hash of the code this process runs: training.py, the script (when it is one of ours) and
    every repository module they import (files.code_hash)."""
    main_file = getattr(sys.modules.get("__main__"), "__file__", None)
    scripts = [Path(__file__)] + ([Path(main_file)] if main_file and Path(main_file).resolve().parent
                                  == Path(__file__).resolve().parent else [])
    return code_hash(*scripts)


# What a convlens checkpoint holds (type of each value): the MODEL always; what load_checkpoint's
# callers read about its data (DESCRIBED); and what --resume needs (TRAINING).
MODEL = {"model": dict, "state_dict": dict}
DESCRIBED = {"dataset": str, "classes": list, "mean": list, "std": list}
TRAINING = {"epoch": int, "optimizer": dict, "scheduler": dict, "config": dict, "history": dict}
LOAD_FIX = "train one with fashionmnist.py or cifar10.py, or pass --checkpoint with a convlens model.pt"
DAMAGED = "is damaged: retrain or restore it"


def read_checkpoint(path, fix: str = LOAD_FIX, need: dict = MODEL) -> dict:
    """The checkpoint dict, checked once here: a readable zip whose every member matches its CRC
    (a flipped byte is found, not loaded), safe unpickling, the convlens marker, and the keys of
    `need` (MODEL, DESCRIBED, TRAINING) with their types: a known model, N_CLASSES class names,
    one finite mean and positive std per channel, finite weights. Anything else is a one-line
    UserError: "damaged: retrain or restore it", or ending in `fix` (what the caller's user can do)."""
    if not os.path.isfile(path):
        raise UserError(f"no checkpoint at {path}; {fix}")
    try:
        with zipfile.ZipFile(path) as z:  # torch.save writes a zip archive
            bad = z.testzip()  # the first member whose CRC-32 does not match, or None
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, RuntimeError):
        raise UserError(f"{path} is not a readable checkpoint (not the zip archive torch.save writes: "
                        f"another kind of file, or cut short); {fix}") from None
    if bad is not None:
        raise UserError(f"{path} {DAMAGED} (its part {bad.split('/', 1)[-1]} fails its checksum)")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated zip, pickle with forbidden globals, not a torch file
        why = ("it holds Python objects that safe loading (weights_only=True) refuses"
               if "Weights only load failed" in str(err) else (str(err).strip() or type(err).__name__)
               .splitlines()[0][:150])
        raise UserError(f"{path} is not a readable checkpoint ({why}); {fix}") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise UserError(f"{path} is not a convlens checkpoint (no '{CHECKPOINT_FORMAT}' marker); {fix}")
    _check_schema(path, ckpt, need)
    return ckpt


def _check_schema(path, ckpt: dict, schema: dict):
    def refuse(what):
        raise UserError(f"{path} {DAMAGED} ({what})")
    for key, kind in schema.items():
        if not isinstance(ckpt.get(key), kind) or isinstance(ckpt.get(key), bool):
            refuse(f"'{key}' is missing or not a {kind.__name__}")
    model = ckpt.get("model", {})
    if "model" in schema and (not isinstance(model.get("name"), str) or not isinstance(model.get("args"), dict)):
        refuse("'model' lacks its name or arguments")
    if "model" in schema and model["name"] not in MODELS:
        refuse(f"unknown model {model['name']!r}")
    if "classes" in schema and (len(ckpt["classes"]) != data.N_CLASSES
                                or not all(isinstance(c, str) for c in ckpt["classes"])):
        refuse(f"'classes' is not {data.N_CLASSES} class names (it has {len(ckpt['classes'])} entries)")
    if "mean" in schema and not (len(ckpt["mean"]) == len(ckpt["std"]) >= 1 and all(isinstance(v, (int, float)) and math.isfinite(v)
                                                             for v in ckpt["mean"] + ckpt["std"])
            and min(ckpt["std"]) > 0):
        refuse("its normalization (mean, std) is not one finite number per channel")
    for name, tensor in ckpt.get("state_dict", {}).items():
        if not torch.is_tensor(tensor):
            refuse(f"weight {name} is not a tensor")
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            refuse(f"weight {name} holds NaN or infinite values")


def load_checkpoint(path, device="cpu"):
    """Rebuild the saved model in eval mode on `device`; return (model, checkpoint dict)."""
    ckpt = read_checkpoint(path)
    try:
        model = build_model(ckpt["model"]["name"], ckpt["model"]["args"])
    except UserError as err:
        raise UserError(f"{path} {DAMAGED} ({err})") from None
    try:
        model.load_state_dict(ckpt["state_dict"])
    except RuntimeError as err:
        raise UserError(f"{path}: weights do not fit a {ckpt['model']['name']} with the saved arguments "
                        f"({str(err).splitlines()[0]}); the file {DAMAGED}") from None
    _check_schema(path, ckpt, DESCRIBED)
    _check_takes_its_images(path, model, ckpt)
    return model.to(device).eval(), ckpt


def _check_takes_its_images(path, model, ckpt):
    """The network takes images of its checkpoint's dataset, one normalization value per channel:
    a mismatch (a hand-edited or mixed-up file) is a one-line error, not a failure deep in a conv."""
    if ckpt["dataset"] not in data.DATASETS:
        return
    shape = data.image_shape(ckpt["dataset"])  # (C, H, W)
    if len(ckpt["mean"]) != shape[0]:
        raise UserError(f"{path} {DAMAGED} ({len(ckpt['mean'])} normalization values for "
                        f"{shape[0]}-channel {ckpt['dataset']} images)")
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, *shape))  # (1, C, H, W)
    except RuntimeError:
        raise UserError(f"{path} {DAMAGED} (its {ckpt['model']['name']} does not take the {shape[1]}x{shape[2]} "
                        f"{shape[0]}-channel images of {ckpt['dataset']}, the dataset it names)") from None


# ---- evaluation -------------------------------------------------------------------------------

EVAL_BATCH = 256  # images per evaluation batch (predict)


@torch.inference_mode()
def predict(model, x, mean, std, device, batch_size=EVAL_BATCH, full_precision=False) -> torch.Tensor:
    """Logits (N, classes) as float32 on the CPU for uint8 images x (N, C, H, W).

    full_precision: no bfloat16 autocast, on CUDA either (it changes the argmax of 12-17 of the
    10,000 CIFAR-10 test images; saliency.py chooses and titles its examples in float32).
    batch_size 256, not larger: a small batch's activations stay in the CPU's cache, which makes
    inference faster per image than at 1,000."""
    model.eval()
    out = []
    for i in range(0, len(x), batch_size):
        xb = data.normalize(x[i:i + batch_size].to(device), mean, std)
        with contextlib.nullcontext() if full_precision else autocast(device):
            out.append(model(xb).float().cpu())
    return torch.cat(out)


def predict_flip(model, x, mean, std, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits (N, classes) of each image, and the mean of those and its left-right mirror image's
    (flip test-time augmentation: training flips images too, so both are inputs the network knows).
    One pass over the images and one over their mirrors."""
    plain = predict(model, x, mean, std, device)
    return plain, (plain + predict(model, x.flip(3), mean, std, device)) / 2


def choose_examples(pred: torch.Tensor, y: torch.Tensor, n: int, seed: int):
    """Indices of n test images, half correctly and half wrongly classified (fewer wrong ones
    only if there are not enough), drawn with `seed`; correct ones first. Returns (idx, correct)."""
    g = torch.Generator().manual_seed(seed)
    right, wrong = (pred == y).nonzero()[:, 0], (pred != y).nonzero()[:, 0]
    n_wrong = min(n // 2, len(wrong))
    n_right = min(n - n_wrong, len(right))
    n_wrong = min(n - n_right, len(wrong))
    draw = lambda pool, k: pool[torch.randperm(len(pool), generator=g)[:k]].sort().values
    idx = torch.cat([draw(right, n_right), draw(wrong, n_wrong)])
    return idx, pred[idx] == y[idx]


def metrics_from_logits(logits: torch.Tensor, y: torch.Tensor) -> dict:
    y = y.to(logits.device)  # predict's logits are on the CPU; fit's labels may be on the GPU
    return {"loss": F.cross_entropy(logits, y).item(),
            "accuracy": (logits.argmax(1) == y).float().mean().item()}


def evaluate(model, x, y, mean, std, device) -> dict:
    return metrics_from_logits(predict(model, x, mean, std, device), y)


# ---- training ---------------------------------------------------------------------------------

@dataclass
class TrainConfig:
    epochs: int = 10
    batch_size: int = 256
    lr: float = 0.05              # peak learning rate of the one-cycle schedule
    optimizer: str = "sgd"        # "sgd" (Nesterov momentum), "adamw", or "muon" (Muon on conv filters)
    muon_lr: float = 0.1          # peak learning rate of the conv filters under "muon"
    momentum: float = 0.9
    weight_decay: float = 5e-4
    label_smoothing: float = 0.0
    warmup: float = 0.2           # fraction of steps spent rising to the peak lr
    flip: bool = False            # random horizontal flips
    crop: int = 0                 # random shifts of up to `crop` pixels (pad + crop)
    seed: int = 0
    channels_last: bool = False   # NHWC memory layout (faster convolutions on CUDA and oneDNN)
    cpu_bf16: bool = False        # bfloat16 autocast on the CPU too (CUDA always uses it)
    compile: bool = False         # torch.compile the training model (worth it on a GPU)
    low_res: int = 0              # progressive resizing: the first low_res_fraction of the epochs
    low_res_fraction: float = 0.5  # see images downsampled to low_res x low_res (0: off)
    time_budget: float | None = None  # seconds for the whole run: fit chooses `epochs` (--time-budget)

    @property
    def low_res_epochs(self) -> int:
        return int(self.epochs * self.low_res_fraction) if self.low_res else 0


def may_train_low_res(cfg: TrainConfig) -> bool:
    """Whether training shows the model low_res images: some of its epochs do, or a time budget
    has yet to choose the epochs (and any low_res_fraction > 0 may give some)."""
    return bool(cfg.low_res_epochs or (cfg.time_budget is not None and cfg.low_res and cfg.low_res_fraction > 0))


def config_from_args(args, device, seed: int | None = None) -> TrainConfig:
    """TrainConfig from parsed arguments (cli.add_training_args plus the script's DEFAULTS).
    bfloat16 on the CPU defaults to on where the CPU runs it natively."""
    fields = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)
              if getattr(args, f.name, None) is not None}
    fields["seed"] = args.seed if seed is None else seed
    cpu_bf16 = cpu_bf16_supported() if args.cpu_bf16 is None else args.cpu_bf16
    fields["cpu_bf16"] = cpu_bf16 and device.type == "cpu"
    fields["channels_last"] = args.channels_last is not False  # measured faster on CPU and CUDA
    return TrainConfig(**fields)


def write_history(out_dir, history: dict):
    """history.csv (one row per epoch) and steps.csv (loss and learning rate per step), atomically."""
    rows = history["epochs"]
    with atomic_path(Path(out_dir) / "history.csv") as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(dict.fromkeys(k for row in rows for k in row)))  # every row's
        writer.writeheader()
        writer.writerows(rows)
    with atomic_path(Path(out_dir) / "steps.csv") as tmp, open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["step", "loss", "lr"])
        writer.writerows(zip(range(1, len(history["step_loss"]) + 1), history["step_loss"], history["step_lr"]))


def finish_run(out_dir, metrics: dict, history: dict):
    """metrics.json, the checkpoint with the final metrics added, history.csv and steps.csv.
    Where --time-budget chose the epochs, metrics gets its record ("time_budget") and the
    config's "epochs" (the script's default until then) the epochs trained."""
    if "time_budget" in history:
        config = metrics.get("config")
        metrics = {**metrics, "time_budget": history["time_budget"]}
        if isinstance(config, dict):
            metrics["config"] = {**config, "epochs": history["time_budget"]["epochs"]}
    ckpt_path = Path(out_dir) / "model.pt"
    write_json(Path(out_dir) / "metrics.json", metrics)
    save_checkpoint(ckpt_path, {**read_checkpoint(ckpt_path), "metrics": metrics})
    write_history(out_dir, history)


def make_optimizer(model, cfg: TrainConfig):
    """The optimizer of cfg.optimizer. Its parameter groups start at their peak learning rates,
    which make_scheduler then schedules; the first group is the weights at cfg.lr."""
    # No weight decay on biases and norm parameters (1-D tensors), as is usual.
    filters = [p for p in model.parameters() if p.ndim == 4] if cfg.optimizer == "muon" else []
    muon_ids = {id(p) for p in filters}
    decay = [p for p in model.parameters() if p.ndim > 1 and id(p) not in muon_ids]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=True)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr)
    if cfg.optimizer == "muon":
        if not filters:
            raise UserError("--optimizer muon trains convolution filters and this network has none; "
                            "use --optimizer sgd or adamw")
        renormalize = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
        groups.append({"params": filters, "lr": cfg.muon_lr, "momentum": MUON_MOMENTUM, "weight_decay": 0.0,
                       "orthogonalize": True, "renormalize": renormalize})
        return Muon(groups, lr=cfg.lr, momentum=cfg.momentum)
    raise UserError(f"unknown optimizer {cfg.optimizer!r}; use sgd, adamw or muon")


# Muon's momentum for the conv filters, lower than SGD's (airbench94_muon uses 0.6).
MUON_MOMENTUM = 0.6


class Muon(torch.optim.Optimizer):
    """Muon (Jordan et al. 2024, as airbench94_muon uses it) on the conv filters, Nesterov SGD on
    the rest. For a filter bank W (C_out, C_in, k, k) the step is the Nesterov momentum M made
    orthogonal: M = U S V^T as a (C_out, C_in k k) matrix becomes about U V^T, every direction
    moved at the same rate. Where batch norm follows the convs, W's scale does not change what
    the net computes, so each step first rescales W to norm sqrt(C_out), the norm of an
    orthogonal step, which keeps the step at a fixed fraction (the learning rate) of the weight.
    Groups without "orthogonalize" take torch.optim.SGD's Nesterov step with L2 weight decay.
    torch.optim.Muon takes 2-D parameters only; here a conv weight is viewed as its matrix."""

    def __init__(self, params, lr: float, momentum: float):
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=0.0,
                                      orthogonalize=False, renormalize=False))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad.add(p, alpha=group["weight_decay"]) if group["weight_decay"] else p.grad
                state = self.state[p]
                if "momentum_buffer" not in state:  # made once, not a zeros_like each step
                    state["momentum_buffer"] = torch.zeros_like(p)
                buf = state["momentum_buffer"]
                buf.mul_(group["momentum"]).add_(grad)
                update = grad.add(buf, alpha=group["momentum"])  # Nesterov
                if group["orthogonalize"]:
                    if group["renormalize"]:
                        p.mul_(len(p) ** 0.5 / p.norm())
                    update = orthogonalize(update.reshape(len(p), -1)).view_as(p)  # (C_out, C_in k k)
                p.add_(update, alpha=-group["lr"])


def orthogonalize(m: torch.Tensor, steps: int = 5) -> torch.Tensor:
    """About U V^T for m = U S V^T (rows, cols): Jordan et al.'s quintic Newton-Schulz iteration
    X <- (a I + b A + c A^2) X, A = X X^T, from X = m / ||m||_F, whose coefficients push every
    singular value into about [0.7, 1.2] in 5 steps (not exactly 1; it trains as well).
    Every X is Q X_0 for a small (r, r) matrix Q (r the shorter side), and with
    P = a I + b A + c A^2 the next A is P A P, so the steps run on the Gram matrix and X_0 is
    multiplied once at the end: for a (192, 1728) filter bank 40% of the multiply-adds of
    iterating on X itself."""
    a, b, c = 3.4445, -4.7750, 2.0315
    x = m / (m.norm() + 1e-7)
    tall = x.size(0) > x.size(1)
    if tall:
        x = x.T                                       # (r, n), r <= n
    A = x @ x.T                                       # (r, r)
    eye = torch.eye(len(A), dtype=A.dtype, device=A.device)
    Q = eye
    for _ in range(steps):
        P = a * eye + b * A + c * A @ A
        Q = P @ Q
        A = P @ A @ P
    x = Q @ x
    return x.T if tall else x


def make_scheduler(optimizer, cfg: TrainConfig, total_steps: int):
    """One-cycle: linear warm-up to each parameter group's peak (its learning rate when the
    optimizer was made: cfg.lr, and cfg.muon_lr for Muon's filters), then linear decay to ~0
    (Smith & Topin 2017).

    OneCycleLR's warm-up ends at step pct_start * total - 1 and it divides by that: zero when the
    warm-up is exactly one step (e.g. 5 steps at 0.2), so such a schedule starts at its peak
    (no warm-up; a one-step warm-up would have done the same)."""
    total = max(total_steps, 1)
    warmup = 0.0 if math.isclose(cfg.warmup * total, 1.0) else cfg.warmup
    return torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=[group["lr"] for group in optimizer.param_groups], total_steps=total, pct_start=warmup,
        anneal_strategy="linear", cycle_momentum=False, div_factor=10, final_div_factor=100)


class TrainingError(UserError):
    pass


def fit(model, x, y, cfg: TrainConfig, *, mean, std, device, evals=None, checkpoint=None,
        meta=None, resume=False, desc="train", train_eval_images=2000, final_eval_images=None) -> dict:
    """Train `model` on uint8 images x (N, C, H, W) and labels y (N,); return the history.

    evals: {"val": (x, y), ...} evaluated after every epoch (curves only: the caller decides
    which split may be used for choices). After each epoch the model, optimizer, schedule
    and history are saved atomically to `checkpoint` with `meta` (model name/args, classes...).

    Each epoch's row also has train_eval_loss/accuracy: a fixed, seeded subset of
    `train_eval_images` training images (all, if fewer) measured as the evals are (plain
    cross-entropy, eval mode, no augmentation, no label smoothing), so validation minus
    train_eval loss is an overfitting gap; train_loss is the running mean over the epoch's
    augmented batches, dropout on, with label smoothing. 2,000 images give the mean loss to
    about 0.02 (a standard error of 0.5-1 over sqrt(2,000)) for 40% of a 5,000-image
    validation pass (a 32x32 CIFAR-10 pass of 5,000 images takes about 2 s on 2 float32 cores).
    And image_size: the side length its training images had (cfg.low_res in progressive resizing).

    cfg.time_budget (seconds, --time-budget): before training, time a few steps and set
    cfg.epochs to as many epochs as fit in the budget (fit_epochs_to_budget; history["time_budget"]
    records the choice). final_eval_images: the images the caller evaluates after training, with
    flip TTA (default: those of every evals split), which the budget must leave time for.
    """
    evals = evals or {}
    rank, world = rank_and_world()
    if cfg.batch_size % world:
        raise UserError(f"--batch-size {cfg.batch_size} does not split evenly across {world} processes; "
                        f"use a multiple of {world} (the batch is global)")
    if device.type == "cpu":
        keep_freed_memory()
    check_trainable(model, cfg, x.shape[1:], device)
    budget = None
    if cfg.time_budget is not None:  # sets cfg.epochs, before the schedule is built for them
        n_evals = [min(train_eval_images, len(x))] + [len(xe) for xe, _ in evals.values()]
        n_final = sum(n_evals[1:]) if final_eval_images is None else final_eval_images
        budget = fit_epochs_to_budget(model, x, y, cfg, mean=mean, std=std, device=device, eval_images=n_evals,
                                      final_eval_images=n_final, resume=resume)
    steps_per_epoch = max(len(x) // cfg.batch_size, 1)  # drop the last partial batch
    optimizer = make_optimizer(model, cfg)
    scheduler = make_scheduler(optimizer, cfg, cfg.epochs * steps_per_epoch)
    history = {"step_loss": [], "step_lr": [], "epochs": [], "seconds": 0.0}
    t_fit, start, fingerprint = time.perf_counter(), 0, data_fingerprint(x, y) if checkpoint else None
    if resume:
        start, history = _resume(checkpoint, model, optimizer, scheduler, meta, cfg, len(x), fingerprint)
    if budget:
        history["time_budget"] = budget
    _check_same_start(start, device)
    seconds_before = history.get("seconds", 0.0)  # of the sessions before a --resume
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)  # in place: parameters keep their identity
    train_model = nn.parallel.DistributedDataParallel(model) if world > 1 else model
    if cfg.compile:
        train_model = torch.compile(train_model)
    x, y = x.to(device), y.to(device)
    mean, std = torch.tensor(mean, device=device), torch.tensor(std, device=device)  # copied once
    train_eval = train_eval_subset(len(x), train_eval_images, cfg.seed)
    history["train_eval_images"] = len(train_eval)
    x_train_eval, y_train_eval = x[train_eval.to(device)], y[train_eval.to(device)]  # (n, C, H, W), (n,)
    for epoch in range(start, cfg.epochs):
        t0 = time.perf_counter()
        stats = train_epoch(train_model, x, y, optimizer, scheduler, cfg, epoch=epoch, steps=steps_per_epoch,
                            mean=mean, std=std, device=device, desc=desc)
        history["step_loss"] += stats.pop("step_loss")
        history["step_lr"] += stats.pop("step_lr")
        low_res = epoch < cfg.low_res_epochs
        row = {"epoch": epoch + 1, "image_size": cfg.low_res if low_res else x.shape[-1], **stats}  # trained at
        _sync_buffers(model)  # every process evaluates (and keeps) rank 0's batch-norm statistics
        for name, (xe, ye) in {"train_eval": (x_train_eval, y_train_eval), **evals}.items():
            for key, value in evaluate(model, xe, ye, mean, std, device).items():
                row[f"{name}_{key}"] = value
        row["seconds"] = time.perf_counter() - t0
        _check_finite_evals(row, epoch, cfg)
        history["epochs"].append(row)
        history["seconds"] = seconds_before + time.perf_counter() - t_fit  # training wall time, all sessions
        if rank == 0:
            tqdm.write(format_epoch(row, cfg.epochs, cfg.low_res if low_res else None))
            if checkpoint:
                save_checkpoint(checkpoint, {
                    **(meta or {}), "state_dict": unwrap(model).state_dict(), "epoch": epoch + 1,
                    "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                    "config": asdict(cfg), "train_images": len(x), "train_data": fingerprint,
                    "history": history})
    return history


def train_eval_subset(n: int, size: int, seed: int) -> torch.Tensor:
    """Indices (sorted) of the `size` training images (all n if fewer) whose loss is measured in
    eval mode after every epoch; the same for every epoch and for a resumed run (from the seed)."""
    if size >= n:
        return torch.arange(n)
    generator = torch.Generator().manual_seed(seed * 100_003 + 99_991)  # apart from the epochs' seeds
    return torch.randperm(n, generator=generator)[:size].sort().values


def train_epoch(model, x, y, optimizer, scheduler, cfg, *, epoch, steps, mean, std, device, desc):
    """One pass over a seeded permutation of the data; returns per-step losses and averages.

    Every process draws the same permutation and augmentation for each whole global batch and
    takes its shard [rank::world] of both, so N processes see exactly the images, shifts and
    flips of one process. Everything random is drawn on the CPU once per epoch and moved to the
    device in one copy: a per-step copy would make the CPU wait for the GPU at every step."""
    rank, world = rank_and_world()
    generator = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)  # shuffle + augment
    torch.manual_seed(cfg.seed * 100_003 + epoch + 1 + 7_919 * rank)       # dropout, per process
    order = torch.randperm(len(x), generator=generator)
    batch = min(cfg.batch_size, len(x))  # smaller only when the data is (one step of it all)
    drawn = [data.draw_augmentation(batch, generator, cfg.flip, cfg.crop) for _ in range(steps)]
    drawn = {k: torch.stack([d[k] for d in drawn])[:, rank::world].to(device)  # (steps, B / world, ...)
             for k in drawn[0]}
    order = order.to(device)
    model.train()
    losses, lrs, correct, seen = [], [], torch.zeros((), dtype=torch.int64, device=device), 0
    # disable=None: a bar only on a terminal; a log file gets the epoch lines, not a redraw per step
    bar = tqdm(range(steps), desc=f"{desc} {epoch + 1}/{cfg.epochs}", leave=False,
               disable=True if rank != 0 else None, dynamic_ncols=True)
    for step in bar:
        idx = order[step * cfg.batch_size:(step + 1) * cfg.batch_size][rank::world]   # (B / world,)
        logits, loss = train_step(model, optimizer, x, y, idx, {k: v[step] for k, v in drawn.items()}, cfg,
                                  mean=mean, std=std, device=device, low_res=epoch < cfg.low_res_epochs)
        lrs.append(scheduler.get_last_lr()[0])
        scheduler.step()
        losses.append(loss.detach())
        correct += (logits.argmax(1) == y[idx]).sum()
        seen += len(idx)
        if step % 20 == 19 or step == steps - 1:  # sync with the device only now and then
            recent = torch.stack(losses[-20:]).float()
            _check_finite(recent, epoch, step, cfg)
            bar.set_postfix(loss=f"{recent.mean():.3f}", lr=f"{lrs[-1]:.3g}")
    step_loss = torch.stack(losses).float()
    counts = torch.stack([correct, torch.tensor(seen, device=device)])
    if world > 1:  # average the logged loss and sum the counts over processes (on the device: nccl)
        dist.all_reduce(step_loss)
        step_loss /= world
        dist.all_reduce(counts)
    correct, seen = counts.tolist()
    return {"step_loss": step_loss.cpu().tolist(),
            "step_lr": lrs,
            "train_loss": step_loss.mean().item(), "train_accuracy": correct / seen,
            "samples": seen}


def train_step(model, optimizer, x, y, idx, drawn: dict, cfg, *, mean, std, device, low_res: bool):
    """One optimizer step on the images x[idx] (B, C, H, W) augmented by `drawn` (one step's
    share of data.draw_augmentation), at cfg.low_res when low_res; returns (logits (B, classes), loss)."""
    xb = data.augment(x[idx], cfg.crop, **drawn)
    xb = data.normalize(xb, mean, std)
    if low_res:  # (B, C, low_res, low_res): about (low_res / H)^2 of the compute
        xb = F.interpolate(xb, size=cfg.low_res, mode="bilinear", antialias=True)
    if cfg.channels_last:
        xb = xb.contiguous(memory_format=torch.channels_last)  # (B, C, H, W), stored NHWC
    with autocast(device, cfg.cpu_bf16):
        logits = model(xb)                                      # (B, classes)
        loss = F.cross_entropy(logits.float(), y[idx], label_smoothing=cfg.label_smoothing)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return logits, loss


def _sync_buffers(model):
    """Under torchrun, copy rank 0's buffers (batch-norm running statistics, which each process
    updated on its own shard) to every process, so all evaluate, and keep, the same model."""
    if rank_and_world()[1] > 1:
        for buffer in unwrap(model).buffers():
            dist.broadcast(buffer, 0)


def _check_same_start(start: int, device):
    """Under torchrun, every process must resume from the same epoch (each reads the checkpoint
    itself), else they would wait on each other forever in mismatched collectives."""
    if rank_and_world()[1] > 1:
        ends = torch.tensor([start, -start], device=device)
        dist.all_reduce(ends, op=dist.ReduceOp.MAX)  # (max start, -min start)
        if ends[0] != -ends[1]:
            raise UserError(f"--resume: the processes found checkpoints of different epochs ({-ends[1].item()} "
                            f"to {ends[0].item()}); on several machines --out-dir must be one shared folder")


def _check_finite(losses, epoch, step, cfg):
    bad = ~torch.isfinite(losses)
    stop = bad.any().float()
    if dist.is_initialized():  # stop every process together, or the others wait forever in the next all-reduce
        dist.all_reduce(stop, op=dist.ReduceOp.MAX)
    if stop.item():
        value = losses[bad][0].item() if bad.any() else "nan/inf in another process"
        raise TrainingError(f"loss became {value} near step {step + 1} of epoch {epoch + 1}; "
                            f"training diverged: lower --lr (now {cfg.lr})")


def _check_finite_evals(row, epoch, cfg):
    """A training loss can stay finite (1e15) while the weights are already useless: the
    evaluation after the epoch says so with a NaN/inf loss."""
    bad = [k for k, v in row.items() if k.endswith("_loss") and not math.isfinite(v)]
    if bad:
        raise TrainingError(f"{bad[0].replace('_', ' ')} became {row[bad[0]]} after epoch {epoch + 1} "
                            f"(train loss {row['train_loss']:.3g}); training diverged: lower --lr (now {cfg.lr})")


# ---- a time budget (--time-budget) --------------------------------------------------------------

TIMED_STEPS = 3  # steps timed after one warm-up step (the first is slow: memory, kernel choice)
# After training: metrics, checkpoint and figure files (matplotlib's import and drawing), a fixed
# allowance on top of the final evaluation, which is timed.
AFTER_TRAINING_SECONDS = 10.0
# The most epochs a budget may choose: the defaults train 4-25, and a one-cycle schedule stretched
# over far more would spend a huge budget on nothing (a budget of 1e9 s must not mean 10^8 epochs).
MAX_BUDGET_EPOCHS = 100


def fit_epochs_to_budget(model, x, y, cfg, *, mean, std, device, eval_images, final_eval_images,
                         resume=False) -> dict:
    """Set cfg.epochs to the most epochs the run can train and still end within cfg.time_budget
    seconds of the process's start; print the choice and return it with its estimate (for the
    history and metrics.json).

    eval_images: the images evaluated after every epoch, per split (train_eval first);
    final_eval_images: those evaluated after training with flip TTA (two passes each)."""
    if resume or rank_and_world()[1] > 1:
        raise UserError("--time-budget times one fresh run in one process; give --epochs instead")
    times = time_steps(model, x, y, cfg, mean=mean, std=std, device=device)
    steps = max(len(x) // cfg.batch_size, 1)
    eval_batch = times["eval_batch_seconds"]
    evals = sum(math.ceil(n / EVAL_BATCH) for n in eval_images) * eval_batch  # after every epoch
    epoch = steps * times["step_seconds"] + evals
    low = steps * times["low_res_step_seconds"] + evals if "low_res_step_seconds" in times else None
    after = 2 * math.ceil(final_eval_images / EVAL_BATCH) * eval_batch + AFTER_TRAINING_SECONDS
    spent = cli.seconds_since_start()  # imports, data, model and the timing above
    cfg.epochs = epochs_within_budget(cfg.time_budget, spent, epoch, after, low, cfg.low_res_fraction)
    n_low = cfg.low_res_epochs if low is not None else 0
    total = run_seconds(cfg.epochs, spent, epoch, after, low, cfg.low_res_fraction)
    record = {"budget_seconds": cfg.time_budget, "epochs": cfg.epochs, "low_res_epochs": n_low, **times,
              "epoch_seconds": epoch, "low_res_epoch_seconds": low, "spent_seconds": spent,
              "after_seconds": after, "estimated_seconds": total}
    if is_main_process():
        tqdm.write(budget_line(record, cfg.low_res))
    return {k: round(v, 6) if isinstance(v, float) else v for k, v in record.items()}


def budget_line(record: dict, low_res: int) -> str:
    """'--time-budget 120 s: 7 epochs (about 14.2 s each, 104 s in all)'."""
    each = f"about {record['epoch_seconds']:.1f} s each"
    if record["low_res_epochs"]:
        each = (f"{record['low_res_epochs']} at {low_res}x{low_res} about {record['low_res_epoch_seconds']:.1f} s "
                f"each, {record['epochs'] - record['low_res_epochs']} about {record['epoch_seconds']:.1f} s each;")
    else:
        each += ","
    capped = ", the most it chooses" if record["epochs"] == MAX_BUDGET_EPOCHS else ""
    return (f"--time-budget {record['budget_seconds']:g} s: {record['epochs']} epoch{'s' * (record['epochs'] > 1)}"
            f"{capped} ({each} {record['estimated_seconds']:.0f} s in all)")


def run_seconds(e: int, spent: float, epoch_seconds: float, after_seconds: float,
                low_res_epoch_seconds: float | None = None, low_res_fraction: float = 0.0) -> float:
    """Seconds of a whole run of e epochs: spent + (e epochs) + after_seconds, where
    int(e * low_res_fraction) of the epochs cost low_res_epoch_seconds (progressive resizing;
    None: no low-res epochs) and the others epoch_seconds."""
    n_low = int(e * low_res_fraction) if low_res_epoch_seconds is not None else 0
    return spent + n_low * (low_res_epoch_seconds or 0.0) + (e - n_low) * epoch_seconds + after_seconds


def epochs_within_budget(budget: float, spent: float, epoch_seconds: float, after_seconds: float,
                         low_res_epoch_seconds: float | None = None, low_res_fraction: float = 0.0) -> int:
    """The largest E >= 1, at most MAX_BUDGET_EPOCHS, with run_seconds(E, ...) <= budget (all in
    seconds). A UserError if not even one epoch fits."""
    def seconds_of(e: int) -> float:
        return run_seconds(e, spent, epoch_seconds, after_seconds, low_res_epoch_seconds, low_res_fraction)

    if seconds_of(1) > budget:
        raise UserError(f"--time-budget {budget:g} s is too short: one epoch takes about {epoch_seconds:.1f} s here "
                        f"(with {spent:.0f} s spent before training and about {after_seconds:.0f} s needed after it); "
                        f"give a larger budget, at least {math.ceil(seconds_of(1))} s, or make an epoch shorter "
                        "with --limit")
    # seconds_of grows with every epoch added (by a low-res or a full epoch), so bisect finds the
    # largest E; an E past `most` costs more than the budget even if every epoch were the cheaper one.
    cheapest = min(epoch_seconds, low_res_epoch_seconds or epoch_seconds)
    most = min(int((budget - spent - after_seconds) / max(cheapest, 1e-9)) + 1, MAX_BUDGET_EPOCHS)
    return bisect.bisect_right(range(1, most + 1), budget, key=seconds_of)


def time_steps(model, x, y, cfg, *, mean, std, device, steps=TIMED_STEPS) -> dict:
    """Seconds of one training step (step_seconds: forward, loss, backward, optimizer step), of
    one at cfg.low_res where training may use it (low_res_step_seconds) and of predicting one
    evaluation batch in eval mode (eval_batch_seconds), each the mean of `steps` after one
    warm-up step not counted, timed here on a batch of x with the run's batch size, device,
    precision and memory layout (uncompiled: compiling would take longer than the steps).

    All on a deep copy of the model with a fresh optimizer, the batch drawn from a generator of
    its own, inside fork_rng: the model, its batch-norm statistics and the random streams training
    draws from stay as they were, so the run then trains exactly as with --epochs set to the choice."""
    probe = copy.deepcopy(unwrap(model))
    if cfg.channels_last:
        probe.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(probe, cfg)
    mean_d, std_d = torch.tensor(mean, device=device), torch.tensor(std, device=device)
    generator = torch.Generator().manual_seed(cfg.seed)
    batch = min(cfg.batch_size, len(x))
    idx = torch.randperm(len(x), generator=generator)[:batch]                          # (B,)
    drawn = {k: v.to(device) for k, v in data.draw_augmentation(batch, generator, cfg.flip, cfg.crop).items()}
    xd, yd, idx = x[idx].to(device), y[idx].to(device), torch.arange(batch, device=device)  # (B, C, H, W), (B,)
    sizes = {"step_seconds": False} | ({"low_res_step_seconds": True} if may_train_low_res(cfg) else {})
    out = {}
    with torch.random.fork_rng(devices=[] if device.type == "cpu" else [device.index or 0],
                               device_type=device.type):
        for key, low_res in sizes.items():
            probe.train()
            out[key] = _mean_seconds(lambda: train_step(probe, optimizer, xd, yd, idx, drawn, cfg, mean=mean_d,
                                                        std=std_d, device=device, low_res=low_res), steps, device)
        x_eval = x[:EVAL_BATCH]  # (EVAL_BATCH, C, H, W) on the CPU, as evaluate's splits are
        out["eval_batch_seconds"] = _mean_seconds(lambda: predict(probe, x_eval, mean_d, std_d, device), steps, device)
    return out


def _mean_seconds(step, n: int, device) -> float:
    """Mean wall seconds of step() over n calls, after one warm-up call not counted."""
    step()
    _synchronize(device)
    t0 = time.perf_counter()
    for _ in range(n):
        step()
    _synchronize(device)  # GPU kernels run asynchronously: wait for them before reading the clock
    return (time.perf_counter() - t0) / n


def _synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def data_fingerprint(x: torch.Tensor, y: torch.Tensor) -> str:
    """A short hash of the training images and labels, in order: a resumed run must train on the
    same split (another --seed or --val-size changes it, and would leak validation images)."""
    h = hashlib.sha256(y.cpu().numpy().tobytes())
    h.update(x.cpu().numpy().tobytes())  # 138 MB for CIFAR-10, hashed once per run
    return h.hexdigest()[:16]


RESUME_FIX = "drop --resume to start over, or choose another --out-dir"


def _resume(checkpoint, model, optimizer, scheduler, meta, cfg, n_train, fingerprint):
    """(first epoch, history) to continue from `checkpoint`: only an interrupted run of this very
    code, model, schedule and data. A finished run's checkpoint is not continued (training
    starts over), and neither is one of other code (refused), so a resume never adopts a model
    it did not make."""
    fresh = 0, {"step_loss": [], "step_lr": [], "epochs": [], "seconds": 0.0}
    if not checkpoint or not os.path.exists(checkpoint):
        tqdm.write(f"--resume: no checkpoint at {checkpoint}, starting from scratch")
        return fresh
    ckpt = read_checkpoint(checkpoint, RESUME_FIX, {**MODEL, **TRAINING})
    if meta and ckpt.get("model") != meta.get("model"):
        raise UserError(f"--resume: {checkpoint} holds {_model_difference(ckpt, meta)}; pass the arguments "
                        "it was trained with, or another --out-dir, or drop --resume")
    _check_resumable(checkpoint, ckpt, cfg, n_train, fingerprint)
    if ckpt.get("code") != running_code():
        raise UserError(f"--resume: {checkpoint} was made by other code (a .py file of convlens changed since); "
                        f"{RESUME_FIX}")
    if "metrics" in ckpt:  # finish_run adds them: that run ended, there is nothing to continue
        tqdm.write(f"--resume: {checkpoint} is of a finished run, starting from scratch")
        return fresh
    try:
        unwrap(model).load_state_dict(ckpt["state_dict"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
    except (RuntimeError, ValueError, KeyError) as err:
        raise UserError(f"--resume: {checkpoint} {DAMAGED} ({str(err).splitlines()[0][:120]})") from None
    tqdm.write(f"resuming from {checkpoint} after epoch {ckpt['epoch']}")
    return ckpt["epoch"], ckpt["history"]


def _model_difference(saved: dict, wanted: dict) -> str:
    """What differs between a checkpoint's model and the one this run builds, in a few words."""
    (name, args), (want_name, want_args) = [(d["model"]["name"], d["model"]["args"]) for d in (saved, wanted)]
    if (name, saved.get("dataset")) != (want_name, wanted.get("dataset")):
        return f"a {name} for {saved.get('dataset')}, not this run's {want_name} for {wanted.get('dataset')}"
    keys = [k for k in args | want_args if args.get(k) != want_args.get(k)]
    return (f"a {name} with {', '.join(f'{k}={args.get(k)}' for k in keys)}, not "
            f"{', '.join(f'{k}={want_args.get(k)}' for k in keys)}")


# Settings that change how, not what, a run computes: a resumed run may change them.
RESUMABLE_CHANGES = ("channels_last", "compile", "cpu_bf16", "time_budget")  # the budget's epochs are checked


def _check_resumable(checkpoint, ckpt, cfg, n_train, fingerprint):
    """A resumed run continues the saved one: same training settings (schedule, optimizer,
    augmentation, seed) and the same training images."""
    fix = "pass the same value, or drop --resume to start over"
    saved = ckpt.get("config", {})
    for key, value in asdict(cfg).items():
        if key in saved and key not in RESUMABLE_CHANGES and saved[key] != value:
            raise UserError(f"--resume: {checkpoint} was trained with --{key.replace('_', '-')} {saved[key]}, "
                            f"not {value}; {fix}")
    if ckpt.get("train_images", n_train) != n_train:
        raise UserError(f"--resume: {checkpoint} was trained on {ckpt['train_images']:,} images, not {n_train:,}; "
                        f"pass the same --limit (and --val or --val-size), or drop --resume to start over")
    if ckpt.get("train_data", fingerprint) != fingerprint:
        raise UserError(f"--resume: {checkpoint} was trained on other images (another --val/--val-size, "
                        "--limit or data file); pass the same ones, or drop --resume to start over")


def format_epoch(row: dict, epochs: int, low_res: int | None = None) -> str:
    """One printed line per epoch; low_res: the size its training images were shrunk to (the
    evaluations are always at full size)."""
    parts = [f"epoch {row['epoch']}/{epochs}" + (f" (trained at {low_res}x{low_res})" if low_res else ""),
             f"train loss {row['train_loss']:.4f} acc {100 * row['train_accuracy']:.2f}%"]
    for key in row:
        if key.endswith("_loss") and key != "train_loss":
            name = key[:-5]
            parts.append(f"{name.replace('_', ' ')} loss {row[key]:.4f} acc {100 * row[f'{name}_accuracy']:.2f}%")
    parts.append(f"{row['seconds']:.1f}s")
    return "  ".join(parts)
