"""What the synthetic world can contain: categories, canonical sizes, colours and surface patterns.

Each :class:`Kind` is one category of the 213-category vocabulary with a canonical size range (metres,
object frame: x = width, y = depth, z = height), the colours it comes in, a surface pattern that makes it
look different from other categories to an image encoder, and where it may be placed.
"""

from __future__ import annotations

from dataclasses import dataclass

# colour name -> sRGB base colour (0..255)
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (196, 44, 40),
    "green": (52, 150, 64),
    "blue": (40, 80, 190),
    "yellow": (228, 200, 40),
    "orange": (232, 126, 32),
    "purple": (120, 60, 160),
    "pink": (232, 140, 180),
    "white": (236, 236, 232),
    "black": (34, 34, 38),
    "gray": (128, 128, 132),
    "silver": (188, 192, 198),
    "brown": (110, 70, 40),
    "wooden": (168, 120, 72),
    "beige": (214, 196, 160),
}

# surface patterns understood by the renderer (proxy3d.scenes.synth.render)
PATTERNS = ("plain", "stripes", "checker", "grain", "dots", "grid", "bands")

FLOOR = "floor"  # stands on the floor, anywhere
WALL = "wall"  # stands on the floor with its back to a wall
MOUNTED = "mounted"  # hangs on a wall (support = -1)
TOP = "top"  # stands on top of a supporting object


@dataclass(frozen=True)
class Kind:
    label: str
    size_min: tuple[float, float, float]
    size_max: tuple[float, float, float]
    colors: tuple[str, ...]
    pattern: str
    place: str
    supports: bool = False  # small objects may be put on top of it
    weight: float = 1.0  # relative frequency
    copies: int = 1  # placed in sets of 1..copies (chairs, books, cups): "How many chairs?" needs answers above 2


