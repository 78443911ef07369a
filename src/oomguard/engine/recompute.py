"""Activation checkpointing: a forward keeps only each block's input; the backward recomputes the rest.

Exact: ``torch.utils.checkpoint`` without reentrance and with the RNG state
preserved, so dropout draws the same masks when a block is recomputed, and
the gradients equal those without it. A recompute runs each block's forward a
second time, which would update BatchNorm's running statistics twice: they
are put back after every backward (:meth:`Recompute.keeping_statistics`), so
the model's whole state after a step is the one without checkpointing.

The blocks, in order of preference:

1. the blocks a user names (module names, or the modules themselves);
2. timm's own: ``set_grad_checkpointing()`` of a timm model inside the model;
3. oomguard's built-in models: their ``checkpoint_blocks()``;
4. any model: the children with parameters of the ``nn.Sequential`` or
   ``nn.ModuleList`` that spreads the most parameters over its children (the
   parameters outside its largest child), so that a container holding one
   whole network is not taken for a stack of blocks.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

Blocks = Sequence[str | nn.Module]
Context = contextlib.AbstractContextManager[Any]


def _parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _with_parameters(modules: Iterator[nn.Module]) -> list[nn.Module]:
    return [module for module in modules if _parameters(module) > 0]


def largest_stack(model: nn.Module) -> list[nn.Module]:
    """The children with parameters of the container that spreads the most parameters over them (4.)."""
    best: list[nn.Module] = []
    best_spread = 0
    for module in model.modules():
        if not isinstance(module, nn.Sequential | nn.ModuleList):
            continue
        children = _with_parameters(module.children())
        if len(children) < 2:
            continue
        counts = [_parameters(child) for child in children]
        spread = sum(counts) - max(counts)
        if spread > best_spread:
            best, best_spread = children, spread
    return best


def _named(model: nn.Module, blocks: Blocks) -> list[nn.Module]:
    modules = dict(model.named_modules())
    found: list[nn.Module] = []
    for block in blocks:
        if isinstance(block, nn.Module):
            found.append(block)
        elif block in modules:
            found.append(modules[block])
        else:
            raise ValueError(f"blocks: the model has no module named {block!r}; name modules as "
                             "model.named_modules() does, e.g. 'backbone.layers.0'")
    return found


def _timm_model(model: nn.Module) -> nn.Module | None:
    for module in model.modules():
        if callable(getattr(module, "set_grad_checkpointing", None)):
            return module
    return None


def _common_parts(paths: list[list[str]]) -> list[str]:
    common: list[str] = []
    for parts in zip(*paths, strict=False):
        if len(set(parts)) != 1:
            break
        common.append(parts[0])
    return common


def timm_blocks(model: nn.Module) -> list[nn.Module]:
    """The blocks of a timm model as timm itself groups them (``group_matcher``, finest groups): each
    group's common module, the stem and the head left out. Empty where timm cannot tell."""
    matcher = getattr(model, "group_matcher", None)
    try:
        from timm.models import group_modules

        groups = group_modules(model, matcher(coarse=False)) if callable(matcher) else {}
    except Exception:  # an older timm, a model without groups: the blocks stay unknown
        return []
    modules = dict(model.named_modules())
    blocks = []
    for names in groups.values():
        parts = _common_parts([name.split(".") for name in names])
        prefix = ".".join(parts)
        if len(parts) > 1 and prefix in modules:  # ``blocks.3.1``, not the stem's ``conv_stem|bn1``
            blocks.append(modules[prefix])
    return blocks


_warmed = False


def _warm_up() -> None:
    """Use ``torch.utils.checkpoint`` once on a tiny tensor: its first call imports ``torch._dynamo`` (with
    sympy: ~80 MB of resident memory in torch 2.13, for good; creating a torch optimizer imports it too,
    so a training process has usually paid already), which must be in place before the probe measures
    anything with checkpointing on."""
    global _warmed
    if _warmed:
        return
    with torch.enable_grad():
        x = torch.ones(1, requires_grad=True)
        checkpoint(torch.mul, x, x, use_reentrant=False).sum().backward()
    _warmed = True


class _Checkpointed:
    """A block's forward run under ``torch.utils.checkpoint`` while gradients are on (an instance attribute
    over the class's forward: the module, its parameters and its state_dict keys stay as they were).

    ``before_recompute`` runs as each recompute begins: on host memory the C heap's freed pages go back
    first, so the last block's recomputed activations are not counted again (see :class:`Recompute`).
    """

    def __init__(self, forward: Callable[..., Any], own: bool,
                 before_recompute: Callable[[], None] | None) -> None:
        self.forward = forward
        #: The block had a forward of its own in its ``__dict__`` (another wrapper): put back on disable.
        self.own = own
        self.before_recompute = before_recompute

    def _contexts(self) -> tuple[Context, Context]:
        return contextlib.nullcontext(), _Calling(self.before_recompute)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if not torch.is_grad_enabled():
            return self.forward(*args, **kwargs)
        extra: dict[str, Any] = {"context_fn": self._contexts} if self.before_recompute is not None else {}
        return checkpoint(self.forward, *args, use_reentrant=False, preserve_rng_state=True, **extra,
                          **kwargs)


