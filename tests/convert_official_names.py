"""Official tensor names and shapes of the released checkpoints, read from the lists in docs/official-checkpoints/
(``name<TAB>[shape]`` per line, as ``tf.train.list_variables`` reports them): the data the converter tests write
synthetic releases from."""
import os

LISTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs", "official-checkpoints")


def table(release):
    """``{name: shape tuple}`` of ``release`` ("deepfill_v1", "deepfill_v1-discriminator", ..., "hifill")."""
    shapes = {}
    with open(os.path.join(LISTS, f"{release}.txt"), encoding="utf-8") as handle:
        for line in handle:
            if line.strip() and not line.startswith("#"):
                name, shape = line.rstrip("\n").split("\t")
                shapes[name] = tuple(int(side) for side in shape.strip("[]").split(","))
    return shapes
