"""Seeded synthetic PCB boards with labelled defects.

No PCB data set can be downloaded here, so the demo detector is trained on boards drawn by
this module: a solder-mask substrate with copper traces, SMD chips, ICs with pin rows,
pads and solder joints, and every class of the taxonomy rendered the way it looks under an
AOI camera (gaps in traces, copper splashes, bridges between pins, dull cold joints, ...).
The same renderer feeds the Pi edge simulator, so demo edges see plausible boards.

The board is split into a grid of cells; each cell holds one feature (trace bundle, chip,
IC, pad cluster, empty mask) and at most one defect, so labels never overlap ambiguously.
Everything is drawn with OpenCV on a numpy image from one ``numpy.random.Generator``: the
same seed gives the same board, byte for byte.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from pcb import taxonomy

# BGR colours
MASK = np.array([40, 110, 30], np.float32)  # green solder mask
TRACE = np.array([70, 165, 70], np.float32)  # copper under mask: lighter green
COPPER = np.array([60, 135, 200], np.float32)  # exposed copper / gold pad
SOLDER = np.array([200, 200, 205], np.float32)  # bright tin
BODY = np.array([35, 35, 38], np.float32)  # component body
LAMINATE = np.array([60, 95, 110], np.float32)  # bare FR4 where copper was etched or torn away


@dataclass
class Board:
    image: np.ndarray  # HxWx3 uint8 BGR
    boxes: list[tuple[int, float, float, float, float]] = field(default_factory=list)
    # (class_id, x1, y1, x2, y2) in pixels

    def yolo_labels(self) -> list[str]:
        h, w = self.image.shape[:2]
        out = []
        for c, x1, y1, x2, y2 in self.boxes:
            out.append(
                f"{c} {(x1 + x2) / 2 / w:.6f} {(y1 + y2) / 2 / h:.6f} "
                f"{(x2 - x1) / w:.6f} {(y2 - y1) / h:.6f}"
            )
        return out


def _poly(points) -> np.ndarray:
    """Polygon vertices as the int32 array OpenCV's drawing functions take."""
    return np.asarray(points, np.int32)


def _col(base: np.ndarray, rng: np.random.Generator, jitter: float = 12) -> tuple:
    c = np.clip(base + rng.normal(0, jitter, 3), 0, 255)
    return tuple(int(v) for v in c)


