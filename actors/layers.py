"""The layer stack both compositors share: named layers, each an input port plus where and
how it is drawn, editable from any thread while the compositor runs.

A compositor mixes in :class:`LayerStack` and says only what differs: the memory space of
its layer ports (:meth:`LayerStack._layer_port`) and what it keeps per layer
(:meth:`LayerStack._layer_state`). Layer geometry survives a supervisor restart: the
restarted instance adopts the old ports, and :meth:`LayerStack.on_restart` brings back
each one's spec, including layers added or moved while it ran.
"""

from __future__ import annotations

import dataclasses
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from streamlib import StreamInput, VideoFrame
from streamlib.mailbox import Overflow
from streamlib.ports import PortMap

__all__ = ["Layer", "LayerStack", "LayerState"]


@dataclass(frozen=True, slots=True)
class Layer:
    """Where and how a layer is drawn (immutable: ``update_layer`` replaces it)."""

    name: str
    z: float = 0.0
    x: int = 0
    y: int = 0
    scale: float = 1.0
    opacity: float = 1.0
    visible: bool = True


class LayerState:
    """A layer's spec, its port and its latest frame; compositors subclass it to cache more."""

    __slots__ = ("frame", "port", "spec")

    def __init__(self, spec: Layer, port: StreamInput) -> None:
        self.spec = spec
        self.port = port
        self.frame: VideoFrame | None = None


_CHANGEABLE = {"z", "x", "y", "scale", "opacity", "visible"}


def clamp01(value: float) -> float:
    return min(max(float(value), 0.0), 1.0)


_S = TypeVar("_S", bound=LayerState)


class LayerStack(Generic[_S]):
    """Mixin for an :class:`~streamlib.Actor` whose inputs are layers (see the module docstring)."""

    path: str
    inputs: PortMap
    restarts: int
    maxsize: int
    overflow: Overflow
    own_fps: float | None

    if TYPE_CHECKING:  # provided by Actor, which follows this mixin in the class's bases

        def add_input(self, port: StreamInput) -> StreamInput: ...
        def remove_input(self, name: str) -> StreamInput: ...

    def _init_layers(
        self,
        width: int | None,
        height: int | None,
        fps: float | None,
        background: tuple[int, int, int],
        maxsize: int,
        overflow: Overflow,
    ) -> None:
        """The canvas (``None`` size: the first frame's), the rate without input, and the
        defaults of the layer inputs; what every compositor checks and keeps alike."""
        if (width is None) != (height is None):
            raise ValueError("give both width and height, or neither (the first frame's size)")
        if fps is not None and not fps > 0:
            raise ValueError(f"fps must be > 0 or None, got {fps!r}")
        self.size: tuple[int, int] | None = (int(width), int(height)) if width and height else None
        self.fps = fps
        self.own_fps = fps
        self.background = tuple(int(c) for c in background)
        self.maxsize = maxsize
        self.overflow = overflow
        self._layers: dict[str, _S] = {}
        self._order: list[_S] = []
        self._layers_lock = threading.Lock()

    # -- what a compositor specialises -------------------------------------------------

    def _layer_port(self, name: str, maxsize: int, overflow: Overflow) -> StreamInput:
        return StreamInput(name, VideoFrame, maxsize=maxsize, overflow=overflow)

    def _layer_state(self, spec: Layer, port: StreamInput) -> _S:
        raise NotImplementedError  # each compositor makes its own kind of layer state

    # -- layers (callable from any thread) -----------------------------------------------

    def add_layer(
        self,
        name: str,
        *,
        z: float | None = None,
        x: int = 0,
        y: int = 0,
        scale: float = 1.0,
        opacity: float = 1.0,
        visible: bool = True,
        maxsize: int | None = None,
        overflow: Overflow | None = None,
    ) -> StreamInput:
        """Create a layer and its input port (named ``name``) and return the port, for ``>>``.
        ``z`` defaults to one above the current top layer."""
        with self._layers_lock:
            if name in self._layers:
                raise ValueError(f"{self.path} already has a layer {name!r}")
            if not scale > 0:
                raise ValueError(f"scale must be > 0, got {scale!r}")
            if z is None:
                z = self._top_z() + 1.0
            spec = Layer(name, float(z), int(x), int(y), float(scale), clamp01(opacity), bool(visible))
            port = self._layer_port(name, maxsize or self.maxsize, overflow or self.overflow)
            self._set_layers({**self._layers, name: self._layer_state(spec, port)})
            self.add_input(port)
        return port

    def remove_layer(self, name: str) -> None:
        """Remove a layer: it disappears from the next frame, and its port is disconnected."""
        with self._layers_lock:
            layers = dict(self._layers)
            state = layers.pop(name, None)
            if state is None:
                raise KeyError(f"{self.path} has no layer {name!r}; layers: {', '.join(self._layers) or 'none'}")
            self._set_layers(layers)
            if self.inputs.get(name) is state.port:
                self.remove_input(name)
        port = state.port
        for upstream in port.upstreams:
            upstream.disconnect(port)  # tells the runtime this actor's wiring changed
        port.mailbox.close()  # releases any sender blocked on it

    def update_layer(self, name: str, **changes: Any) -> Layer:
        """Change a layer's ``z``, ``x``, ``y``, ``scale``, ``opacity`` or ``visible``; returns the new spec."""
        unknown = set(changes) - _CHANGEABLE
        if unknown:
            raise TypeError(f"update_layer() cannot change {', '.join(sorted(unknown))}")
        for key, cast in (("x", int), ("y", int), ("z", float), ("scale", float), ("visible", bool)):
            if key in changes:
                changes[key] = cast(changes[key])
        if "opacity" in changes:
            changes["opacity"] = clamp01(changes["opacity"])
        if "scale" in changes and not changes["scale"] > 0:
            raise ValueError(f"scale must be > 0, got {changes['scale']!r}")
        with self._layers_lock:
            state = self._layers.get(name)
            if state is None:
                raise KeyError(f"{self.path} has no layer {name!r}")
            state.spec = dataclasses.replace(state.spec, **changes)
            self._set_layers(dict(self._layers))
        return state.spec

    @property
    def layers(self) -> list[Layer]:
        """The layers, bottom to top."""
        return [s.spec for s in self._order]

    # -- internals -----------------------------------------------------------------------

    def _top_z(self) -> float:
        return max((s.spec.z for s in self._layers.values()), default=-1.0)

    def _set_layers(self, layers: dict[str, _S]) -> None:
        self._layers = layers  # rebinding is atomic: process() works on a snapshot
        self._order = sorted(layers.values(), key=lambda s: s.spec.z)

    def on_restart(self, previous: Any) -> None:
        """A supervisor's restart: this instance has adopted ``previous``'s ports (and so
        its wiring); bring back the layers of those ports with their specs, as they were
        at the crash (layers added or changed at runtime included)."""
        super().on_restart(previous)  # type: ignore[misc]
        remembered = {name: state.spec for name, state in previous._layers.items()}
        with self._layers_lock:
            layers = dict(self._layers)
            for name, port in self.inputs.items():
                state = layers.get(name)
                if state is None or state.port is not port:
                    spec = remembered.get(name) or (state.spec if state is not None else None)
                    if spec is None:
                        spec = Layer(name, z=max((s.spec.z for s in layers.values()), default=-1.0) + 1.0)
                    layers[name] = self._layer_state(spec, port)
            self._set_layers(layers)
