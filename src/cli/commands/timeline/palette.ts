// Colours for runs that stay apart however many runs there are: each next
// colour is the candidate (hues in steps, at several saturations and
// lightnesses) farthest, in CIELAB, from every colour given before it. So the
// first runs' colours do not depend on how many runs follow, and the 40th run
// is still told apart from the first. The letter on every bar is the other cue.

type Rgb = [number, number, number];
type Lab = [number, number, number];

function hslToRgb(h: number, s: number, l: number): Rgb {
  const a = s * Math.min(l, 1 - l);
  const f = (n: number) => {
    const k = (n + h / 30) % 12;
    return Math.round(255 * (l - a * Math.max(-1, Math.min(k - 3, 9 - k, 1))));
  };
  return [f(0), f(8), f(4)];
}

function linear(c: number): number {
  const v = c / 255;
  return v <= 0.04045 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4;
}

function toLab([r, g, b]: Rgb): Lab {
  const [lr, lg, lb] = [linear(r), linear(g), linear(b)];
  const x = (0.4124 * lr + 0.3576 * lg + 0.1805 * lb) / 0.95047;
  const y = 0.2126 * lr + 0.7152 * lg + 0.0722 * lb;
  const z = (0.0193 * lr + 0.1192 * lg + 0.9505 * lb) / 1.08883;
  const f = (t: number) => (t > 0.008856 ? Math.cbrt(t) : 7.787 * t + 16 / 116);
  return [116 * f(y) - 16, 500 * (f(x) - f(y)), 200 * (f(y) - f(z))];
}

export function distance(a: string, b: string): number {
  const [p, q] = [toLab(fromHex(a)), toLab(fromHex(b))];
  return Math.hypot(p[0] - q[0], p[1] - q[1], p[2] - q[2]);
}

function fromHex(hex: string): Rgb {
  const n = parseInt(hex.slice(1), 16);
  return [(n >> 16) & 255, (n >> 8) & 255, n & 255];
}

const hex = (rgb: Rgb) => '#' + rgb.map((c) => c.toString(16).padStart(2, '0')).join('');

// Relative luminance: which text colour reads on a fill.
export function textOn(fill: string): string {
  const [r, g, b] = fromHex(fill).map(linear) as Rgb;
  return 0.2126 * r + 0.7152 * g + 0.0722 * b > 0.22 ? '#000000' : '#ffffff';
}

const palette: string[] = [];
let candidates: { hex: string; lab: Lab; nearest: number }[] | null = null;

// The i-th run's colour.
export function colourOf(i: number): string {
  if (!candidates) {
    candidates = [];
    for (let h = 0; h < 360; h += 10)
      for (const s of [0.85, 0.55])
        for (const l of [0.3, 0.45, 0.6, 0.72]) {
          const rgb = hslToRgb(h, s, l);
          candidates.push({ hex: hex(rgb), lab: toLab(rgb), nearest: Infinity });
        }
    // Start from a blue every chart tool starts from.
    pick(candidates.findIndex((c) => c.hex === hex(hslToRgb(210, 0.85, 0.45))));
  }
  while (palette.length <= i) {
    if (!candidates.length) return palette[i % palette.length]!;
    let best = 0;
    for (let k = 1; k < candidates.length; k++) if (candidates[k]!.nearest > candidates[best]!.nearest) best = k;
    pick(best);
  }
  return palette[i]!;
}

function pick(k: number): void {
  const [chosen] = candidates!.splice(k, 1);
  palette.push(chosen!.hex);
  for (const c of candidates!) {
    const d = Math.hypot(c.lab[0] - chosen!.lab[0], c.lab[1] - chosen!.lab[1], c.lab[2] - chosen!.lab[2]);
    if (d < c.nearest) c.nearest = d;
  }
}
