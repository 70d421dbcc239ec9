"""Spatial grids carried through reshapes: token sequences and re-partitioned maps.

Layout propagation (``layouts``) knows the rank-4 maps that convolutions, pools and element-wise
ops make. Transformers move their maps through Reshape and Transpose: a ViT flattens its patch
grid into a token sequence (N, T, C) and adds class or register tokens with a Concat; Swin and
MaxViT partition a map into windows and put it back together. This module follows every axis of
such tensors as a list of *atoms*: pieces of the grid's rows ('h'), columns ('w'), channels ('c')
or batch ('n'), each with the step (in cells of the map it came from) and the size it covers.
Reshapes split and merge atoms in row-major order, Transposes permute axes, element-wise ops and
linear layers keep them. A tensor whose axes hold a whole grid in row-major order is a map:
(N, C, h, w) or (N, h, w, C) made by a Reshape (MaxViT's departition), or a token sequence whose
token axis holds the h*w patch tokens, with special tokens before or after them (from the Concat
that added them). The grid is read from the graph only, never from tensor names.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from .feature_maps import Layout
from .graph_index import GraphIndex, attr

Atom = tuple[str, int, int, int]  # (kind 'h'|'w'|'c'|'n', extent of the origin axis, step, size)

# Ops whose output has the axes of their input of the same shape (values change, positions not).
ELEMENTWISE = {
    "Relu", "Clip", "LeakyRelu", "PRelu", "Elu", "Selu", "Celu", "Sigmoid", "HardSigmoid", "HardSwish",
    "Tanh", "Softplus", "Softsign", "Mish", "Gelu", "Erf", "Add", "Sub", "Mul", "Div", "Pow", "Sqrt", "Exp",
    "Log", "Abs", "Neg", "Max", "Min", "Sum", "Mean", "Where", "Cast", "Identity", "Dropout", "Floor", "Ceil",
    "Round", "Sign", "Reciprocal", "FastGelu", "QuickGelu", "BiasGelu", "Swish", "Softmax", "LogSoftmax",
    "LayerNormalization", "SkipLayerNormalization", "SimplifiedLayerNormalization", "RMSNormalization",
    "QuantizeLinear", "DequantizeLinear",
}
REGROUP = {"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose"}


@dataclass(frozen=True)
class Dim:
    """One axis of a tensor: atoms from major to minor, and special entries before/after them."""

    atoms: tuple[Atom, ...]
    before: int = 0
    after: int = 0


@dataclass(frozen=True)
class Carried:
    """The atoms of every axis of a tensor, and where its grid came from."""

    dims: tuple[Dim, ...]
    origin: str  # the map whose grid this is
    via: tuple[str, ...] = ()  # the Reshape/Transpose nodes that regrouped the axes
    specials: str = ""  # the node that added special tokens


@dataclass(frozen=True)
class GridView:
    """How a tensor that is not a plain rank-4 map holds a spatial grid."""

    kind: str  # "map" (rank 4, made by regrouping) or "tokens" (rank 3)
    grid: tuple[int, int]
    layout: Layout  # maps: the tensor's layout; tokens: the layout of the grid view (token axis 1: NHWC)
    token_axis: int = 0  # tokens: 1 for (N, T, C), 2 for (N, C, T)
    before: int = 0
    after: int = 0
    how: str = ""
    origin: str = ""  # the rank-4 map with this very grid (step 1), if any
    origin_axes: tuple[int, int] = (2, 3)


def seed(shape: tuple[int, ...], layout: Layout) -> tuple[Dim, ...]:
    """The atoms of a rank-4 map in ``layout``: each axis one atom covering it."""
    a, b = layout.spatial_axes
    h, w = shape[a], shape[b]
    kinds = {0: ("n", 0), layout.channel_axis: ("c", 0), a: ("h", h), b: ("w", w)}
    return tuple(Dim(((kinds[i][0], kinds[i][1], 1, n),) if n > 1 else ()) for i, n in enumerate(shape))


def _split(atom: Atom, outer: int) -> tuple[Atom, Atom]:
    kind, ext, step, n = atom
    inner = n // outer
    return (kind, ext, step * inner, outer), (kind, ext, step, inner)


def carve(dims: tuple[Dim, ...], in_shape: tuple[int, ...], out_shape: tuple[int, ...]) -> tuple[Dim, ...] | None:
    """The atoms after a row-major reshape from ``in_shape`` to ``out_shape``, or None."""
    if int(np.prod(in_shape)) != int(np.prod(out_shape)):
        return None
    ins = [(n, d) for n, d in zip(in_shape, dims) if n != 1]
    outs = [j for j, n in enumerate(out_shape) if n != 1]
    result = [Dim(())] * len(out_shape)
    i = k = 0
    while i < len(ins) and k < len(outs):
        # group input and output axes whose products match (row-major order is kept)
        gi, gk = [ins[i]], [outs[k]]
        p_in, p_out = ins[i][0], out_shape[outs[k]]
        i, k = i + 1, k + 1
        while p_in != p_out:
            if p_in < p_out and i < len(ins):
                gi.append(ins[i])
                p_in *= ins[i][0]
                i += 1
            elif p_out < p_in and k < len(outs):
                gk.append(outs[k])
                p_out *= out_shape[outs[k]]
                k += 1
            else:
                return None
        if len(gi) == 1 and len(gk) == 1:
            result[gk[0]] = gi[0][1]
            continue
        if any(d.before or d.after for _, d in gi):
            return None  # special entries cannot be split or merged into a grid
        atoms = [a for _, d in gi for a in d.atoms]
        for j in gk:
            want, taken = out_shape[j], []
            while want > 1:
                if not atoms:
                    return None
                a = atoms.pop(0)
                if want % a[3] == 0:
                    taken.append(a)
                    want //= a[3]
                elif a[3] % want == 0:
                    outer, inner = _split(a, want)
                    taken.append(outer)
                    atoms.insert(0, inner)
                    want = 1
                else:
                    return None
            result[j] = Dim(tuple(taken))
    if i < len(ins) or k < len(outs):
        return None
    return tuple(result)


def _chain(atoms: tuple[Atom, ...], kind: str) -> tuple[int, int] | None:
    """(cells, step) when ``atoms`` cover a whole grid axis of ``kind`` major to minor, else None."""
    if not atoms or any(a[0] != kind or a[1] != atoms[0][1] for a in atoms):
        return None
    for outer, inner in zip(atoms, atoms[1:]):
        if outer[2] != inner[2] * inner[3]:
            return None
    if atoms[0][2] * atoms[0][3] != atoms[0][1]:
        return None
    return int(np.prod([a[3] for a in atoms])), atoms[-1][2]


def _token_axis(d: Dim) -> tuple[int, int, int, int] | None:
    """(h, w, row step, column step) when ``d`` holds a row-major grid of patch tokens."""
    k = next((i for i, a in enumerate(d.atoms) if a[0] == "w"), None)
    if k is None or k == 0:
        return None
    rows, cols = _chain(d.atoms[:k], "h"), _chain(d.atoms[k:], "w")
    if rows is None or cols is None:
        return None
    return rows[0], cols[0], rows[1], cols[1]


def _channel_axis(d: Dim, steps: dict[str, int]) -> bool:
    """Channels (and pixels inside one grid cell, as a patchify reshape puts them)."""
    if d.before or d.after:
        return False
    return all(a[0] == "c" or (a[0] in steps and a[2] * a[3] <= steps[a[0]]) for a in d.atoms)


def _batch_axis(d: Dim) -> bool:
    return not d.before and not d.after and all(a[0] == "n" for a in d.atoms)


def view(c: Carried, names: dict[str, str], layouts: dict[str, Layout]) -> GridView | None:
    """The grid a tensor holds, when it holds one as a map or as tokens; ``names``: op of each tensor."""
    dims = c.dims
    if not dims or not _batch_axis(dims[0]):
        return None
    how = _describe(c, names)
    if len(dims) == 3:
        for t_ax, c_ax in ((1, 2), (2, 1)):
            grid = _token_axis(dims[t_ax])
            if grid and _channel_axis(dims[c_ax], {"h": grid[2], "w": grid[3]}):
                d = dims[t_ax]
                lay = Layout.NHWC if t_ax == 1 else Layout.NCHW
                same = grid[2] == 1 and grid[3] == 1 and c.origin in layouts  # the origin's own grid
                origin = c.origin if same else ""
                axes = layouts[c.origin].spatial_axes if same else (2, 3)
                return GridView("tokens", grid[:2], lay, t_ax, d.before, d.after, how, origin, axes)
        return None
    if len(dims) == 4:
        for layout in (Layout.NCHW, Layout.NHWC):
            a, b = layout.spatial_axes
            if dims[a].before or dims[a].after or dims[b].before or dims[b].after:
                continue
            rows, cols = _chain(dims[a].atoms, "h"), _chain(dims[b].atoms, "w")
            if rows and cols and _channel_axis(dims[layout.channel_axis], {"h": rows[1], "w": cols[1]}):
                return GridView("map", (rows[0], cols[0]), layout, how=how)
    return None


def _describe(c: Carried, names: dict[str, str]) -> str:
    text = f"grid of {names.get(c.origin, 'map')} output {c.origin!r}"
    if c.via:
        text += f", regrouped by {', '.join(c.via)}"
    if c.specials:
        text += f"; special tokens from {c.specials}"
    return text


def _int_list(g: GraphIndex, node, pos: int, name: str) -> list[int] | None:
    if len(node.input) > pos and node.input[pos]:
        v = g.constant_value(node.input[pos])
        return None if v is None else [int(x) for x in np.asarray(v).reshape(-1)]
    a = attr(node, name)
    return None if a is None else [int(x) for x in a]


def _slice(g: GraphIndex, node, c: Carried, shape: tuple[int, ...]) -> tuple[Dim, ...] | None:
    starts, ends = _int_list(g, node, 1, "starts"), _int_list(g, node, 2, "ends")
    if starts is None or ends is None:
        return None
    axes = _int_list(g, node, 3, "axes") or list(range(len(starts)))
    steps = _int_list(g, node, 4, "steps") or [1] * len(starts)
    dims = list(c.dims)
    for ax, s, e, st in zip(axes, starts, ends, steps):
        ax %= len(shape)
        lo, hi, step = slice(s, e, st).indices(shape[ax])
        if (lo, hi, step) == (0, shape[ax], 1):
            continue
        d = dims[ax]
        if step != 1:
            return None
        if d.atoms and all(a[0] == "c" for a in d.atoms) and not d.before and not d.after:
            dims[ax] = Dim((("c", 0, 1, hi - lo),) if hi - lo > 1 else ())
            continue
        patches = int(np.prod([a[3] for a in d.atoms]))
        if _token_axis(d) is None or lo > d.before or hi < d.before + patches:
            return None  # the slice cuts into the patch tokens
        dims[ax] = Dim(d.atoms, d.before - lo, hi - d.before - patches)
    return tuple(dims)


def _concat(g: GraphIndex, node, carried: dict[str, Carried], data: set[str]) -> Carried | None:
    ins = [x for x in node.input if x]
    shapes = [g.shape(x) for x in ins]
    if any(s is None for s in shapes):
        return None
    ax = int(attr(node, "axis", 0)) % len(shapes[0])  # type: ignore[arg-type]
    gridded = [i for i, x in enumerate(ins) if x in data and x in carried and len(carried[x].dims) == len(shapes[0])]
    if len(gridded) != 1:
        return None
    src = carried[ins[gridded[0]]]
    d = src.dims[ax]
    if _token_axis(d) is None:
        if all(a[0] == "c" for a in d.atoms):  # channels from several tensors: still channels
            total = sum(s[ax] for s in shapes)  # type: ignore[index]
            dims = list(src.dims)
            dims[ax] = Dim((("c", 0, 1, total),))
            return replace(src, dims=tuple(dims))
        return None
    before = sum(s[ax] for s in shapes[: gridded[0]])  # type: ignore[index]
    after = sum(s[ax] for s in shapes[gridded[0] + 1 :])  # type: ignore[index]
    dims = list(src.dims)
    dims[ax] = Dim(d.atoms, d.before + before, d.after + after)
    return replace(src, dims=tuple(dims), specials=f"{node.op_type} {node.name or node.output[0]!r}")


def propagate(g: GraphIndex, layouts: dict[str, Layout], data: set[str], input_name: str) -> dict[str, Carried]:
    """The atoms of every data tensor that descends from a rank-4 map by regrouping or element-wise ops."""
    carried: dict[str, Carried] = {}
    ishape = g.shape(input_name)
    if input_name in layouts and ishape is not None and len(ishape) == 4:
        carried[input_name] = Carried(seed(ishape, layouts[input_name]), input_name)
    for node in g.nodes:
        outs = [o for o in node.output if o]
        if not outs:
            continue
        out = outs[0]
        oshape = g.shape(out)
        op = node.op_type
        seeded = out in layouts and oshape is not None and len(oshape) == 4
        if seeded and op not in REGROUP:
            carried[out] = Carried(seed(oshape, layouts[out]), out)
            continue
        if out not in data or oshape is None:
            continue
        first = node.input[0] if node.input else ""
        src = carried.get(first) if first in data else None
        new: Carried | None = None
        if op in REGROUP and src is not None:
            ishape = g.shape(first)
            if op == "Transpose":
                perm = list(attr(node, "perm", []) or range(len(src.dims))[::-1])
                dims = tuple(src.dims[p] for p in perm) if len(perm) == len(src.dims) else None
            else:
                dims = carve(src.dims, ishape, oshape) if ishape is not None else None
            if dims is not None:
                label = f"{op} {node.name or out!r}"
                new = replace(src, dims=dims, via=(*src.via, label)[-4:])
        elif op == "MatMul" and src is not None and len(node.input) > 1 and node.input[1] in g.constants and g.rank(node.input[1]) == 2:
            last = src.dims[-1]
            if all(a[0] == "c" for a in last.atoms) and not last.before and not last.after:
                n = oshape[-1]
                new = replace(src, dims=(*src.dims[:-1], Dim((("c", 0, 1, n),) if n > 1 else ())))
        elif op == "Slice" and src is not None:
            ishape = g.shape(first)
            dims = _slice(g, node, src, ishape) if ishape is not None else None
            if dims is not None:
                specials = src.specials if any(d.before or d.after for d in dims) else ""
                new = replace(src, dims=dims, specials=specials)
        elif op == "Concat":
            new = _concat(g, node, carried, data)
        elif op in ELEMENTWISE:
            for x in node.input:
                if x in data and x in carried and g.shape(x) == oshape:
                    new = carried[x]
                    break
        if new is not None and (not seeded or view(new, {}, layouts) is not None):
            carried[out] = new  # a regrouped map keeps the record of how its grid was made
        elif seeded:
            carried[out] = Carried(seed(oshape, layouts[out]), out)
    return carried
