"""Layout ops (view/reshape, transpose/permute, chunk/split, channel slices) as index maps over a real value.

The engine stores activations NHWC and has no rank-5 tensors, so a chain such as ShuffleNet's
channel shuffle (view to (N, g, C/g, H, W), transpose(1, 2), view back to (N, C, H, W)) is not
run step by step. While tracing, each such op only updates a `Layout`: which element of a real
value (per image, in its NCHW order) every element of the logical tensor is. When a real op reads
the logical tensor, the layout is materialized as one op: nothing when it is the value itself,
`gather_channels` when it only reorders or selects channels (the common case: shuffles, chunks,
slices), `flatten` when it is a flatten. Anything else is reported as unsupported.

The batch dimension is never part of the map: every op here must keep dim 0 as the batch.
"""
from dataclasses import dataclass

import numpy as np


class LayoutError(Exception):
    """A layout op this module cannot express; the message is the reason."""


@dataclass(frozen=True)
class Layout:
    source: str            # the real IR value the elements come from
    source_shape: tuple    # its shape without the batch: (C, H, W) or (F,)
    index: np.ndarray      # the logical per-image shape; each entry is a flat index into source_shape
    spatial: bool = True   # the last two logical axes are still the source's H and W, never moved

    @staticmethod
    def of(source, shape):
        """The identity layout of a real value of `shape` (batch included)."""
        per_image = tuple(int(d) for d in shape[1:])
        return Layout(source, per_image, np.arange(int(np.prod(per_image)), dtype=np.int64).reshape(per_image))

    def reshape(self, shape):
        """x.view(shape) (batch included): the same elements in the same order, another shape."""
        per_image = tuple(int(d) for d in shape[1:])
        if int(np.prod(per_image)) != self.index.size:
            raise LayoutError(f"a view to {tuple(shape)} changes the number of elements per image")
        spatial = self.spatial and _keeps_hw(self, per_image)
        return Layout(self.source, self.source_shape, self.index.reshape(per_image), spatial)

    def permute(self, dims):
        """x.permute(dims) over all dims (batch included, and kept first)."""
        if dims[0] != 0:
            raise LayoutError("a permute that moves the batch dim")
        axes = [d - 1 for d in dims[1:]]
        rank = self.index.ndim
        spatial = self.spatial and (len(self.source_shape) != 3 or axes[-2:] == [rank - 2, rank - 1])
        return Layout(self.source, self.source_shape, self.index.transpose(axes), spatial)

    def take(self, dim, indices):
        """Elements `indices` along dim `dim` (>= 1): chunk, split, slices."""
        spatial = self.spatial and (len(self.source_shape) != 3 or dim - 1 < self.index.ndim - 2)
        return Layout(self.source, self.source_shape, np.take(self.index, indices, axis=dim - 1), spatial)

    def reduce(self, dims, result):
        """x.sum(dims) / x.mean(dims) over logical dims (>= 1, no keepdim): (the source's dims that each output
        sums over, 1-based as in NCHW; the Layout of the outputs over `result`, the source with those dims
        summed to size 1). LayoutError when what an output sums is not one whole slice over source dims."""
        axes = [d - 1 for d in dims]
        kept = [a for a in range(self.index.ndim) if a not in axes]
        out_shape = tuple(self.index.shape[a] for a in kept)
        groups = self.index.transpose(kept + axes).reshape(int(np.prod(out_shape)), -1)  # one row per output
        coords = np.unravel_index(groups, self.source_shape)
        summed = [s for s, c in enumerate(coords) if (c != c[:, :1]).any()]
        # A row of distinct elements, as many as the summed dims hold, all sharing the other coordinates: the slice.
        if (groups.shape[1] != np.prod([self.source_shape[s] for s in summed])
                or (np.diff(np.sort(groups, axis=1), axis=1) == 0).any()):
            raise LayoutError(f"dims {list(dims)} of this rearranged tensor hold elements that are not whole rows, "
                              "columns or channels of the tensor it was made from")
        reduced = tuple(1 if s in summed else n for s, n in enumerate(self.source_shape))
        index = np.ravel_multi_index([np.zeros_like(c[:, 0]) if s in summed else c[:, 0] for s, c in enumerate(coords)],
                                     reduced)
        # Not spatial: a reduced layout is read back as itself or a flatten, never as a channel map.
        return [s + 1 for s in summed], Layout(result, reduced, index.reshape(out_shape), spatial=False)

    def channel_map(self):
        """The source channel of each output channel when this layout only picks and reorders
        channels (rank kept, H and W untouched), else None."""
        if self.index.ndim != len(self.source_shape) or not self.spatial:
            return None
        inner = int(np.prod(self.source_shape[1:]))  # H * W, or 1 for (N, F)
        if self.index.shape[1:] != self.source_shape[1:]:
            return None
        channels = self.index.reshape(self.index.shape[0], inner)[:, 0] // inner
        expected = channels[:, None] * inner + np.arange(inner)
        return channels if np.array_equal(self.index.reshape(len(channels), inner), expected) else None

    def is_identity(self):
        return self.index.shape == self.source_shape and np.array_equal(self.index.ravel(),
                                                                        np.arange(self.index.size))

    def is_flatten(self):
        return self.index.ndim == 1 and np.array_equal(self.index, np.arange(self.index.size))


def _keeps_hw(layout, per_image):
    """Whether a view to `per_image` keeps the source's H and W as its last two dims (so the view means
    the same at any input height and width)."""
    if len(layout.source_shape) != 3:
        return True  # an (N, F) source has no spatial dims to keep
    return per_image[-2:] == layout.index.shape[-2:] == layout.source_shape[-2:]
