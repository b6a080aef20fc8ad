"""Seeded synthetic game frames: a 2.5D layered scene rendered like a game engine feeds an upscaler.

Scene: fronto-parallel textured layers at different depths seen by a pinhole camera that moves
like a game camera: it turns (yaw / pitch: the whole view slides, no parallax), strafes (x, y:
parallax between layers), dollies (z) and rolls; a far background plane, an optional fence of thin
bars (sub-pixel geometry that aliases at render resolution) and independently moving, spinning
objects (discs, boxes, rings, thin rods) that cross the view and re-enter it. Parallax and object
motion create disocclusions. Textures are photographs bundled with scikit-image plus fine
procedural patterns, shaded in linear light and stored sRGB-encoded.

Motion is drawn per scene from a `MotionConfig` (config `data.motion`), in OUTPUT pixels per frame whatever the output
size: a fraction of scenes have a still camera; the others turn and strafe at log-uniform speeds
(static to ~30 output px/frame, median several), with speed and heading drifting smoothly; each
object moves at its own log-uniform screen speed (some stand still on screen, like a character the
camera follows).

Every quantity is a smooth function of continuous time t (in frames), so a frame can be rendered
at fractional time t + alpha (ground truth for frame extrapolation), and motion vectors are exact:
each layer maps screen to layer coordinates by an affine map A_t, so a pixel p on layer L was at
A_{t-1}^{-1}(A_t p) in the previous frame.

Per frame:
- ground truth at output resolution, `gt_samples` (>= 16) stratified samples per pixel;
- the render at input resolution, ONE sample per pixel at that frame's Halton(2,3) jitter;
- motion vectors at unjittered render-pixel centres (current -> previous, render pixels),
  depth at the jittered sample, disocclusion mask (surface hidden or off-screen last frame);
- the ground truth at t + alpha, alpha drawn per frame from (0, 1] (seeded by scene and frame):
  the frame-extrapolation target.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from importlib import resources
from typing import Iterator

import numba
import numpy as np
from PIL import Image

from ..config import MotionConfig
from .schema import Frame, Window, input_size_for, jitter_offset, srgb_decode, srgb_encode

TEXTURE_SIZE = 512
SHAPE_PLANE, SHAPE_DISC, SHAPE_BOX, SHAPE_RING, SHAPE_FENCE = range(5)
# Column layout of the per-layer parameter rows handed to the kernels.
(A0, A1, A2, A3, A4, A5, DEPTH, SHAPE, TEX, TEX_SCALE, TEX_U, TEX_V, P1, P2,
 XMIN, XMAX, YMIN, YMAX, TINT_R, TINT_G, TINT_B) = range(21)
LAYER_COLUMNS = 21
BACKGROUND_DEPTH = 25.0
_PHOTOS_RGB = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png",
               "hubble_deep_field.jpg")
_PHOTOS_GRAY = ("brick.png", "grass.png", "gravel.png", "camera.png")


@functools.lru_cache(maxsize=1)
def texture_bank() -> np.ndarray:
    """All textures as one array [T, S, S, 3] float32, linear RGB in [0, 1], S = TEXTURE_SIZE."""
    data_dir = resources.files("skimage") / "data"
    textures = []
    for name in _PHOTOS_RGB + _PHOTOS_GRAY:
        with resources.as_file(data_dir / name) as path:
            image = Image.open(path).convert("RGB").resize((TEXTURE_SIZE, TEXTURE_SIZE), Image.BICUBIC)
        textures.append(np.asarray(image, dtype=np.float32) / 255.0)
    y, x = np.mgrid[0:TEXTURE_SIZE, 0:TEXTURE_SIZE]
    checker = ((x // 4 + y // 4) % 2).astype(np.float32)  # 4-texel cells: detail above render Nyquist
    stripes = (((x + y) // 3) % 2).astype(np.float32)  # diagonal, 3-texel period
    rng = np.random.default_rng(1234)
    noise = rng.random((TEXTURE_SIZE // 8, TEXTURE_SIZE // 8, 3)).astype(np.float32)
    noise = np.kron(noise, np.ones((8, 8, 1), np.float32)) * 0.6 + rng.random((TEXTURE_SIZE, TEXTURE_SIZE, 3)) * 0.4
    for pattern in (checker, stripes):
        textures.append(np.repeat((0.1 + 0.8 * pattern)[..., None], 3, axis=2))
    textures.append(noise.astype(np.float32))
    return np.ascontiguousarray(srgb_decode(np.stack(textures)).astype(np.float32))


@numba.njit(cache=True, inline="always", fastmath=True, error_model="numpy")
def _shade(x, y, layers, textures):
    """Colour (linear RGB), depth and layer index of the front-most surface at screen point (x, y)."""
    size = textures.shape[1]
    for index in range(layers.shape[0]):
        layer = layers[index]
        if x < layer[XMIN] or x > layer[XMAX] or y < layer[YMIN] or y > layer[YMAX]:
            continue
        u = layer[A0] * x + layer[A1] * y + layer[A2]
        v = layer[A3] * x + layer[A4] * y + layer[A5]
        shape = int(layer[SHAPE])
        if shape == SHAPE_PLANE:
            inside = True
        elif shape == SHAPE_DISC:
            inside = u * u + v * v <= 1.0
        elif shape == SHAPE_BOX:
            inside = abs(u) <= 1.0 and abs(v) <= layer[P1]
        elif shape == SHAPE_RING:
            r2 = u * u + v * v
            inside = layer[P1] * layer[P1] <= r2 <= 1.0
        else:  # fence: thin vertical bars with sparser thin rails
            bars = u * layer[P2]
            rails = v * layer[P2] * 0.25
            inside = abs(u) <= 1.0 and abs(v) <= 1.0 and (
                bars - math.floor(bars) < layer[P1] or rails - math.floor(rails) < layer[P1]
            )
        if not inside:
            continue
        tu = u * layer[TEX_SCALE] + layer[TEX_U] - 0.5
        tv = v * layer[TEX_SCALE] + layer[TEX_V] - 0.5
        fu = math.floor(tu)
        fv = math.floor(tv)
        wu = tu - fu
        wv = tv - fv
        c0 = int(fu - size * math.floor(fu / size))
        r0 = int(fv - size * math.floor(fv / size))
        c1 = c0 + 1 if c0 + 1 < size else 0
        r1 = r0 + 1 if r0 + 1 < size else 0
        t = int(layer[TEX])
        w00 = (1.0 - wu) * (1.0 - wv)
        w01 = wu * (1.0 - wv)
        w10 = (1.0 - wu) * wv
        w11 = wu * wv
        red = (w00 * textures[t, r0, c0, 0] + w01 * textures[t, r0, c1, 0]
               + w10 * textures[t, r1, c0, 0] + w11 * textures[t, r1, c1, 0]) * layer[TINT_R]
        green = (w00 * textures[t, r0, c0, 1] + w01 * textures[t, r0, c1, 1]
                 + w10 * textures[t, r1, c0, 1] + w11 * textures[t, r1, c1, 1]) * layer[TINT_G]
        blue = (w00 * textures[t, r0, c0, 2] + w01 * textures[t, r0, c1, 2]
                + w10 * textures[t, r1, c0, 2] + w11 * textures[t, r1, c1, 2]) * layer[TINT_B]
        return red, green, blue, layer[DEPTH], index
    return 0.0, 0.0, 0.0, 1e6, -1


@numba.njit(cache=True, fastmath=True, error_model="numpy")
def _render_supersampled(layers, textures, height, width, side, out):
    """out[3, height, width] = mean of side x side stratified samples per pixel (linear RGB)."""
    weight = 1.0 / (side * side)
    for i in range(height):
        for j in range(width):
            red = green = blue = 0.0
            for a in range(side):
                y = i + (a + 0.5) / side
                for b in range(side):
                    r, g, bl, _, _ = _shade(j + (b + 0.5) / side, y, layers, textures)
                    red += r
                    green += g
                    blue += bl
            out[0, i, j] = red * weight
            out[1, i, j] = green * weight
            out[2, i, j] = blue * weight


@numba.njit(cache=True, fastmath=True, error_model="numpy")
def _shade_points(layers, textures, xs, ys, color, depth, ids):
    """Shade arbitrary screen points: color[3, N], depth[N], ids[N] (layer index, -1 for none)."""
    for n in range(xs.shape[0]):
        r, g, b, z, k = _shade(xs[n], ys[n], layers, textures)
        color[0, n] = r
        color[1, n] = g
        color[2, n] = b
        depth[n] = z
        ids[n] = k


def _rotation(angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, -s], [s, c]])


@dataclass
class Wave:
    """A smooth scalar of time: amp * sin(freq * t + phase) + rate * t."""

    amp: float = 0.0
    freq: float = 0.0
    phase: float = 0.0
    rate: float = 0.0

    def __call__(self, t: float) -> float:
        return self.amp * math.sin(self.freq * t + self.phase) + self.rate * t


def _log_uniform(rng, bounds: tuple[float, float]) -> float:
    low, high = bounds
    return float(math.exp(rng.uniform(math.log(low), math.log(high))))


def _drifting_path(rng, speed: float) -> tuple["Wave", "Wave"]:
    """x(t), y(t) of a point moving at about `speed` per frame on a heading that drifts: a steady
    velocity plus a slow oscillation of half its size (speed varies by up to +-50 %)."""
    heading = rng.uniform(0, 2 * math.pi)
    waves = []
    for axis in (math.cos, math.sin):
        freq = 2 * math.pi / rng.uniform(40, 160)
        waves.append(Wave(amp=0.5 * speed / freq, freq=freq, phase=rng.uniform(0, 2 * math.pi),
                          rate=speed * axis(heading)))
    return waves[0], waves[1]


@dataclass
class Layer:
    """A textured fronto-parallel shape at world depth `z` with its own motion in the plane."""

    z: float
    shape: int
    radius: float  # world units per local unit
    texture: int
    texel_scale: float  # texels per local unit
    tint: tuple[float, float, float] = (1.0, 1.0, 1.0)
    param1: float = 0.0  # box aspect, ring inner radius, fence bar width fraction
    param2: float = 0.0  # fence bars per local unit
    x: Wave = None
    y: Wave = None
    spin: Wave = None
    tex_offset: tuple[float, float] = (0.0, 0.0)
    base: tuple[float, float] = (0.0, 0.0)  # world (x, y) about which x and y oscillate
    # Objects move in screen space (output pixels): centre = base + (x(t), y(t)), wrapped around
    # the view (re-entering from the other side once fully off-screen).
    on_screen: bool = False

    def bound(self) -> float:
        """Bounding radius in local units."""
        if self.shape == SHAPE_BOX:
            return math.hypot(1.0, self.param1)
        if self.shape == SHAPE_FENCE:
            return math.sqrt(2.0)
        return 1.0


class SynthScene:
    """One seeded scene; `render_frame(k)` gives frame k, `render_gt(t)` the ground truth at any time."""

    def __init__(self, out_size: tuple[int, int], ratio: float, seed: int, objects: int = 5, gt_samples: int = 16,
                 motion_scale: float = 1.0, motion: MotionConfig | None = None):
        self.out_size = (int(out_size[0]), int(out_size[1]))
        self.in_size = input_size_for(self.out_size, ratio)
        self.ratio = float(ratio)
        self.seed = int(seed)
        self.motion_scale = float(motion_scale)  # plays the scene this many times faster
        self.motion = motion or MotionConfig()
        self.gt_side = int(round(math.sqrt(gt_samples)))
        if self.gt_side**2 != gt_samples or gt_samples < 16:
            raise ValueError(f"gt_samples must be a square number >= 16, got {gt_samples}")
        height, width = self.out_size
        self.focal = 0.9 * width  # output pixels
        self.centre = np.array([width / 2.0, height / 2.0])
        self.textures = texture_bank()
        self._build(np.random.default_rng(self.seed), objects)

    # -- scene construction ---------------------------------------------------------------------
    def _texels_per_unit(self, rng, radius: float, z: float) -> float:
        """Texture scale giving 0.7-2 texels per output pixel at depth z: detail the render aliases."""
        pixels_per_unit = radius * self.focal / z
        return pixels_per_unit * rng.uniform(0.7, 2.0)

    def _tint(self, rng, texture: int) -> tuple[float, float, float]:
        if texture < len(_PHOTOS_RGB):
            return (1.0, 1.0, 1.0)
        return tuple(rng.uniform(0.35, 1.0, 3))

    def _build(self, rng, objects: int) -> None:
        height, width = self.out_size
        n_textures = self.textures.shape[0]
        mid_depth = 8.0
        profile = self.motion
        # Camera. Turning slides the whole view (screen offset in output pixels, no parallax);
        # strafing moves the camera in the world (screen speed focal * v / z: parallax); dolly and
        # roll are slow oscillations. A still camera does none of these.
        still = rng.random() < profile.static_fraction
        turn = 0.0 if still else _log_uniform(rng, profile.camera_speed)
        strafe = 0.0 if still else _log_uniform(rng, profile.strafe_speed)
        self.turn_x, self.turn_y = _drifting_path(rng, turn)
        self.cam_x, self.cam_y = _drifting_path(rng, strafe * mid_depth / self.focal)
        self.cam_z = Wave(amp=0.0 if still else rng.uniform(0.0, 1.5), freq=2 * math.pi / rng.uniform(80, 240),
                          phase=rng.uniform(0, 6.3))
        self.cam_roll = Wave(amp=0.0 if still else rng.uniform(0.0, 0.15), freq=2 * math.pi / rng.uniform(80, 240),
                             phase=rng.uniform(0, 6.3))

        layers = []
        background = int(rng.integers(0, len(_PHOTOS_RGB)))
        layers.append(Layer(
            z=BACKGROUND_DEPTH, shape=SHAPE_PLANE, radius=1.0, texture=background,
            texel_scale=self._texels_per_unit(rng, 1.0, BACKGROUND_DEPTH), x=Wave(), y=Wave(), spin=Wave(),
            tex_offset=tuple(rng.uniform(0, TEXTURE_SIZE, 2)),
        ))
        if rng.random() < 0.75:  # a fence: sub-pixel bars, the aliasing a game upscaler must resolve
            z = rng.uniform(6.0, 10.0)
            radius = rng.uniform(0.25, 0.45) * width / self.focal * z
            spacing_px = rng.uniform(8, 16) * width / 640
            bar_px = rng.uniform(0.6, 1.4) * width / 640
            units_px = radius * self.focal / z
            texture = int(rng.integers(0, n_textures))
            layers.append(Layer(
                z=z, shape=SHAPE_FENCE, radius=radius, texture=texture,
                texel_scale=self._texels_per_unit(rng, radius, z), tint=self._tint(rng, texture),
                param1=bar_px / spacing_px, param2=units_px / spacing_px,
                x=Wave(amp=rng.uniform(0, 0.3) * radius, freq=2 * math.pi / rng.uniform(60, 200),
                       phase=rng.uniform(0, 6.3)),
                y=Wave(), spin=Wave(amp=rng.uniform(0, 0.3), freq=2 * math.pi / rng.uniform(80, 240)),
            ))
        for _ in range(objects):
            z = rng.uniform(3.5, 15.0)
            shape = int(rng.choice([SHAPE_DISC, SHAPE_BOX, SHAPE_RING, SHAPE_BOX], p=[0.3, 0.3, 0.2, 0.2]))
            radius = rng.uniform(0.05, 0.2) * width / self.focal * z
            param1 = {SHAPE_BOX: rng.uniform(0.3, 1.0), SHAPE_RING: rng.uniform(0.4, 0.8)}.get(shape, 0.0)
            spin_rate = rng.uniform(-0.05, 0.05)
            if shape == SHAPE_BOX and rng.random() < 0.5:  # a thin rod: sub-pixel width, spinning fast
                param1 = rng.uniform(0.01, 0.04)
                radius *= 2.0
                spin_rate *= 2.0
            texture = int(rng.integers(0, n_textures))
            speed = 0.0 if rng.random() < profile.still_objects else _log_uniform(rng, profile.object_speed)
            x, y = _drifting_path(rng, speed)
            layers.append(Layer(
                z=z, shape=shape, radius=radius, texture=texture,
                texel_scale=self._texels_per_unit(rng, radius, z), tint=self._tint(rng, texture),
                param1=param1, x=x, y=y, spin=Wave(phase=rng.uniform(0, 6.3), rate=spin_rate),
                tex_offset=tuple(rng.uniform(0, TEXTURE_SIZE, 2)),
                base=(rng.uniform(0.1, 0.9) * width, rng.uniform(0.1, 0.9) * height), on_screen=True,
            ))
        for layer in layers[1:]:
            if not layer.on_screen:  # the fence: spread over the view at its depth
                half_w = width / 2 / self.focal * layer.z
                half_h = height / 2 / self.focal * layer.z
                layer.base = (rng.uniform(-0.6, 0.6) * half_w, rng.uniform(-0.6, 0.6) * half_h)
        self.layers = sorted(layers, key=lambda layer: layer.z)  # near to far: first hit wins

    # -- per-time geometry ----------------------------------------------------------------------
    def _object_centre(self, layer: Layer, t: float, reach: float) -> np.ndarray:
        """Screen centre (output px) of an on-screen object, wrapped so it re-enters the view from the
        other side only after leaving it completely (no surface jumps while visible)."""
        height, width = self.out_size
        margin = reach + 2.0
        centre = []
        for value, size in ((layer.base[0] + layer.x(t), width), (layer.base[1] + layer.y(t), height)):
            span = size + 2 * margin
            centre.append((value + margin) % span - margin)
        return np.array(centre)

    def layer_table(self, t: float) -> np.ndarray:
        """Per-layer kernel parameters at time t: [L, LAYER_COLUMNS] float64, near to far."""
        t = t * self.motion_scale
        roll = self.cam_roll(t)
        camera_xy = np.array([self.cam_x(t), self.cam_y(t)])
        turned = np.array([self.turn_x(t), self.turn_y(t)])  # the view slid this far (output px)
        cam_z = self.cam_z(t)
        table = np.zeros((len(self.layers), LAYER_COLUMNS))
        for row, layer in zip(table, self.layers):
            depth = layer.z - cam_z
            angle = layer.spin(t)
            matrix = depth / (self.focal * layer.radius) * _rotation(roll - angle)
            reach = layer.bound() * self.focal * layer.radius / depth
            if layer.on_screen:
                # screen p -> local: R(roll - angle) (p - centre(t)) depth / (f r)
                offset = -matrix @ self._object_centre(layer, t, reach)
            else:
                # screen p -> world on the plane: C + R(roll) (p + turned - c) depth / f;
                # world -> local: R(-angle)(X - O) / r
                origin = np.array([layer.base[0] + layer.x(t), layer.base[1] + layer.y(t)])
                offset = matrix @ (turned - self.centre) + _rotation(-angle) @ (camera_xy - origin) / layer.radius
            row[[A0, A1, A2]] = matrix[0, 0], matrix[0, 1], offset[0]
            row[[A3, A4, A5]] = matrix[1, 0], matrix[1, 1], offset[1]
            row[DEPTH], row[SHAPE], row[TEX] = depth, layer.shape, layer.texture
            row[TEX_SCALE], row[TEX_U], row[TEX_V] = layer.texel_scale, *layer.tex_offset
            row[P1], row[P2] = layer.param1, layer.param2
            row[[TINT_R, TINT_G, TINT_B]] = layer.tint
            if layer.shape == SHAPE_PLANE:
                row[[XMIN, XMAX, YMIN, YMAX]] = -1e30, 1e30, -1e30, 1e30  # finite: the kernels use fastmath
            else:
                centre = np.linalg.solve(matrix, -offset)
                row[[XMIN, XMAX, YMIN, YMAX]] = centre[0] - reach, centre[0] + reach, centre[1] - reach, centre[1] + reach
        return table

    def shade(self, t: float, xs: np.ndarray, ys: np.ndarray):
        """Linear colour [3, N], depth [N] and layer index [N] at output-pixel points (xs, ys) at time t."""
        xs = np.ascontiguousarray(xs, dtype=np.float64).ravel()
        ys = np.ascontiguousarray(ys, dtype=np.float64).ravel()
        color = np.empty((3, xs.size), np.float32)
        depth = np.empty(xs.size, np.float32)
        ids = np.empty(xs.size, np.int32)
        _shade_points(self.layer_table(t), self.textures, xs, ys, color, depth, ids)
        return color, depth, ids

    def render_gt(self, t: float) -> np.ndarray:
        """Ground truth at time t (fractional allowed): [3, H, W] float16, sRGB-encoded."""
        height, width = self.out_size
        linear = np.empty((3, height, width), np.float32)
        _render_supersampled(self.layer_table(t), self.textures, height, width, self.gt_side, linear)
        return srgb_encode(linear).astype(np.float16)

    def _pixel_grid(self) -> tuple[np.ndarray, np.ndarray, float, float]:
        """Render-pixel centres in output pixels, and the output pixels per render pixel (sx, sy)."""
        h, w = self.in_size
        sx, sy = self.out_size[1] / w, self.out_size[0] / h
        cols, rows = np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5)
        return cols * sx, rows * sy, sx, sy

    def future_alpha(self, k: int) -> float:
        """Frame k's extrapolation time in (0, 1] frames, fixed by the scene seed and k."""
        return 1.0 - float(np.random.default_rng([self.seed, k, 7]).random())

    def disoccluded_between(self, t_from: float, t_to: float) -> np.ndarray:
        """[H, W] bool: output pixels at time t_to whose surface was hidden or off-screen at t_from
        (the renderer's exact answer, for scoring extrapolation on uncovered pixels only)."""
        height, width = self.out_size
        cols, rows = np.meshgrid(np.arange(width) + 0.5, np.arange(height) + 0.5)
        _, _, ids = self.shade(t_to, cols, rows)
        previous = self._map_back(ids, np.stack([cols.ravel(), rows.ravel()]), t_to, t_from)
        _, _, ids_before = self.shade(t_from, previous[0], previous[1])
        off_screen = (previous[0] < 0) | (previous[0] >= width) | (previous[1] < 0) | (previous[1] >= height)
        return ((ids_before != ids) | off_screen).reshape(height, width)

    def _map_back(self, ids: np.ndarray, points: np.ndarray, t_now: float, t_before: float) -> np.ndarray:
        """[2, N] output-pixel positions at t_before of the surfaces `ids` seen at `points` [2, N] at t_now."""
        now, before = self.layer_table(t_now), self.layer_table(t_before)
        matrix_now = now[ids][:, [A0, A1, A3, A4]].reshape(-1, 2, 2)
        matrix_before = before[ids][:, [A0, A1, A3, A4]].reshape(-1, 2, 2)
        local = np.einsum("nij,jn->in", matrix_now, points) + now[ids][:, [A2, A5]].T
        return np.linalg.solve(matrix_before, (local - before[ids][:, [A2, A5]].T).T[..., None])[..., 0].T

    def render_frame(self, k: int) -> Frame:
        """Frame k: jittered render, ground truth, motion vectors, depth, disocclusion, jitter, and the
        ground truth at k + future_alpha(k)."""
        h, w = self.in_size
        height, width = self.out_size
        jitter = jitter_offset(k, self.ratio)
        alpha = self.future_alpha(k)
        centre_x, centre_y, sx, sy = self._pixel_grid()
        color, depth, _ = self.shade(k, centre_x + jitter[0] * sx, centre_y + jitter[1] * sy)

        # Motion: the surface under each unjittered centre, mapped back through its layer's affine.
        _, _, ids = self.shade(k, centre_x, centre_y)
        points = np.stack([centre_x.ravel(), centre_y.ravel()])
        previous = self._map_back(ids, points, k, k - 1)
        motion = np.stack([(previous[0] - points[0]) / sx, (previous[1] - points[1]) / sy])

        # Disoccluded: last frame showed another surface there, or the point was off-screen.
        _, _, ids_before = self.shade(k - 1, previous[0], previous[1])
        off_screen = (previous[0] < 0) | (previous[0] >= width) | (previous[1] < 0) | (previous[1] >= height)
        disoccluded = (ids_before != ids) | off_screen

        return Frame(
            lr=srgb_encode(color).reshape(3, h, w).astype(np.float16),
            gt=self.render_gt(float(k)),
            motion=motion.reshape(2, h, w).astype(np.float32),
            depth=depth.reshape(1, h, w).astype(np.float32),
            disocclusion=disoccluded.reshape(1, h, w).astype(np.uint8),
            jitter=jitter,
            gt_future=self.render_gt(k + alpha),
            future_alpha=np.array([alpha], np.float32),
        )


