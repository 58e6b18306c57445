"""Hooks and modes that always come off again.

`record_outputs` is the one way convlens reads intermediate activations: kernel_vis.py for
feature maps, cam.py for the last conv layer's maps. `eval_mode` is the one way they evaluate
a model they were handed (kernel_vis.py, saliency.py). Hooks are removed and modes restored in
a `finally`, so an exception inside the block leaves the model exactly as it was.
"""
import contextlib

from torch import nn


@contextlib.contextmanager
def eval_mode(model: nn.Module, freeze: bool = False):
    """Eval mode while inside (dropout off, batch norm on its running statistics); with freeze,
    also requires_grad=False on every parameter (saliency maps need only input and activation
    gradients). Every module's training flag and every parameter's requires_grad are restored
    afterwards, also on error."""
    modes = [(m, m.training) for m in model.modules()]
    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        model.eval()
        if freeze:
            for p in model.parameters():
                p.requires_grad_(False)
        yield model
    finally:
        for m, training in modes:
            m.training = training
        for p, requires_grad in flags:
            p.requires_grad_(requires_grad)


@contextlib.contextmanager
def hooks_set_aside(model: nn.Module):
    """The model's own forward hooks set aside while inside (a probe they must not see), put
    back in their order afterwards, also on error; hooks added inside stay the caller's to remove."""
    saved = [(m, m._forward_hooks.copy(), m._forward_pre_hooks.copy()) for m in model.modules()]
    try:
        for m, _, _ in saved:
            m._forward_hooks.clear()
            m._forward_pre_hooks.clear()
        yield model
    finally:
        for m, hooks, pre_hooks in saved:
            m._forward_hooks.update(hooks)
            m._forward_pre_hooks.update(pre_hooks)


@contextlib.contextmanager
def record_outputs(model: nn.Module, names=None):
    """Record the outputs of the named submodules (default: every leaf module) while inside.

    Yields an ordered dict {name: output tensor}, filled in the order the modules *run*
    (which is the forward order, not the order they were defined in). Outputs are kept as
    they are, still attached to the graph, so gradients can flow to them (Grad-CAM).
    """
    modules = dict(model.named_modules())
    if names is None:
        names = [n for n, m in modules.items() if n and not list(m.children())]
    missing = [n for n in names if n not in modules]
    if missing:
        raise KeyError(f"no submodule named {missing[0]!r}; known: {', '.join(n for n in modules if n)}")
    outputs, handles = {}, []
    try:
        for name in names:
            def hook(module, inputs, output, name=name):
                outputs[name] = output
            handles.append(modules[name].register_forward_hook(hook))
        yield outputs
    finally:
        for handle in handles:
            handle.remove()


def hook_count(model: nn.Module) -> int:
    """Number of forward/backward hooks on the model's modules (tests check it returns to 0)."""
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
               + len(getattr(m, "_backward_pre_hooks", {})) for m in model.modules())
