"""Class activation maps (CAM) and Grad-CAM of a trained convlens network, on correctly and
wrongly classified test images.

    python cam.py --checkpoint runs/cifar10-gap/model.pt        # CAM (GAP network)
    python cam.py --checkpoint runs/cifar10-dense/model.pt      # Grad-CAM (dense head: CAM does not apply)
    python cam.py --checkpoint runs/cifar10-gap/model.pt --method gradcam --layer features.res2_1.relu2
    python cam.py --checkpoint runs/cifar10-gap/model.pt --index 3 17 42 --target cat
    python cam.py --checkpoint runs/cifar10-gap/model.pt --sanity    # + randomization sanity check
    python cam.py --checkpoint runs/cifar10-gap/model.pt --sanity --stats   # + interpretation numbers

CAM (Zhou et al. 2016, Eq. 2) needs global average pooling followed by one linear layer
(GAPNet); Grad-CAM (Selvaraju et al. 2017) works on any CNN and is the default elsewhere.
Both are computed by saliency.py (one forward/backward pass per batch, hooks always removed).

Writes to the checkpoint's folder (or --out-dir): cam.png or gradcam.png (a grid: each test
image, and the map overlaid on it, titled with the predicted and true class, the confidence
and the class the map explains: the prediction, for wrong ones too, unless --target), cam.json
or gradcam.json (which images, predictions); with --sanity also sanity.png and sanity.json
(same as guided_backprop.py --sanity: every method that applies). A chosen selection (--index,
--target, --layer) gets its own name, e.g. cam-index-3-17-42-target-cat.png, so the standard
figure (the report's) stays.

With --stats also saliency_stats.json, the numbers behind the report's interpretation of CAM
(or Grad-CAM) and guided backpropagation, on --stats-n test images drawn with --seed and on the
shown ones: where each map's mass falls (centre share), how concentrated it is, right against
wrong predictions, the rank correlation between the methods, where each shown map peaks, and
the deletion curve (Petsiuk et al. 2018: class probability as the most salient pixels are removed
first, against a random order of the map's own coarseness: a random map at the map's resolution,
e.g. 4 x 4, enlarged the same way; removed pixels take the mean colour, or a blurred copy's values);
with --sanity, the sanity check's summary too (see saliency.run_stats). A chosen
selection's statistics get its name too (saliency_stats-target-cat.json).
"""

import cli
import files
import plots
import saliency

METHODS = {"cam": "CAM", "gradcam": "Grad-CAM"}


def parse_args(argv=None):
    p = cli.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=cli.HelpFormatter)
    saliency.add_args(p)
    p.add_argument("--method", choices=["auto", "cam", "gradcam"], default="auto",
                   help="auto: CAM on a GAP network, else Grad-CAM")
    p.add_argument("--layer", help="Grad-CAM layer (a module name); default: the last conv layer's ReLU")
    p.add_argument("--stats", action="store_true",
                   help="also write saliency_stats.json: map statistics and deletion curves on --stats-n test images")
    p.add_argument("--stats-n", type=cli.positive_int, default=256,
                   help="test images (drawn with --seed) for --stats")
    return p.parse_args(argv)


def choose_method(model, method: str) -> str:
    """'cam' or 'gradcam'; a UserError for CAM on a network without GAP + one linear layer."""
    if method == "cam":
        saliency.cam_layers(model)  # raises, suggesting --method gradcam
    if method == "auto":
        method = "cam" if saliency.is_gap_network(model) else "gradcam"
    return method


def check_method(model, args):
    """--method and --layer against the network, before any image is predicted."""
    if choose_method(model, args.method) == "cam" and args.layer:  # --method cam on a dense net raises
        raise cli.UserError("--layer applies to Grad-CAM only (CAM uses the maps that enter global average "
                            "pooling); add --method gradcam")


def compute_maps(model, x, method, target=None, layer=None):
    """(N, H, W) maps in [0, 1] for display: CAM min-max scaled per image as Zhou et al.;
    Grad-CAM (>= 0) likewise, so 0 is the weakest and 1 the strongest evidence."""
    if method == "cam":
        maps = saliency.class_activation_map(model, x, target)
    else:
        maps = saliency.grad_cam(model, x, target, layer)
    return plots.minmax(saliency.upsample(maps, x.shape[-2:])).cpu()


def main(argv=None):
    args = parse_args(argv)
    ex = saliency.load_examples(args, check=lambda model: check_method(model, args))
    method = choose_method(ex.model, args.method)
    network = type(ex.model).__name__
    layer = args.layer or (saliency.default_layer(ex.model, ex.x) if method == "gradcam" else None)
    maps = compute_maps(ex.model, ex.x, method, ex.target, layer)    # (N, H, W)
    note = ""
    if args.method == "auto" and method == "gradcam":
        note = (f"CAM does not apply to {network} (no global average pooling\n"
                "+ single linear layer), so this is Grad-CAM")
        print(note.replace("\n", " "))

    name = METHODS[method]
    where = f" of {layer}" if layer else ""
    titles, colors = saliency.titles(ex)
    fig = saliency.plot_example_maps(
        ex.images, [("image", "image", None), (f"{name}", "overlay", maps)], titles, colors,
        f"{network} ({ex.ckpt['dataset']}): {name}{where}\ncorrectly (green) and wrongly (red) classified "
        f"test images, {saliency.explained_class(ex)}\nred = strongest, blue = weakest evidence (each map scaled on its own)"
        + (f"\n{note}" if note else ""))
    stem = saliency.output_stem(method, args, ex)
    plots.save(fig, ex.out_dir / f"{stem}.png")
    files.write_json(ex.out_dir / f"{stem}.json",
                   saliency.examples_json(ex, method=name, layer=layer, checkpoint=args.checkpoint,
                                          seed=args.seed, note=note or None))
    print(f"{name} of {len(ex.index)} test images -> {ex.out_dir / f'{stem}.png'}")
    sanity = saliency.run_sanity(ex, args.seed, args.sanity_n, args.layer) if args.sanity else None
    if args.stats:
        name = saliency.output_stem("saliency_stats", args, ex)
        stats = saliency.run_stats(ex, args.seed, args.stats_n, args.layer, sanity, name)
        print(f"map statistics of {stats['images']} test images -> {ex.out_dir / f'{name}.json'}")


if __name__ == "__main__":
    cli.run(main)