def scene_seed(seed: int, index: int) -> int:
    """The seed of scene `index` of a synthetic dataset built with `seed` (held-out scenes use indices
    no training build reaches)."""
    return seed * 100003 + index


def synth_windows(
    frames: int, ratio: float, out_size: tuple[int, int], window: int, frames_per_sequence: int = 60,
    seed: int = 0, objects: int = 5, gt_samples: int = 16, first_sequence: int = 0, motion_scale: float = 1.0,
    motion: MotionConfig | None = None,
) -> Iterator[Window]:
    """Windows of `window` consecutive frames over ceil(frames / frames_per_sequence) scenes.

    Scene s uses seed `seed * 100003 + s`; frames beyond the last whole window of a scene are not rendered.
    """
    sequences = math.ceil(frames / frames_per_sequence)
    for index in range(first_sequence, first_sequence + sequences):
        length = min(frames_per_sequence, frames - (index - first_sequence) * frames_per_sequence)
        scene = SynthScene(out_size, ratio, scene_seed(seed, index), objects=objects, gt_samples=gt_samples,
                           motion_scale=motion_scale, motion=motion)
        name = f"synth-s{seed}-{index:05d}"
        for start in range(0, length - window + 1, window):
            rendered = [scene.render_frame(k) for k in range(start, start + window)]
            yield Window.from_frames(rendered, sequence=name, start=start, source="synth")
