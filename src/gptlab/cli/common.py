"""What the verbs share: the parser class, error types, option types and model selection."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

PROG = "gptlab"
DEFAULT_GPT2_DIR = Path("results") / "gpt2"
SAFETENSORS = "model.safetensors"  # gptlab.convert.SAFETENSORS, without importing NumPy for --help
SIZES = ("124M", "355M", "774M", "1558M")  # gptlab.gpt2.SIZES (checked equal in the tests)
# torch.manual_seed and torch.Generator.manual_seed take 0 ... 2**64 - 1 (negative seeds only alias these).
SEED_MAX = 2**64 - 1


class UsageError(Exception):
    """A bad option value: reported on one line, exit code 2."""


class Failure(Exception):
    """The command could not do its work (missing or damaged file, ...): exit code 1."""


def one_line(message: str) -> str:
    """``message`` on one line: lines ending in ':' run on, other line breaks become '; '."""
    lines = [line.strip() for line in str(message).splitlines() if line.strip()]
    out = ""
    for line in lines:
        if not out:
            out = line
        elif out.endswith((":", ";", ",")):
            out += " " + line
        else:
            out += "; " + line
    return out


class Parser(argparse.ArgumentParser):
    """argparse, with errors as one line: ``gptlab: error: <what> (see 'gptlab <verb> --help')``."""

    def error(self, message):  # noqa: D102 - argparse API
        self.exit(2, f"{PROG}: error: {one_line(message)} (see '{self.prog} --help')\n")


class Formatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Keep the examples in the epilog as written and show the defaults that say something."""

    def _get_help_string(self, action):
        if action.default in (None, False) or "default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def int_at_least(minimum: int, maximum: int | None = None, why: str = ""):
    """An argparse type: an integer in ``[minimum, maximum]``; ``why`` explains the maximum."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < minimum or (maximum is not None and value > maximum):
            bound = f">= {minimum}" if maximum is None else f"between {minimum} and {maximum}"
            raise argparse.ArgumentTypeError(f"{value} must be {bound}{f' ({why})' if why else ''}")
        return value

    parse.__name__ = "integer"
    return parse


def seed_type():
    """An argparse type for seeds: what ``torch.manual_seed`` accepts, 0 ... 2**64 - 1."""
    return int_at_least(0, SEED_MAX, "2**64 - 1, the largest seed torch.manual_seed takes")


def finite_float(text: str) -> float:
    """An argparse type: a finite number (``nan`` and ``inf`` are refused)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number; give one such as 0.9")
    return value


finite_float.__name__ = "number"


def read_text_file(path: Path, option: str) -> str:
    """The UTF-8 text of ``path`` (``gptlab.data.read_text``), or a Failure naming ``option`` and the file."""
    from gptlab.data import read_text

    try:
        return read_text(path)
    except OSError as err:
        if err.filename is not None:  # raised by the system, not by read_text: name the file here
            raise Failure(f"{option} {path} cannot be read ({err.strerror}); pass another file") from None
        raise Failure(f"{option} {err}") from None
    except ValueError as err:
        raise Failure(f"{option} {err}") from None


def add_model_source(parser: argparse.ArgumentParser) -> None:
    """``--model PATH | --gpt2 SIZE`` (exactly one) and ``--gpt2-dir``."""
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument(
        "--model",
        metavar="PATH",
        help="a gptlab checkpoint (.pt) or a converted GPT-2 (model.safetensors or its folder)",
    )
    group.add_argument(
        "--gpt2",
        metavar="SIZE",
        choices=SIZES,
        help=f"a converted OpenAI release, read from GPT2_DIR/SIZE/{SAFETENSORS}; one of {', '.join(SIZES)}",
    )
    parser.add_argument(
        "--gpt2-dir",
        metavar="GPT2_DIR",
        type=Path,
        default=DEFAULT_GPT2_DIR,
        help="folder holding one subfolder per GPT-2 size (the pipeline's layout)",
    )


def resolve_model(args) -> tuple[Path, str]:
    """The file or folder to load and a label for it; a clear Failure if a --gpt2 release is missing."""
    if args.model is not None:
        return Path(args.model), str(args.model)
    size, folder = args.gpt2, args.gpt2_dir / args.gpt2
    if not (folder / SAFETENSORS).is_file():
        tf_dir = folder / "tf"
        if (tf_dir / "model.ckpt.index").is_file():
            how = f"it is downloaded but not converted: run 'gptlab convert {tf_dir}'"
        else:
            how = (
                f"get it with 'gptlab download --size {size}' then 'gptlab convert {tf_dir}', "
                "or run the pipeline ('make run')"
            )
        raise Failure(
            f"GPT-2 {size} is not in {folder} (no {SAFETENSORS} there); {how}, "
            "or point --gpt2-dir at the folder that holds it"
        )
    return folder, f"GPT-2 {size}"


def load(path: Path, device_name: str | None):
    """``(model, device)``: the model at ``path`` on the chosen device, in eval mode."""
    from gptlab.device import select_device
    from gptlab.experiments.common import load_model

    try:
        device = select_device(device_name)
    except (ValueError, RuntimeError) as err:
        raise UsageError(f"--device {device_name}: {err}") from None
    if not path.exists():
        raise Failure(
            f"{path} does not exist; pass a gptlab checkpoint (.pt) or a converted GPT-2 folder / "
            f"{SAFETENSORS} (see 'gptlab inspect')"
        )
    if path.is_dir() and not (path / SAFETENSORS).is_file() and (path / "model.ckpt.index").is_file():
        raise Failure(f"{path} holds a GPT-2 release that is not converted yet: run 'gptlab convert {path}'")
    try:
        return load_model(path, device), device
    except Exception as err:
        from gptlab.training.checkpoint import CheckpointError

        if isinstance(err, (CheckpointError, FileNotFoundError, ValueError, MemoryError)):
            raise
        raise Failure(
            f"cannot load {path} ({type(err).__name__}: {err}); pass a gptlab checkpoint (.pt) or a "
            f"converted GPT-2 folder / {SAFETENSORS}"
        ) from err


def count_parameters(shapes) -> int:
    total = 0
    for shape in shapes:
        n = 1
        for d in shape:
            n *= int(d)
        total += n
    return total


def human_count(n: int) -> str:
    for unit, scale in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= scale:
            return f"{n:,} ({n / scale:.1f}{unit})"
    return f"{n:,}"


def human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"  # pragma: no cover


def note(message: str) -> None:
    """A progress or status line on stderr (stdout carries the results)."""
    print(message, file=sys.stderr, flush=True)
