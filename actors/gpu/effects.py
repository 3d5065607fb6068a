"""Ready GPU effects, each a :class:`~streamlib.actors.gpu.shader.ShaderActor` with its WGSL.

``Invert``, ``ColorMatrix``, ``Grade``, ``GaussianBlur`` (separable: two passes) and
``ChromaKey``. Their parameters are shader parameters: change them while they run with
``effect.set_params(...)`` or a ``DataMessage({...})`` on the ``'params'`` input, and
replace their WGSL altogether with ``await effect.update_shader(source)``.
Each has a numpy reference (``reference(pixels, ...)``) computing what the shader
should, used by the tests.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .shader import ShaderActor

__all__ = ["ChromaKey", "ColorMatrix", "GaussianBlur", "Grade", "Invert"]

_F32 = np.float32


def _unorm(values: NDArray[Any]) -> NDArray[np.uint8]:
    """Float 0..1 to uint8 as a rgba8unorm store does (clamp, round to nearest)."""
    return np.rint(np.clip(values, 0.0, 1.0) * 255.0).astype(np.uint8)  # type: ignore[no-any-return]


def _unit(pixels: NDArray[np.uint8]) -> NDArray[np.float32]:
    return pixels.astype(_F32) / _F32(255.0)


class Invert(ShaderActor):
    """``255 - value`` on the colour channels; alpha kept."""

    source = """
@compute @workgroup_size(8, 8)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    if (!inside(id)) { return; }
    let p = vec2<i32>(id.xy);
    let c = textureLoad(src, p, 0);
    textureStore(dst, p, vec4<f32>(1.0 - c.rgb, c.a));
}
"""

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)

    @staticmethod
    def reference(pixels: NDArray[np.uint8]) -> NDArray[np.uint8]:
        out = pixels.copy()
        out[..., :3] = 255 - pixels[..., :3]
        return out


class ColorMatrix(ShaderActor):
    """``rgb' = matrix @ rgb + offset`` on 0..1 colours (``matrix`` 3x3, row-major like
    numpy; ``offset`` a 3-sequence); alpha kept. Sepia, channel swaps, white balance..."""

    source = """
@compute @workgroup_size(8, 8)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    if (!inside(id)) { return; }
    let p = vec2<i32>(id.xy);
    let c = textureLoad(src, p, 0);
    textureStore(dst, p, vec4<f32>(clamp(u.matrix * c.rgb + u.offset, vec3<f32>(0.0), vec3<f32>(1.0)), c.a));
}
"""

    def __init__(
        self,
        matrix: Sequence[Sequence[float]] | NDArray[Any] = ((1, 0, 0), (0, 1, 0), (0, 0, 1)),
        offset: Sequence[float] = (0.0, 0.0, 0.0),
        **kw: Any,
    ) -> None:
        m = np.asarray(matrix, dtype=float)
        if m.shape != (3, 3):
            raise ValueError(f"matrix must be 3x3, got shape {m.shape}")
        super().__init__(params={"matrix": m.tolist(), "offset": [float(v) for v in offset]}, **kw)

    @staticmethod
    def reference(
        pixels: NDArray[np.uint8], matrix: Any, offset: Sequence[float] = (0.0, 0.0, 0.0)
    ) -> NDArray[np.uint8]:
        out = pixels.copy()
        rgb = _unit(pixels[..., :3]) @ np.asarray(matrix, _F32).T + np.asarray(offset, _F32)
        out[..., :3] = _unorm(rgb)
        return out


class Grade(ShaderActor):
    """A colour grade: ``contrast`` around mid-grey, then ``brightness`` added,
    ``saturation`` (0: grey, 1: unchanged, >1: more), ``gamma`` (>1 brightens the mid-tones),
    ``gain`` per channel. Alpha kept."""

    source = """
