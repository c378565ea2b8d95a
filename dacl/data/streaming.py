"""Images decoded from files as training asks for them: the data path for benchmarks that do not fit in memory.

``ImageFiles`` behaves like the image tensor of an in-memory benchmark (``len(x)``, ``x[idx]``, ``x.device``,
``x.shape``), so the one training loop, evaluation and validators run unchanged on either. Memory is bounded by
the batch: the dataset is a list of paths (a NumPy byte array, so DataLoader workers share it without
copy-on-write growth), decoding happens in DataLoader workers, batches travel as uint8 through pinned memory and are
normalised on the device.

Batches keep ``BatchStream``'s semantics: ``follow(stream)`` returns a ``PrefetchStream`` that draws the very same
seeded, sharded index sequence, decodes the next batches ahead in workers, and checkpoints the *consumed* position,
so a resumed run sees the same batches. Random augmentation is seeded per draw (stream seed, epoch, position), which
makes it independent of the number of workers and exact across a resume mid-epoch.
"""
from __future__ import annotations

from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
from torch import Tensor

from dacl.errors import DataError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


TRAIN_CROPS = ("random_resized", "center")


INTERPOLATIONS = ("bilinear", "bicubic")


def standard_transform(train: bool, image_size: int = 224, resize: int = 256,
                       train_crop: str = "random_resized", interpolation: str = "bilinear") -> Callable[[Any], Tensor]:
    """The field's ImageNet-style pipeline (TLlib's resizing options) up to uint8 CHW; normalisation runs on the
    device. Train: resize to resize x resize, a random-resized crop (TLlib 'default') or a centre crop (its
    'cen.crop', the VisDA-2017 recipe), horizontal flip. Test: resize, centre crop."""
    from torchvision.transforms import v2

    if train_crop not in TRAIN_CROPS:
        raise DataError(f"train_crop must be one of {', '.join(TRAIN_CROPS)}, got '{train_crop}'")
    if interpolation not in INTERPOLATIONS:
        raise DataError(f"interpolation must be one of {', '.join(INTERPOLATIONS)}, got '{interpolation}'")
    mode = getattr(v2.InterpolationMode, interpolation.upper())
    head = [v2.Resize((resize, resize), interpolation=mode, antialias=True)]
    if train:
        crop = (v2.RandomResizedCrop(image_size, interpolation=mode, antialias=True) if train_crop == "random_resized"
                else v2.CenterCrop(image_size))
        body = [crop, v2.RandomHorizontalFlip()]
    else:
        body = [v2.CenterCrop(image_size)]
    return v2.Compose([*head, *body, v2.PILToTensor()])


ARCHIVE_PREFIX = "tar:"


def archive_member(archive: str, offset: int, size: int, member: str) -> str:
    """How a file inside an uncompressed tar is named in an image list: read in place, by offset, in any worker."""
    return f"{ARCHIVE_PREFIX}{offset}:{size}:{archive}//{member}"


def read_image_bytes(path: str) -> bytes:
    """The encoded bytes of an image file or of a tar member named by ``archive_member``."""
    if not path.startswith(ARCHIVE_PREFIX):
        with open(path, "rb") as fh:
            return fh.read()
    offset, size, rest = path[len(ARCHIVE_PREFIX):].split(":", 2)
    archive, member = rest.split("//", 1)
    with open(archive, "rb") as fh:
        fh.seek(int(offset))
        data = fh.read(int(size))
    if len(data) != int(size):
        raise DataError(f"{archive}: member {member} is cut short ({len(data)} of {size} bytes); the archive is truncated")
    return data


def display_name(path: str) -> str:
    """A path as an error message names it: the member inside its archive, or the file."""
    if not path.startswith(ARCHIVE_PREFIX):
        return path
    archive, member = path[len(ARCHIVE_PREFIX):].split(":", 2)[2].split("//", 1)
    return f"{member} in {archive}"


def open_rgb(path: str) -> Any:
    """Decode one image fully (a truncated JPEG fails here, not later) as RGB; a bad file is one DataError line."""
    import io

    from PIL import Image

    try:
        with Image.open(io.BytesIO(read_image_bytes(path))) as im:
            image = im.convert("RGB")
    except (OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"unreadable image {display_name(path)} ({exc}); remove it from the image list or replace "
                        "the file") from exc
    return image


class _Decode(torch.utils.data.Dataset):
    """Worker side: path -> uint8 CHW tensor. An item is an index or (index, seed); a seed fixes the augmentation."""

    def __init__(self, paths: np.ndarray, transform: Callable[[Any], Tensor]) -> None:
        self.paths, self.transform = paths, transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, item: int | tuple[int, int]) -> Tensor:
        index, seed = item if isinstance(item, tuple) else (item, None)
        image = open_rgb(self.paths[index].decode())
        if seed is not None:  # the CPU generator alone: torch.manual_seed also queues CUDA seeding with a stack trace
            torch.default_generator.manual_seed(seed)  # (~0.8 ms per call on a CUDA build; ~1 us this way)
        return self.transform(image)