KINDS: tuple[Kind, ...] = (
    # furniture on the floor
    Kind("table", (0.9, 0.6, 0.70), (1.6, 1.0, 0.78), ("wooden", "white", "black"), "grain", FLOOR, True, 1.5),
    Kind("dining table", (1.4, 0.8, 0.72), (2.0, 1.1, 0.78), ("wooden", "brown"), "grain", FLOOR, True),
    Kind("coffee table", (0.8, 0.5, 0.35), (1.2, 0.7, 0.48), ("wooden", "black", "white"), "grain", FLOOR, True),
    Kind("desk", (1.0, 0.55, 0.72), (1.6, 0.8, 0.78), ("wooden", "white", "gray"), "grid", WALL, True, 1.5),
    Kind("chair", (0.42, 0.42, 0.80), (0.52, 0.52, 0.95), ("red", "blue", "black", "wooden"), "stripes", FLOOR, False, 2.0, copies=4),
    Kind("office chair", (0.55, 0.55, 0.95), (0.68, 0.68, 1.15), ("black", "gray", "blue"), "dots", FLOOR, copies=3),
    Kind("armchair", (0.75, 0.75, 0.80), (0.95, 0.90, 1.00), ("green", "brown", "beige", "red"), "checker", FLOOR),
    Kind("sofa chair", (0.70, 0.70, 0.75), (0.90, 0.85, 0.90), ("purple", "gray", "beige"), "bands", FLOOR),
    Kind("couch", (1.6, 0.8, 0.75), (2.3, 1.0, 0.90), ("gray", "blue", "brown", "green"), "checker", WALL, False, 1.2),
    Kind("bed", (1.4, 1.9, 0.45), (1.8, 2.1, 0.60), ("white", "blue", "beige"), "bands", WALL),
    Kind("stool", (0.32, 0.32, 0.45), (0.42, 0.42, 0.70), ("wooden", "red", "black"), "plain", FLOOR, copies=3),
    Kind("ottoman", (0.45, 0.45, 0.38), (0.70, 0.60, 0.45), ("beige", "brown", "purple"), "dots", FLOOR),
    Kind("bench", (1.0, 0.35, 0.42), (1.6, 0.45, 0.50), ("wooden", "black"), "bands", FLOOR),
    Kind("trash can", (0.28, 0.28, 0.35), (0.40, 0.40, 0.65), ("gray", "black", "green"), "bands", FLOOR, False, 1.2, copies=2),
    Kind("plant", (0.35, 0.35, 0.60), (0.60, 0.60, 1.20), ("green",), "dots", FLOOR),
    # furniture against a wall
    Kind("cabinet", (0.6, 0.4, 0.8), (1.2, 0.6, 1.1), ("white", "wooden", "gray"), "grid", WALL, True, 1.2),
    Kind("kitchen cabinet", (0.8, 0.55, 0.85), (1.8, 0.65, 0.92), ("white", "wooden"), "grid", WALL, True),
    Kind("file cabinet", (0.40, 0.50, 0.70), (0.50, 0.65, 1.30), ("gray", "silver", "black"), "bands", WALL, True),
    Kind("shelf", (0.8, 0.3, 0.8), (1.4, 0.45, 1.2), ("wooden", "white"), "stripes", WALL, True),
    Kind("bookshelf", (0.8, 0.3, 1.6), (1.2, 0.4, 2.0), ("wooden", "brown", "white"), "stripes", WALL),
    Kind("refrigerator", (0.6, 0.6, 1.6), (0.9, 0.75, 1.9), ("white", "silver"), "plain", WALL),
    Kind("nightstand", (0.40, 0.35, 0.45), (0.55, 0.45, 0.65), ("wooden", "white"), "grid", WALL, True),
    Kind("dresser", (0.9, 0.45, 0.8), (1.5, 0.55, 1.1), ("wooden", "white", "brown"), "bands", WALL, True),
    Kind("counter", (1.2, 0.6, 0.88), (2.4, 0.7, 0.94), ("white", "gray", "beige"), "checker", WALL, True),
    Kind("tv stand", (1.0, 0.4, 0.45), (1.8, 0.5, 0.60), ("black", "wooden"), "grain", WALL, True),
    Kind("washing machine", (0.58, 0.58, 0.82), (0.62, 0.64, 0.88), ("white", "silver"), "dots", WALL),
    Kind("piano", (1.4, 0.55, 1.1), (1.6, 0.65, 1.3), ("black", "brown"), "stripes", WALL),
    Kind("radiator", (0.6, 0.10, 0.45), (1.4, 0.14, 0.70), ("white", "silver"), "stripes", WALL),
    # hung on a wall
    Kind("picture", (0.4, 0.03, 0.3), (1.0, 0.04, 0.8), ("red", "blue", "yellow", "green"), "checker", MOUNTED, copies=3),
    Kind("whiteboard", (1.2, 0.03, 0.8), (2.0, 0.04, 1.2), ("white",), "grid", MOUNTED),
    Kind("mirror", (0.4, 0.03, 0.6), (0.7, 0.04, 1.2), ("silver",), "plain", MOUNTED),
    Kind("clock", (0.25, 0.04, 0.25), (0.40, 0.05, 0.40), ("white", "black"), "dots", MOUNTED),
    # small objects on top of others
    Kind("monitor", (0.45, 0.18, 0.32), (0.65, 0.25, 0.48), ("black", "silver"), "plain", TOP, False, 1.2),
    Kind("keyboard", (0.40, 0.13, 0.03), (0.46, 0.17, 0.04), ("black", "white"), "grid", TOP),
    Kind("laptop", (0.30, 0.22, 0.02), (0.38, 0.26, 0.03), ("silver", "black"), "plain", TOP),
    Kind("lamp", (0.18, 0.18, 0.35), (0.30, 0.30, 0.60), ("yellow", "white", "orange"), "bands", TOP, False, 1.2, copies=2),
    Kind("book", (0.15, 0.22, 0.03), (0.22, 0.30, 0.06), ("red", "blue", "green", "yellow"), "stripes", TOP, False, 1.5, copies=4),
    Kind("box", (0.20, 0.20, 0.15), (0.45, 0.40, 0.35), ("brown", "beige", "white"), "plain", TOP, False, 1.2, copies=3),
    Kind("bottle", (0.07, 0.07, 0.20), (0.09, 0.09, 0.32), ("green", "blue", "white"), "bands", TOP, False, 1.2, copies=3),
    Kind("cup", (0.07, 0.07, 0.08), (0.09, 0.09, 0.12), ("white", "red", "blue"), "plain", TOP, copies=3),
    Kind("bowl", (0.14, 0.14, 0.06), (0.22, 0.22, 0.09), ("white", "orange", "green"), "dots", TOP),
    Kind("vase", (0.12, 0.12, 0.20), (0.18, 0.18, 0.40), ("blue", "white", "purple"), "checker", TOP),
    Kind("microwave", (0.45, 0.35, 0.26), (0.55, 0.42, 0.32), ("white", "black", "silver"), "grid", TOP),
    Kind("printer", (0.40, 0.35, 0.20), (0.50, 0.45, 0.30), ("gray", "white", "black"), "bands", TOP),
    Kind("tv", (0.9, 0.12, 0.55), (1.3, 0.18, 0.80), ("black",), "plain", TOP),
    Kind("backpack", (0.28, 0.18, 0.40), (0.35, 0.25, 0.50), ("red", "blue", "black", "orange"), "stripes", TOP),
    Kind("potted plant", (0.15, 0.15, 0.25), (0.25, 0.25, 0.45), ("green",), "stripes", TOP, copies=3),
    Kind("toaster", (0.25, 0.16, 0.18), (0.32, 0.20, 0.22), ("silver", "red", "white"), "stripes", TOP),
)

# structural parts of the room: label -> (colours, pattern)
STRUCTURE: dict[str, tuple[tuple[str, ...], str]] = {
    "floor": (("wooden", "gray", "beige"), "grain"),
    "wall": (("white", "beige", "gray"), "plain"),
    "ceiling": (("white",), "plain"),
    "door": (("brown", "wooden", "white"), "grid"),
    "window": (("silver",), "grid"),
}


def kinds_by_place(place: str) -> tuple[Kind, ...]:
    return tuple(k for k in KINDS if k.place == place)


def pattern_id(pattern: str) -> int:
    return PATTERNS.index(pattern)