@compute @workgroup_size(8, 8)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    if (!inside(id)) { return; }
    let p = vec2<i32>(id.xy);
    let c = textureLoad(src, p, 0);
    var rgb = (c.rgb - vec3<f32>(0.5)) * u.contrast + vec3<f32>(0.5 + u.brightness);
    let luma = dot(rgb, vec3<f32>(0.2126, 0.7152, 0.0722));
    rgb = mix(vec3<f32>(luma), rgb, u.saturation);
    rgb = pow(clamp(rgb, vec3<f32>(0.0), vec3<f32>(1.0)), vec3<f32>(1.0 / u.gamma)) * u.gain;
    textureStore(dst, p, vec4<f32>(clamp(rgb, vec3<f32>(0.0), vec3<f32>(1.0)), c.a));
}
"""

    def __init__(
        self,
        brightness: float = 0.0,
        contrast: float = 1.0,
        saturation: float = 1.0,
        gamma: float = 1.0,
        gain: Sequence[float] = (1.0, 1.0, 1.0),
        **kw: Any,
    ) -> None:
        if gamma <= 0:
            raise ValueError(f"gamma must be > 0, got {gamma!r}")
        params = {
            "brightness": float(brightness),
            "contrast": float(contrast),
            "saturation": float(saturation),
            "gamma": float(gamma),
            "gain": [float(g) for g in gain],
        }
        super().__init__(params=params, **kw)

    @staticmethod
    def reference(
        pixels: NDArray[np.uint8],
        brightness: float = 0.0,
        contrast: float = 1.0,
        saturation: float = 1.0,
        gamma: float = 1.0,
        gain: Sequence[float] = (1.0, 1.0, 1.0),
    ) -> NDArray[np.uint8]:
        out = pixels.copy()
        rgb = (_unit(pixels[..., :3]) - _F32(0.5)) * _F32(contrast) + _F32(0.5 + brightness)
        luma = rgb @ np.array([0.2126, 0.7152, 0.0722], _F32)
        rgb = luma[..., None] + (rgb - luma[..., None]) * _F32(saturation)
        rgb = np.power(np.clip(rgb, 0, 1), _F32(1.0 / gamma)) * np.asarray(gain, _F32)
        out[..., :3] = _unorm(rgb)
        return out


class GaussianBlur(ShaderActor):
    """A separable gaussian blur of standard deviation ``sigma`` pixels (kernel radius
    ``ceil(3 * sigma)`` unless given): a horizontal pass, then a vertical one, edges
    clamped. All four channels are blurred."""

    source = """
@compute @workgroup_size(8, 8)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    if (!inside(id)) { return; }
    let p = vec2<i32>(id.xy);
    var step = vec2<i32>(1, 0);
    if (u.pass_index == 1u) { step = vec2<i32>(0, 1); }
    let hi = vec2<i32>(textureDimensions(src)) - vec2<i32>(1);
    // weights exp(-i^2 / (2 sigma^2)), by products only: w(i+1) = w(i) q(i), q(i+1) = q(i) e^(-2k)
    let k = 0.5 / (u.sigma * u.sigma);
    var w = 1.0;
    var q = exp(-k);
    let q2 = exp(-2.0 * k);
    var acc = textureLoad(src, p, 0);
    var total = 1.0;
    for (var i = 1; i <= i32(u.radius); i = i + 1) {
        w = w * q;
        q = q * q2;
        acc = acc + w * (textureLoad(src, clamp(p + step * i, vec2<i32>(0), hi), 0)
                         + textureLoad(src, clamp(p - step * i, vec2<i32>(0), hi), 0));
        total = total + 2.0 * w;
    }
    textureStore(dst, p, acc / total);
}
"""

    def __init__(self, sigma: float = 2.0, radius: int | None = None, **kw: Any) -> None:
        super().__init__(params=self._blur_params(sigma, radius), passes=2, **kw)

    @staticmethod
    def _blur_params(sigma: float, radius: int | None) -> dict[str, float]:
        if not sigma > 0:
            raise ValueError(f"sigma must be > 0, got {sigma!r}")
        r = math.ceil(3 * sigma) if radius is None else int(radius)
        return {"sigma": float(sigma), "radius": float(max(r, 0))}

    def set_params(self, **values: Any) -> None:
        if "sigma" in values and "radius" not in values:
            values.update(self._blur_params(values["sigma"], None))
        super().set_params(**values)

    @staticmethod
    def kernel(sigma: float, radius: int | None = None) -> NDArray[np.float32]:
        r = math.ceil(3 * sigma) if radius is None else int(radius)
        i = np.arange(-r, r + 1, dtype=_F32)
        w = np.exp(i * i * _F32(-0.5 / (sigma * sigma)))
        return (w / w.sum()).astype(_F32)  # type: ignore[no-any-return]

    @staticmethod
    def reference(pixels: NDArray[np.uint8], sigma: float = 2.0, radius: int | None = None) -> NDArray[np.uint8]:
        """Horizontal then vertical pass, stored as 8 bits in between (as the texture is)."""
        w = GaussianBlur.kernel(sigma, radius)
        r = len(w) // 2
        img = pixels if pixels.ndim == 3 else pixels[..., None]
        for axis in (1, 0):
            pad = [(0, 0)] * img.ndim
            pad[axis] = (r, r)
            padded = np.pad(_unit(img), pad, mode="edge")
            acc = np.zeros(img.shape, _F32)
            n = img.shape[axis]
            for j, weight in enumerate(w):
                acc += weight * np.take(padded, np.arange(j, j + n), axis=axis)
            img = _unorm(acc)
        return img


class ChromaKey(ShaderActor):
    """Makes pixels near the ``key`` colour (0..255 RGB; default pure green) transparent.

    Distance is measured in chroma (BT.601 Cb, Cr), so shading of the key colour keys out
    too: below ``threshold`` alpha is 0, above ``threshold + softness`` unchanged, with a
    smooth ramp in between. The output has 4 channels (straight alpha)."""

    source = """