class _Calling(contextlib.AbstractContextManager[None]):
    def __init__(self, call: Callable[[], None] | None) -> None:
        self.call = call

    def __enter__(self) -> None:
        if self.call is not None:
            self.call()

    def __exit__(self, *exc: object) -> None:
        return None


def _norms(modules: list[nn.Module]) -> list[nn.modules.batchnorm._NormBase]:
    seen: dict[int, nn.modules.batchnorm._NormBase] = {}
    for block in modules:
        for module in block.modules():
            if isinstance(module, nn.modules.batchnorm._NormBase) and module.track_running_stats:
                seen[id(module)] = module
    return list(seen.values())


class Recompute:
    """Activation checkpointing of one model; off until :meth:`enable`. See the module docstring.

    ``before_recompute``: called as each block's recompute begins (timm's: as the gradient of each of
    its blocks arrives, see :func:`timm_blocks`).
    On host memory the Guard passes the C heap's trim: glibc otherwise keeps the recomputed
    activations' freed chunks, and a step's peak varied 50-185 MB from step to step where it holds
    ~45 MB with the trim (a 48-block float64 MLP; about 20% more time).
    """

    def __init__(self, model: nn.Module, blocks: Blocks | None = None,
                 before_recompute: Callable[[], None] | None = None) -> None:
        self.model = model
        self.on = False
        self.before_recompute = before_recompute
        self._hooks: list[Any] = []
        self._timm: nn.Module | None = None
        self._blocks: list[nn.Module] = []
        #: Where the blocks came from, in words (for events): "named", "timm", "built-in", "largest stack".
        self.source = ""
        if blocks:
            self._blocks, self.source = _named(model, blocks), "the named blocks"
            return
        timm = _timm_model(model)
        if timm is not None and self._timm_switch(timm, True) and self._timm_switch(timm, False):
            self._timm, self.source = timm, "timm's set_grad_checkpointing"
            return
        own = getattr(model, "checkpoint_blocks", None)
        found = list(own()) if callable(own) else []
        if found:
            self._blocks, self.source = found, f"the {len(found)} blocks of the built-in model"
            return
        self._blocks = largest_stack(model)
        if self._blocks:
            self.source = f"the {len(self._blocks)} children of the largest nn.Sequential/nn.ModuleList"

    @property
    def supported(self) -> bool:
        return self._timm is not None or bool(self._blocks)

    @staticmethod
    def _timm_switch(model: nn.Module, enable: bool) -> bool:
        try:
            model.set_grad_checkpointing(enable)  # type: ignore[operator]
        except (AssertionError, NotImplementedError, TypeError):  # "gradient checkpointing not supported"
            return False
        return True

    def enable(self) -> None:
        if self.on or not self.supported:
            return
        _warm_up()
        if self._timm is not None:
            self._timm_switch(self._timm, True)
            if self.before_recompute is not None:
                self._hooks = [block.register_forward_hook(self._before_backward)
                               for block in timm_blocks(self._timm)]
        for block in self._blocks:
            if not isinstance(block.__dict__.get("forward"), _Checkpointed):
                own = "forward" in block.__dict__
                block.forward = _Checkpointed(block.forward, own,  # type: ignore[method-assign]
                                              self.before_recompute)
        self.on = True

    def disable(self) -> None:
        if not self.on:
            return
        if self._timm is not None:
            self._timm_switch(self._timm, False)
        for hook in self._hooks:
            hook.remove()
        self._hooks = []
        for block in self._blocks:
            wrapped = block.__dict__.get("forward")
            if isinstance(wrapped, _Checkpointed):
                if wrapped.own:
                    block.forward = wrapped.forward  # type: ignore[method-assign]
                else:
                    del block.forward  # the class's forward again
        self.on = False

    def _before_backward(self, module: nn.Module, inputs: Any, output: Any) -> None:
        """timm's checkpointing takes no recompute context: ``before_recompute`` runs as the gradient of a
        block's output arrives instead, just before that block is recomputed."""
        call = self.before_recompute
        if call is not None and isinstance(output, torch.Tensor) and output.requires_grad:
            output.register_hook(lambda grad: call())

    @contextlib.contextmanager
    def keeping_statistics(self) -> Iterator[None]:
        """Around a backward: running statistics as the forward left them, whatever a recompute did."""
        if not self.on:
            yield
            return
        region = [self._timm] if self._timm is not None else self._blocks
        kept = [(norm, [buffer.clone() for buffer in norm.buffers(recurse=False)])
                for norm in _norms(region) if norm.training]
        try:
            yield
        finally:
            with torch.no_grad():
                for norm, saved in kept:
                    for buffer, value in zip(norm.buffers(recurse=False), saved, strict=True):
                        buffer.copy_(value)