class _Painter:
    """Draws features into one cell and records defect boxes."""

    def __init__(self, img: np.ndarray, rng: np.random.Generator, tax: taxonomy.Taxonomy):
        self.img, self.rng, self.tax = img, rng, tax
        self.boxes: list[tuple[int, float, float, float, float]] = []
        self.mask_col = _col(MASK, rng, 6)
        self.trace_col = _col(TRACE, rng, 8)

    def add(self, name: str, x1, y1, x2, y2, pad: float = 3) -> None:
        h, w = self.img.shape[:2]
        box = (
            self.tax.class_by_name(name).id,
            float(max(0, x1 - pad)),
            float(max(0, y1 - pad)),
            float(min(w - 1, x2 + pad)),
            float(min(h - 1, y2 + pad)),
        )
        self.boxes.append(box)

    # ---- good features -------------------------------------------------------------
    def joint(self, cx, cy, rx, ry, kind: str = "good") -> None:
        r = self.rng
        if kind == "good":
            cv2.ellipse(self.img, (cx, cy), (rx, ry), 0, 0, 360, _col(SOLDER, r, 8), -1)
            cv2.ellipse(
                self.img, (cx - rx // 3, cy - ry // 3), (max(1, rx // 3), max(1, ry // 3)),
                0, 0, 360, (250, 250, 250), -1,
            )
        elif kind == "cold":
            # dull, grey, grainy and lumpy, no specular highlight
            pts = []
            for a in np.linspace(0, 2 * np.pi, 12, endpoint=False):
                k = r.uniform(0.7, 1.25)
                pts.append((cx + k * rx * np.cos(a), cy + k * ry * np.sin(a)))
            cv2.fillPoly(self.img, [_poly(pts)], _col(np.array([120, 120, 118]), r, 6))
            y0, y1 = max(0, cy - ry - 2), cy + ry + 3
            x0, x1 = max(0, cx - rx - 2), cx + rx + 3
            patch = self.img[y0:y1, x0:x1].astype(np.int16)
            grain = r.integers(-45, 45, patch.shape[:2] + (1,), dtype=np.int16)
            sel = (np.abs(patch.astype(np.int16) - 120).sum(-1, keepdims=True) < 60)
            self.img[y0:y1, x0:x1] = np.clip(patch + grain * sel, 0, 255).astype(np.uint8)
        elif kind == "insufficient":
            cv2.circle(self.img, (cx, cy), max(2, min(rx, ry) // 3), _col(SOLDER, r, 8), -1)

    def pad(self, x1, y1, x2, y2, joint: str = "good") -> None:
        cv2.rectangle(self.img, (x1, y1), (x2, y2), _col(COPPER, self.rng, 10), -1)
        cx, cy = (x1 + x2) // 2, (y1 + y2) // 2
        self.joint(cx, cy, max(2, (x2 - x1) // 2 - 1), max(2, (y2 - y1) // 2 - 1), joint)

    def trace(self, p1, p2, width) -> None:
        cv2.line(self.img, p1, p2, self.trace_col, width, cv2.LINE_AA)

    # ---- cells -------------------------------------------------------------------------
    def traces(self, x, y, w, h, defect: str | None) -> None:
        r = self.rng
        horizontal = r.random() < 0.5
        n = int(r.integers(2, 4))
        width = int(r.integers(10, 17))
        gap = int(r.integers(width + 10, width + 22))
        span = (n - 1) * gap
        lines = []
        for i in range(n):
            if horizontal:
                yy = y + (h - span) // 2 + i * gap
                p1, p2 = (x + 4, yy), (x + w - 4, yy)
            else:
                xx = x + (w - span) // 2 + i * gap
                p1, p2 = (xx, y + 4), (xx, y + h - 4)
            self.trace(p1, p2, width)
            lines.append((p1, p2))
        if defect is None:
            return
        k = int(r.integers(0, n))
        (ax, ay), (bx, by) = lines[k]
        t = r.uniform(0.3, 0.7)
        px, py = int(ax + t * (bx - ax)), int(ay + t * (by - ay))
        hw = width // 2
        if defect == "open_circuit":
            # a break across the trace: bare laminate between two ragged copper ends
            g = int(r.integers(10, 20))
            lam = _col(LAMINATE, r, 8)
            if horizontal:
                pts = _poly([(px - g // 2 + int(r.integers(-3, 4)), py - hw - 2), (px + g // 2 + int(r.integers(-3, 4)), py - hw - 2),
                                (px + g // 2 + int(r.integers(-3, 4)), py + hw + 2), (px - g // 2 + int(r.integers(-3, 4)), py + hw + 2)])
            else:
                pts = _poly([(px - hw - 2, py - g // 2 + int(r.integers(-3, 4))), (px + hw + 2, py - g // 2 + int(r.integers(-3, 4))),
                                (px + hw + 2, py + g // 2 + int(r.integers(-3, 4))), (px - hw - 2, py + g // 2 + int(r.integers(-3, 4)))])
            cv2.fillPoly(self.img, [pts], lam, cv2.LINE_AA)
            self.add(defect, pts[:, 0].min() - 3, pts[:, 1].min() - 3, pts[:, 0].max() + 3, pts[:, 1].max() + 3)
        elif defect == "short":
            k2 = k + 1 if k + 1 < n else k - 1
            (cx, cy), _ = lines[k2]
            thick = int(r.integers(3, 6))
            if horizontal:
                q = (px + int(r.integers(-6, 7)), cy)
                cv2.line(self.img, (px, py), q, _col(COPPER, r, 10), thick, cv2.LINE_AA)
                self.add(defect, min(px, q[0]) - 5, min(py, cy), max(px, q[0]) + 5, max(py, cy))
            else:
                q = (cx, py + int(r.integers(-6, 7)))
                cv2.line(self.img, (px, py), q, _col(COPPER, r, 10), thick, cv2.LINE_AA)
                self.add(defect, min(px, cx), min(py, q[1]) - 5, max(px, cx), max(py, q[1]) + 5)
        elif defect == "mouse_bite":
            # a row of semicircular bites out of the trace edge, laminate showing through
            m = int(r.integers(2, 4))
            rad = int(r.integers(5, 8))
            lam = _col(LAMINATE, r, 8)
            side = 1 if r.random() < 0.5 else -1
            centers = []
            for j in range(m):
                off = (j - (m - 1) / 2) * (2 * rad + 2)
                if horizontal:
                    c = (int(px + off), py + side * hw)
                else:
                    c = (px + side * hw, int(py + off))
                cv2.circle(self.img, c, rad, lam, -1, cv2.LINE_AA)
                centers.append(c)
            xs, ys = [p[0] for p in centers], [p[1] for p in centers]
            self.add(defect, min(xs) - rad, min(ys) - rad, max(xs) + rad, max(ys) + rad)
        elif defect == "spur":
            # a sharp copper sliver sticking out of the trace edge (exposed, so brighter)
            ln = int(r.integers(16, 28))
            side = 1 if r.random() < 0.5 else -1
            b = int(r.integers(4, 7))
            if horizontal:
                base = py + side * hw
                tip = (px + int(r.integers(-5, 6)), base + side * ln)
                tri = _poly([(px - b, base), (px + b, base), tip])
            else:
                base = px + side * hw
                tip = (base + side * ln, py + int(r.integers(-5, 6)))
                tri = _poly([(base, py - b), (base, py + b), tip])
            cv2.fillPoly(self.img, [tri], _col(COPPER, r, 10), cv2.LINE_AA)
            self.add(defect, tri[:, 0].min(), tri[:, 1].min(), tri[:, 0].max(), tri[:, 1].max())

    def chip(self, x, y, w, h, defect: str | None) -> None:
        """A two-terminal SMD part (resistor/capacitor) on two pads."""
        r = self.rng
        horizontal = r.random() < 0.5
        L, W = int(r.integers(44, 64)), int(r.integers(22, 30))
        if not horizontal:
            L, W = W, L
        cx, cy = x + w // 2 + int(r.integers(-8, 9)), y + h // 2 + int(r.integers(-8, 9))
        pw = 12
        if horizontal:
            pads = [(cx - L // 2 - pw // 2, cy - W // 2, cx - L // 2 + pw, cy + W // 2),
                    (cx + L // 2 - pw, cy - W // 2, cx + L // 2 + pw // 2, cy + W // 2)]
        else:
            pads = [(cx - W // 2, cy - L // 2 - pw // 2, cx + W // 2, cy - L // 2 + pw),
                    (cx - W // 2, cy + L // 2 - pw, cx + W // 2, cy + L // 2 + pw // 2)]
        # silkscreen outline
        cv2.rectangle(self.img, (cx - L // 2 - 10, cy - W // 2 - 8), (cx + L // 2 + 10, cy + W // 2 + 8),
                      (225, 225, 225), 1)
        joints = ["good", "good"]
        bad_pad = None
        if defect in ("cold_joint", "insufficient_solder"):
            bad_pad = int(r.integers(0, 2))
            joints[bad_pad] = "cold" if defect == "cold_joint" else "insufficient"
        for p, j in zip(pads, joints):
            self.pad(*p, joint=j)
        body = (cx - L // 2 + pw // 2 + 2, cy - W // 2 + 2, cx + L // 2 - pw // 2 - 2, cy + W // 2 - 2) \
            if horizontal else (cx - W // 2 + 2, cy - L // 2 + pw // 2 + 2, cx + W // 2 - 2, cy + L // 2 - pw // 2 - 2)
        if defect == "missing_component":
            x1, y1, x2, y2 = min(p[0] for p in pads), min(p[1] for p in pads), max(p[2] for p in pads), max(p[3] for p in pads)
            self.add(defect, x1, y1, x2, y2)
            return
        if defect == "misaligned_component":
            ang = float(r.uniform(18, 40)) * (1 if r.random() < 0.5 else -1)
            dx, dy = int(r.integers(-10, 11)), int(r.integers(-10, 11))
            bw, bh = body[2] - body[0] + 8, body[3] - body[1] + 8
            rect = ((cx + dx, cy + dy), (bw, bh), ang)
            pts = cv2.boxPoints(rect).astype(np.int32)
            cv2.fillPoly(self.img, [pts], _col(BODY, r, 5))
            allx = np.concatenate([pts[:, 0], [p[0] for p in pads], [p[2] for p in pads]])
            ally = np.concatenate([pts[:, 1], [p[1] for p in pads], [p[3] for p in pads]])
            self.add(defect, allx.min(), ally.min(), allx.max(), ally.max())
            return
        cv2.rectangle(self.img, body[:2], body[2:], _col(BODY, r, 5), -1)
        if bad_pad is not None and defect is not None:
            p = pads[bad_pad]
            self.add(defect, p[0], p[1], p[2], p[3], pad=4)
        elif defect in ("damaged_pad", "pin_hole"):
            self._pad_damage(pads[int(r.integers(0, 2))], defect)

    def ic(self, x, y, w, h, defect: str | None) -> None:
        """An IC body with a row of gull-wing pins on two sides."""
        r = self.rng
        n = int(r.integers(4, 7))
        pitch = int(r.integers(16, 21))
        pin_w, pin_l = pitch // 2 + 1, int(r.integers(14, 19))
        bw = (n - 1) * pitch + pin_w + 10
        bh = int(r.integers(36, 50))
        cx, cy = x + w // 2, y + h // 2
        bx1, by1 = cx - bw // 2, cy - bh // 2
        pads = []
        for side in (-1, 1):
            for i in range(n):
                px = bx1 + 5 + i * pitch
                if side < 0:
                    pads.append((px, by1 - pin_l, px + pin_w, by1 + 2))
                else:
                    pads.append((px, by1 + bh - 2, px + pin_w, by1 + bh + pin_l))
        bad = int(r.integers(0, len(pads)))
        for i, p in enumerate(pads):
            j = "good"
            if i == bad and defect == "cold_joint":
                j = "cold"
            elif i == bad and defect == "insufficient_solder":
                j = "insufficient"
            self.pad(*p, joint=j)
        cv2.rectangle(self.img, (bx1, by1), (bx1 + bw, by1 + bh), _col(BODY, r, 5), -1)
        cv2.circle(self.img, (bx1 + 8, by1 + 8), 3, (90, 90, 90), -1)  # pin-1 dot
        if defect in ("cold_joint", "insufficient_solder"):
            p = pads[bad]
            self.add(defect, p[0], p[1], p[2], p[3], pad=4)
        elif defect == "solder_bridge":
            i = int(r.integers(0, n - 1)) + (n if r.random() < 0.5 else 0)
            a, b = pads[i], pads[i + 1]
            yy1 = max(a[1], b[1]) + 2
            yy2 = min(a[3], b[3]) - 2
            xx1, xx2 = a[0] + 2, b[2] - 2
            cv2.ellipse(self.img, ((xx1 + xx2) // 2, (yy1 + yy2) // 2),
                        ((xx2 - xx1) // 2, max(3, (yy2 - yy1) // 3)), 0, 0, 360, _col(SOLDER, r, 6), -1)
            self.add(defect, xx1, yy1, xx2, yy2)
        elif defect in ("damaged_pad", "pin_hole"):
            self._pad_damage(pads[bad], defect)

    def pad_cluster(self, x, y, w, h, defect: str | None) -> None:
        """Large test pads / a copper pour: where pin holes and pad damage show most."""
        r = self.rng
        s = int(r.integers(30, 44))
        pads = []
        for i in range(2):
            px = x + w // 2 - s - 6 + i * (s + 12)
            py = y + h // 2 - s // 2 + int(r.integers(-10, 11))
            p = (px, py, px + s, py + s)
            cv2.rectangle(self.img, p[:2], p[2:], _col(COPPER, r, 10), -1)
            pads.append(p)
        if defect in ("damaged_pad", "pin_hole"):
            self._pad_damage(pads[int(r.integers(0, 2))], defect)
        elif defect == "cold_joint" or defect == "insufficient_solder":
            self.chip(x, y, w, h, defect)

    def _pad_damage(self, p, defect: str) -> None:
        r = self.rng
        x1, y1, x2, y2 = p
        if defect == "pin_hole":
            # a cluster of tiny voids through the copper: dark, ringless (a via has a ring)
            m = int(r.integers(3, 6))
            cx0 = int(r.integers(x1 + 6, max(x1 + 7, x2 - 6)))
            cy0 = int(r.integers(y1 + 6, max(y1 + 7, y2 - 6)))
            pts = []
            for _ in range(m):
                rad = int(r.integers(2, 4))
                c = (int(np.clip(cx0 + r.integers(-7, 8), x1 + rad, x2 - rad)),
                     int(np.clip(cy0 + r.integers(-7, 8), y1 + rad, y2 - rad)))
                cv2.circle(self.img, c, rad, (20, 25, 30), -1, cv2.LINE_AA)
                pts.append((c, rad))
            self.add(defect, min(c[0] - q for c, q in pts), min(c[1] - q for c, q in pts),
                     max(c[0] + q for c, q in pts), max(c[1] + q for c, q in pts))
        else:  # damaged_pad: torn, scorched, lifted corner
            cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
            pts = []
            for a in np.linspace(0, 2 * np.pi, 9, endpoint=False):
                k = r.uniform(0.35, 0.8)
                pts.append((cx + k * (x2 - x1) * np.cos(a), cy + k * (y2 - y1) * np.sin(a)))
            cv2.fillPoly(self.img, [_poly(pts)], _col(np.array([25, 45, 70]), r, 6))
            for _ in range(3):
                a = (int(r.integers(x1, x2 + 1)), int(r.integers(y1, y2 + 1)))
                b = (int(r.integers(x1, x2 + 1)), int(r.integers(y1, y2 + 1)))
                cv2.line(self.img, a, b, (10, 20, 35), 2)
            self.add(defect, x1 - 2, y1 - 2, x2 + 2, y2 + 2)

    def empty(self, x, y, w, h, defect: str | None) -> None:
        r = self.rng
        if r.random() < 0.5:  # a bent trace crossing the cell
            mid = (x + int(r.uniform(0.3, 0.7) * w), y + int(r.uniform(0.3, 0.7) * h))
            wd = int(r.integers(8, 13))
            self.trace((x + 4, y + 8), mid, wd)
            self.trace(mid, (x + w - 4, y + h - 8), wd)
        if r.random() < 0.4:  # a via
            c = (x + int(r.integers(15, w - 15)), y + int(r.integers(15, h - 15)))
            cv2.circle(self.img, c, 7, _col(COPPER, r, 8), -1)
            cv2.circle(self.img, c, 3, (20, 20, 20), -1)
        if defect == "spurious_copper":
            s = int(r.integers(14, 30))
            c = (x + int(r.integers(s + 4, w - s - 4)), y + int(r.integers(s + 4, h - s - 4)))
            corners = []
            for a in np.linspace(0, 2 * np.pi, int(r.integers(6, 11)), endpoint=False):
                k = r.uniform(0.5, 1.0) * s
                corners.append((c[0] + k * np.cos(a), c[1] + k * np.sin(a)))
            sliver = _poly(corners)
            cv2.fillPoly(self.img, [sliver], _col(COPPER, r, 12), cv2.LINE_AA)
            self.add(defect, sliver[:, 0].min(), sliver[:, 1].min(), sliver[:, 0].max(), sliver[:, 1].max())


# which cell kinds can host which defect
_HOSTS = {
    "damaged_pad": ("chip", "pad_cluster"),
    "spurious_copper": ("empty",),
    "open_circuit": ("traces",),
    "short": ("traces",),
    "cold_joint": ("chip", "ic"),
    "solder_bridge": ("ic",),
    "insufficient_solder": ("chip", "ic"),
    "missing_component": ("chip",),
    "misaligned_component": ("chip",),
    "mouse_bite": ("traces",),
    "spur": ("traces",),
    "pin_hole": ("pad_cluster", "chip"),
}


def render_board(
    seed: int,
    size: tuple[int, int] = (640, 480),
    defect_rate: float = 0.75,
    max_defects: int = 3,
    force: list[str] | None = None,
    scale: float = 1.6,
) -> Board:
    """Draw one board. ``size`` is (width, height). ``force`` lists defect classes to place
    (for tests and balanced data sets); otherwise 0..max_defects random ones. ``scale`` is
    the camera's zoom: features are drawn on a canvas ``size / scale`` and enlarged, so the
    detector at 320 px still sees the small defects (pin holes, mouse bites)."""
    tax = taxonomy.load()
    rng = np.random.default_rng(seed)
    out_w, out_h = size
    w, h = max(320, round(out_w / scale)), max(320, round(out_h / scale))
    img = np.empty((h, w, 3), np.uint8)
    img[:] = _col(MASK, rng, 6)
    p = _Painter(img, rng, tax)

    cols, rows = max(2, w // 160), max(2, h // 160)
    cw, ch = w // cols, h // rows
    kinds = ["traces", "chip", "ic", "pad_cluster", "empty"]
    cells = [(c, r_, str(rng.choice(kinds, p=[0.28, 0.26, 0.2, 0.1, 0.16])))
             for r_ in range(rows) for c in range(cols)]
    order = rng.permutation(len(cells))

    if force is not None:
        wanted = list(force)
    elif rng.random() < defect_rate:
        wanted = [str(n) for n in rng.choice(tax.class_names, int(rng.integers(1, max_defects + 1)))]
    else:
        wanted = []
    assigned: dict[int, str] = {}
    for name in wanted:
        for idx in order:
            if idx in assigned:
                continue
            if cells[idx][2] not in _HOSTS[name]:
                cells[idx] = (cells[idx][0], cells[idx][1], str(rng.choice(_HOSTS[name])))
            assigned[int(idx)] = name
            break

    for i, (c, r_, kind) in enumerate(cells):
        x, y = c * cw, r_ * ch
        if kind == "ic" and cw < 150:
            kind = "chip"
        getattr(p, kind)(x + 6, y + 6, cw - 12, ch - 12, assigned.get(i))

    sx, sy = out_w / w, out_h / h
    scaled = cv2.resize(img, (out_w, out_h), interpolation=cv2.INTER_LINEAR)
    boxes = [(c, x1 * sx, y1 * sy, x2 * sx, y2 * sy) for c, x1, y1, x2, y2 in p.boxes]

    # camera look: uneven light, blur, sensor noise
    gx = np.linspace(rng.uniform(0.8, 1.0), rng.uniform(1.0, 1.2), out_w, dtype=np.float32)
    gy = np.linspace(rng.uniform(0.85, 1.0), rng.uniform(1.0, 1.15), out_h, dtype=np.float32)
    light = (gy[:, None] * gx[None, :])[..., None] * rng.uniform(0.85, 1.15)
    out = scaled.astype(np.float32) * light
    blurred = cv2.GaussianBlur(out, (0, 0), rng.uniform(0.4, 1.0))
    noisy = blurred + rng.normal(0, rng.uniform(2, 6), blurred.shape).astype(np.float32)
    return Board(np.clip(noisy, 0, 255).astype(np.uint8), boxes)


# Defects the detector was never trained on, for the anomaly model's evaluation (issue 17):
# drawn on a defect-free board after the camera look, so they are new to both models.
UNSEEN = ("scratch", "contamination", "foreign_part", "burn")


def render_unseen(seed: int, kind: str, size: tuple[int, int] = (640, 480)) -> Board:
    """A board without trained defects plus one ``kind`` of UNSEEN defect; ``boxes`` holds
    that defect's box with class id -1 (no trained class)."""
    if kind not in UNSEEN:
        raise ValueError(f"unknown unseen defect {kind!r}; one of {', '.join(UNSEEN)}")
    board = render_board(seed, size, defect_rate=0.0)
    img = board.image.copy()
    rng = np.random.default_rng(10_000_019 + seed)
    w, h = size
    cx, cy = int(rng.integers(60, w - 60)), int(rng.integers(60, h - 60))
    if kind == "scratch":  # a thin bright gouge through mask and copper
        a = rng.uniform(0, np.pi)
        length = rng.uniform(50, 110)
        dx, dy = np.cos(a) * length / 2, np.sin(a) * length / 2
        p1, p2 = (int(cx - dx), int(cy - dy)), (int(cx + dx), int(cy + dy))
        cv2.line(img, p1, p2, (210, 215, 205), int(rng.integers(2, 4)), cv2.LINE_AA)
        x1, y1, x2, y2 = min(p1[0], p2[0]), min(p1[1], p2[1]), max(p1[0], p2[0]), max(p1[1], p2[1])
    elif kind == "contamination":  # a dark fibre / dust clump lying on the board
        pts = [(cx, cy)]
        for _ in range(int(rng.integers(5, 9))):
            px, py = pts[-1]
            pts.append((int(px + rng.uniform(-14, 14)), int(py + rng.uniform(-14, 14))))
        arr = np.array(pts, np.int32)
        cv2.polylines(img, [arr], False, (25, 22, 20), int(rng.integers(3, 6)), cv2.LINE_AA)
        x1, y1 = arr.min(0)
        x2, y2 = arr.max(0)
    elif kind == "foreign_part":  # a stray part (wrong colour) where none belongs
        bw, bh = int(rng.integers(16, 30)), int(rng.integers(10, 18))
        col = (int(rng.integers(20, 60)), int(rng.integers(90, 140)), int(rng.integers(170, 230)))  # orange-ish
        x1, y1, x2, y2 = cx - bw // 2, cy - bh // 2, cx + bw // 2, cy + bh // 2
        cv2.rectangle(img, (x1, y1), (x2, y2), col, -1)
    else:  # burn: a soft brown-black scorch
        r = int(rng.integers(14, 26))
        disc = np.zeros((h, w), np.float32)
        cv2.circle(disc, (cx, cy), r, (1.0,), -1)
        soft = np.asarray(cv2.GaussianBlur(disc, (0, 0), r / 2.5), np.float32)[..., None]
        scorch = np.array([20, 35, 55], np.float32)
        img = (img.astype(np.float32) * (1 - 0.85 * soft) + scorch * 0.85 * soft).astype(np.uint8)
        x1, y1, x2, y2 = cx - r, cy - r, cx + r, cy + r
    box = (-1, float(max(x1, 0)), float(max(y1, 0)), float(min(x2, w)), float(min(y2, h)))
    return Board(img, [box])


def write_boards(out, count: int, first_seed: int = 0, unseen: str | None = None) -> list:
    """``count`` boards as JPEG q85 files in ``out`` (what a camera sends): defect-free ones
    (``unseen`` None: the anomaly model's good boards), else boards with that UNSEEN kind.
    Returns the paths."""
    from pathlib import Path

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for seed in range(first_seed, first_seed + count):
        board = render_unseen(seed, unseen) if unseen else render_board(seed, defect_rate=0.0)
        path = out / f"board_{seed:06d}.jpg"
        cv2.imwrite(str(path), board.image, [cv2.IMWRITE_JPEG_QUALITY, 85])
        paths.append(path)
    return paths