def _decoded(batches: Iterator[Tensor]) -> Iterator[Tensor]:
    """A loader's batches; a worker's DataError (which torch re-raises with the worker's traceback in its message)
    becomes the one-line error it was."""
    try:
        yield from batches
    except DataError as exc:
        text = str(exc).strip().splitlines()
        raise DataError(text[-1].split("DataError: ", 1)[-1] if len(text) > 1 else str(exc)) from None


class ImageFiles:
    """A tensor-like view of image files: indexing decodes (normalised float on ``device``)."""

    def __init__(self, paths: Sequence[str], transform: Callable[[Any], Tensor], image_size: int,
                 mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                 device: torch.device | str = "cpu", workers: int = 0) -> None:
        self.paths = np.asarray([str(p).encode() for p in paths], dtype=np.bytes_)
        self.dataset = _Decode(self.paths, transform)
        self.image_size, self.workers = image_size, workers
        self.device = torch.device(device)
        # (x / 255 - mean) / std as one multiply-add in place: x * scale + shift
        std_t = torch.tensor(std, dtype=torch.float32, device=self.device).view(1, -1, 1, 1)
        self.scale = 1.0 / (255.0 * std_t)
        self.shift = -torch.tensor(mean, dtype=torch.float32, device=self.device).view(1, -1, 1, 1) / std_t
        self._pending: tuple[Tensor, Tensor] | None = None  # (index the loop drew, its images, decoded ahead)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (len(self.paths), 3, self.image_size, self.image_size)

    dtype = torch.float32

    def __len__(self) -> int:
        return len(self.paths)

    def normalise(self, batch: Tensor) -> Tensor:
        """uint8 NCHW (any device) -> float on this view's device, standardised."""
        return batch.to(self.device, non_blocking=True).float().mul_(self.scale).add_(self.shift)

    def loader(self, batches: Any, **kwargs: Any) -> torch.utils.data.DataLoader:
        return torch.utils.data.DataLoader(self.dataset, batch_sampler=batches, num_workers=self.workers,
                                           pin_memory=self.device.type == "cuda",
                                           persistent_workers=False, **kwargs)

    def __getitem__(self, index: Tensor | slice | int) -> Tensor:
        if self._pending is not None and index is self._pending[0]:  # the batch the loop just drew: decoded ahead
            images, self._pending = self._pending[1], None
            return images
        if isinstance(index, slice):
            rows = list(range(len(self))[index])
        elif isinstance(index, int):
            return self[torch.tensor([index])][0]
        else:
            rows = index.detach().cpu().reshape(-1).tolist()
        chunks = [rows[i:i + 256] for i in range(0, len(rows), 256)]
        return torch.cat([self.normalise(b) for b in _decoded(iter(self.loader(chunks)))]) \
            if rows else torch.empty((0, 3, self.image_size, self.image_size), device=self.device)

    def batches(self, batch_size: int) -> Iterator[Tensor]:
        """Every image in order, decoded in workers: evaluation over a test set of any size."""
        order = [list(range(i, min(i + batch_size, len(self)))) for i in range(0, len(self), batch_size)]
        for b in _decoded(iter(self.loader(order))):
            yield self.normalise(b)

    def follow(self, stream: Any, prefetch: int = 4) -> "PrefetchStream":
        """``stream``: a ``BatchStream`` or ``ClassBalancedStream`` (anything with next_indices / cpu_copy)."""
        return PrefetchStream(stream, self, prefetch)


def _draws(stream: Any, seed: int) -> Iterator[list[tuple[int, int]]]:
    """The stream's batches as (index, augmentation seed) pairs; the seed names the draw (epoch, position)."""
    while True:
        idx = stream.next_indices()
        start = stream.last_draw_id()
        offsets = range(stream.batch_size)[stream.shard] if stream.shard is not None else range(stream.batch_size)
        yield [(int(i), (seed * 1_000_003 + start + o) % (2**63)) for i, o in zip(idx.tolist(), offsets)]


class PrefetchStream:
    """What the loop draws indices from when its images stream: the stream's own sequence, decoded ahead."""

    def __init__(self, stream: Any, images: ImageFiles, prefetch: int = 4) -> None:
        self.stream, self.images, self.prefetch = stream, images, prefetch
        self._iter: Iterator[Tensor] | None = None

    @property
    def epoch(self) -> int:
        return self.stream.epoch

    def _start(self) -> None:
        ahead = self.stream.cpu_copy()  # at the consumed position
        extra = {"prefetch_factor": self.prefetch} if self.images.workers else {}
        self._iter = _decoded(iter(self.images.loader(_draws(ahead, self.stream.seed), **extra)))

    def next_indices(self) -> Tensor:
        if self._iter is None:
            self._start()
        idx = self.stream.next_indices()
        images = self.images.normalise(next(self._iter))
        self.images._pending = (idx, images)
        return idx

    def state_dict(self) -> dict[str, Any]:
        return self.stream.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.stream.load_state_dict(state)
        self._iter = None  # the look-ahead restarts from the restored position
