"""Guided backpropagation saliency maps (and guided Grad-CAM) of a trained convlens network,
on correctly and wrongly classified test images.

    python guided_backprop.py --checkpoint runs/cifar10-gap/model.pt
    python guided_backprop.py --checkpoint runs/cifar10-dense/model.pt
    python guided_backprop.py --checkpoint runs/cifar10-gap/model.pt --index 3 17 --target 5
    python guided_backprop.py --checkpoint runs/cifar10-gap/model.pt --sanity   # + sanity check

Guided backpropagation (Springenberg et al. 2015, Sec. 3.4) is the gradient of the class
score with respect to the image, where every ReLU passes back only positive gradients at
positive inputs. Guided Grad-CAM (Selvaraju et al. 2017) multiplies it by the upsampled
Grad-CAM map, keeping the fine detail but only where the class evidence is. Computed by
saliency.py (hooks on the nn.ReLU modules, always removed).

Writes to the checkpoint's folder (or --out-dir): guided_backprop.png, a grid with per test
image (titled as in cam.py, with the class the maps explain): the image, Grad-CAM overlaid,
the guided backpropagation map as an image (mid-gray is zero), its magnitude sum_c |map| as a
heatmap, and guided Grad-CAM; guided_backprop.json; with --sanity also sanity.png and
sanity.json (the same as cam.py --sanity). --index, --target and --layer runs get names of
their own (guided_backprop-index-3-17-target-dog.png), as in cam.py.
"""

import cli
import files
import plots
import saliency


def parse_args(argv=None):
    p = cli.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=cli.HelpFormatter)
    saliency.add_args(p)
    p.add_argument("--layer", help="Grad-CAM layer for guided Grad-CAM; default: the last conv layer's ReLU")
    return p.parse_args(argv)


def compute_maps(model, x, target=None, layer=None) -> dict:
    """Display-ready maps: {"guided": (N, C, H, W) in [0, 1], mid-gray = 0; "magnitude":
    (N, H, W) in [0, 1]; and, for CNNs, "gradcam" (N, H, W) and "guided_gradcam" (N, C, H, W)}."""
    gb = saliency.guided_backprop(model, x, target)                       # (N, C, H, W)
    mag = saliency.magnitude(gb)                                          # (N, H, W)
    maps = {"guided": saliency.signed_image(gb),
            "magnitude": (mag / saliency.robust_max(mag)).clamp(0, 1)}
    if layer is not None:
        cam = saliency.upsample(saliency.grad_cam(model, x, target, layer), x.shape[-2:])
        maps["gradcam"] = plots.minmax(cam)
        maps["guided_gradcam"] = saliency.signed_image(gb * cam[:, None])   # Selvaraju et al. Sec. 3.1
    return {k: v.cpu() for k, v in maps.items()}


def main(argv=None):
    args = parse_args(argv)
    ex = saliency.load_examples(args)
    network = type(ex.model).__name__
    layer = args.layer or saliency.default_layer(ex.model, ex.x)
    if layer is None:
        print(f"{network} has no convolutional feature maps: showing guided backpropagation without Grad-CAM")
    maps = compute_maps(ex.model, ex.x, ex.target, layer)

    rows = [("image", "image", None)]
    if layer is not None:
        rows.append(("Grad-CAM", "overlay", maps["gradcam"]))
    rows += [("guided\nbackprop", "rgb", maps["guided"]),
             ("|guided\nbackprop|", "heatmap", maps["magnitude"])]
    if layer is not None:
        rows.append(("guided\nGrad-CAM", "rgb", maps["guided_gradcam"]))
    titles, colors = saliency.titles(ex)
    colours = "guided backprop: gray = zero gradient; |guided backprop|: bright = strongest"
    if layer:
        # On a GAP network Grad-CAM of the last features is CAM / (h w) where CAM is positive (Selvaraju
        # et al. 2017, Sec. 3.1; saliency.py), so the figure says so rather than look like another method.
        same = " (= CAM where positive, on a GAP net)" if not args.layer and saliency.is_gap_network(ex.model) else ""
        colours = f"Grad-CAM of {layer}{same}: red = strongest\n" + colours
    fig = saliency.plot_example_maps(
        ex.images, rows, titles, colors,
        f"{network} ({ex.ckpt['dataset']}): guided backpropagation\ncorrectly (green) and wrongly (red) "
        f"classified test images, {saliency.explained_class(ex)}\n{colours}")
    stem = saliency.output_stem("guided_backprop", args, ex)
    plots.save(fig, ex.out_dir / f"{stem}.png")
    files.write_json(ex.out_dir / f"{stem}.json",
                   saliency.examples_json(ex, method="guided backpropagation", layer=layer,
                                          checkpoint=args.checkpoint, seed=args.seed))
    print(f"guided backpropagation of {len(ex.index)} test images -> {ex.out_dir / f'{stem}.png'}")
    if args.sanity:
        saliency.run_sanity(ex, args.seed, args.sanity_n, args.layer)


if __name__ == "__main__":
    cli.run(main)