fn chroma(c: vec3<f32>) -> vec2<f32> {
    return vec2<f32>(dot(c, vec3<f32>(-0.168736, -0.331264, 0.5)), dot(c, vec3<f32>(0.5, -0.418688, -0.081312)));
}

@compute @workgroup_size(8, 8)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    if (!inside(id)) { return; }
    let p = vec2<i32>(id.xy);
    let c = textureLoad(src, p, 0);
    let d = distance(chroma(c.rgb), chroma(u.key));
    let t = clamp((d - u.threshold) / max(u.softness, 1e-4), 0.0, 1.0);
    let a = t * t * (3.0 - 2.0 * t);
    textureStore(dst, p, vec4<f32>(c.rgb, c.a * a));
}
"""

    def __init__(
        self,
        key: Sequence[int] = (0, 255, 0),
        threshold: float = 0.15,
        softness: float = 0.1,
        **kw: Any,
    ) -> None:
        kw.setdefault("channels", 4)
        super().__init__(params=self._key_params(key, threshold, softness), **kw)

    @staticmethod
    def _key_params(key: Sequence[int], threshold: float, softness: float) -> dict[str, Any]:
        if len(key) != 3:
            raise ValueError(f"key must be an RGB triple (0..255), got {key!r}")
        return {"key": [float(k) / 255.0 for k in key], "threshold": float(threshold), "softness": float(softness)}

    def set_key(self, key: Sequence[int]) -> None:
        """Change the key colour (0..255 RGB) while it runs."""
        self.set_params(key=[float(k) / 255.0 for k in key])

    @staticmethod
    def reference(
        pixels: NDArray[np.uint8], key: Sequence[int] = (0, 255, 0), threshold: float = 0.15, softness: float = 0.1
    ) -> NDArray[np.uint8]:
        cb = np.array([-0.168736, -0.331264, 0.5], _F32)
        cr = np.array([0.5, -0.418688, -0.081312], _F32)
        rgb = _unit(pixels[..., :3])
        k = np.asarray(key, _F32) / _F32(255.0)
        d = np.hypot(rgb @ cb - k @ cb, rgb @ cr - k @ cr)
        t = np.clip((d - _F32(threshold)) / _F32(max(softness, 1e-4)), 0, 1)
        a = t * t * (3 - 2 * t)
        alpha = _unit(pixels[..., 3]) if pixels.shape[2] == 4 else np.ones(pixels.shape[:2], _F32)
        out = np.empty((*pixels.shape[:2], 4), np.uint8)
        out[..., :3] = pixels[..., :3]
        out[..., 3] = _unorm(alpha * a)
        return out
