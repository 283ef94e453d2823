"""Draw a journal as a timeline: one row per host, time across, one glyph per run.

    PYTHONPATH=molecule/shared python3 demo/timeline.py JOURNAL [--svg FILE] [--width N]

Used by demo.py after its runs; works on any journal written by
molecule/shared/journal.py (e.g. build/molecule/default/journal.jsonl).
"""

from __future__ import annotations

import argparse
import html
import os
import shutil
import sys
from pathlib import Path

import journal as jl

# Distinct colours, in run order: (ANSI 256-colour index, SVG fill).
PALETTE = [
    (33, '#1f77b4'),
    (208, '#ff7f0e'),
    (34, '#2ca02c'),
    (160, '#d62728'),
    (97, '#9467bd'),
    (130, '#8c564b'),
    (169, '#e377c2'),
    (244, '#7f7f7f'),
    (142, '#bcbd22'),
    (37, '#17becf'),
]
GLYPHS = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789'


class Timeline:
    def __init__(self, events: list[dict], sec: str | None = None):
        self.events = events
        self.runs = jl.runs(events)
        self.sections = [s for s in jl.sections(events) if sec is None or s.sec == sec]
        order = sorted(self.runs, key=lambda r: (self.runs[r]['start'], _natural(r)))
        for s in self.sections:  # runs known only from their sections (no launcher events)
            if s.run not in order:
                order.append(s.run)
        self.order = order
        self.glyph = {r: GLYPHS[i % len(GLYPHS)] for i, r in enumerate(order)}
        self.colour = {r: PALETTE[i % len(PALETTE)] for i, r in enumerate(order)}
        # One row per lock (a host's own name, or e.g. "cluster"); unguarded work by host.
        for s in self.sections:
            s.extra['row'] = s.lock_name or s.host
        self.hosts = sorted({s.extra['row'] for s in self.sections}, key=_natural)
        # Time 0 is when the first run asked for a lock (its section start minus
        # its wait): ansible-playbook's own start-up before that is left out.
        firsts = [s.start - int(s.waited * 1e9) for s in self.sections if s.lock_name] or [
            s.start for s in self.sections
        ]
        self.t0 = min(firsts) if firsts else 0
        starts = [v['start'] for v in self.runs.values()]
        self.startup = (self.t0 - min(starts)) / 1e9 if starts else 0.0
        ends = [s.end for s in self.sections if s.end] + [s.start for s in self.sections]
        self.t1 = max(ends) if ends else self.t0 + 1
        self.violations = jl.exclusion_violations(self.sections)

    def secs(self, ns: int) -> float:
        return (ns - self.t0) / 1e9

    # ------------------------------------------------------------- terminal
    def terminal(self, width: int, colour: bool) -> str:
        span = max(self.t1 - self.t0, 1)
        step = span / width
        label_w = max([len(h) for h in self.hosts] + [4])
        lines = []
        for host in self.hosts:
            row = [s for s in self.sections if s.extra['row'] == host]
            cells = []
            for c in range(width):
                a, b = self.t0 + c * step, self.t0 + (c + 1) * step
                inside = [s for s in row if s.start < b and (s.end or self.t1) > a and (s.end or self.t1) > self.t0]
                if not inside:
                    cells.append('·')
                    continue
                best = max(inside, key=lambda s: min(b, s.end or self.t1) - max(a, s.start))
                clash = any(x in inside and y in inside for x, y in self.violations)
                g = '!' if clash else self.glyph[best.run]
                if colour:
                    code = 196 if clash else self.colour[best.run][0]
                    g = f'\x1b[1;38;5;{code}m{g}\x1b[0m'
                cells.append(g)
            lines.append(f'{host.rjust(label_w)} │{"".join(cells)}│')
        # time axis: a tick every ~10 columns, labelled in seconds
        axis = [' '] * width
        marks = [' '] * (width + 8)
        every = max(8, width // 8)
        for c in range(0, width, every):
            axis[c] = '┬'
            label = f'{c * step / 1e9:.{2 if span < 2e9 else 1}f}s'
            for i, ch in enumerate(label):
                if c + i < len(marks):
                    marks[c + i] = ch
        lines.append(' ' * label_w + ' └' + ''.join(axis).replace(' ', '─') + '┘')
        lines.append(' ' * label_w + '  ' + ''.join(marks).rstrip())
        return '\n'.join(lines)

    def legend(self, colour: bool) -> str:
        parts = []
        for r in self.order:
            g = self.glyph[r]
            if colour:
                g = f'\x1b[1;38;5;{self.colour[r][0]}m{g}\x1b[0m'
            pid = self.runs.get(r, {}).get('pid')
            parts.append(f'{g} = {r}' + (f' (pid {pid})' if pid else ''))
        return '   '.join(parts)

    # ----------------------------------------------------------------- waits
    def waits(self) -> list[dict]:
        """Per run: total wait, and per host how long and for which runs."""
        out = []
        for r in self.order:
            mine = sorted((s for s in self.sections if s.run == r and s.lock_name), key=lambda s: _natural(s.lock_name))
            per_host = []
            for s in mine:
                blockers = []
                for o in jl.waited_for(s, self.sections):
                    if o.run not in blockers:
                        blockers.append(o.run)
                per_host.append({'host': s.lock_name, 'waited': s.waited, 'for': blockers})
            info = self.runs.get(r, {})
            out.append(
                {
                    'run': r,
                    'glyph': self.glyph[r],
                    'pid': info.get('pid'),
                    'rc': info.get('rc'),
                    'total': sum(h['waited'] for h in per_host),
                    'longest': max([h['waited'] for h in per_host] or [0.0]),
                    'hosts': per_host,
                }
            )
        return out

    def waits_text(self, colour: bool) -> str:
        lines = []
        for w in self.waits():
            g = w['glyph']
            if colour:
                g = f'\x1b[1;38;5;{self.colour[w["run"]][0]}m{g}\x1b[0m'
            detail = []
            for h in w['hosts']:
                if h['waited'] < 0.05:
                    detail.append(f'{h["host"]} at once')
                elif h['for']:
                    who = ', '.join(f'{self.glyph[b]}' for b in h['for'])
                    detail.append(f'{h["host"]} {h["waited"]:.1f}s for {who}')
                else:
                    # Slow to be served (a busy machine, the agent starting), not held up by another run.
                    detail.append(f'{h["host"]} {h["waited"]:.1f}s, no other run inside')
            rc = '' if w['rc'] in (0, None) else f'  [exit {w["rc"]}]'
            lines.append(f'  {g} {w["run"]:<4} longest wait {w["longest"]:4.1f}s: ' + '; '.join(detail) + rc)
        return '\n'.join(lines)

    # ------------------------------------------------------------------- SVG
    def svg(self, title: str) -> str:
        left, right, top, row_h, gap = 90, 20, 50, 30, 8
        width = 1000
        plot_w = width - left - right
        span = max(self.t1 - self.t0, 1)

        def x(ns):
            return left + (ns - self.t0) / span * plot_w

        waits = self.waits()
        rows_h = len(self.hosts) * (row_h + gap)
        legend_y = top + rows_h + 50
        height = legend_y + 24 * (len(waits) + 1) + 20
        e = html.escape
        out = [
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" font-family="monospace" font-size="13">',
            f'<rect width="{width}" height="{height}" fill="white"/>',
            f'<text x="{left}" y="24" font-size="16" font-weight="bold">{e(title)}</text>',
        ]
        # grid and axis
        secs_total = span / 1e9
        tick = next(t for t in (0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1e9) if secs_total / t <= 12)
        t = 0.0
        while t <= secs_total + 1e-9:
            gx = left + t / secs_total * plot_w
            out.append(f'<line x1="{gx:.1f}" y1="{top - 6}" x2="{gx:.1f}" y2="{top + rows_h}" stroke="#ddd"/>')
            out.append(f'<text x="{gx:.1f}" y="{top + rows_h + 18}" text-anchor="middle" fill="#555">{t:g}s</text>')
            t += tick
        for i, host in enumerate(self.hosts):
            y = top + i * (row_h + gap)
            out.append(f'<text x="{left - 10}" y="{y + row_h / 2 + 5}" text-anchor="end">{e(host)}</text>')
            out.append(f'<rect x="{left}" y="{y}" width="{plot_w}" height="{row_h}" fill="#f6f6f6"/>')
            row = sorted((s for s in self.sections if s.extra['row'] == host), key=lambda s: s.start)
            lanes: list[int] = []  # end of the last section in each lane
            for s in row:  # overlapping sections (shared holders, or a violation) get lanes of their own
                lane = next((i for i, end in enumerate(lanes) if end <= s.start), len(lanes))
                lanes[lane : lane + 1] = [s.end or self.t1]
                s.extra['lane'] = lane
            lane_h = (row_h - 4) / max(len(lanes), 1)
            for s in row:
                x0, x1 = x(s.start), x(s.end or self.t1)
                ly = y + 2 + s.extra['lane'] * lane_h
                fill = self.colour[s.run][1]
                clash = any(s in pair for pair in self.violations)
                tip = (
                    f'{s.run} on {s.host}: {self.secs(s.start):.2f}s to '
                    f'{self.secs(s.end or self.t1):.2f}s, waited {s.waited:.2f}s before'
                    + (f' ({s.how})' if s.how != 'exit' else '')
                )
                out.append(
                    f'<rect x="{x0:.1f}" y="{ly:.1f}" width="{max(x1 - x0, 1):.1f}" height="{lane_h:.1f}" '
                    f'fill="{fill}" stroke="{"red" if clash else "white"}" stroke-width="{3 if clash else 1}" rx="3">'
                    f'<title>{e(tip)}</title></rect>'
                )
                if x1 - x0 > 12 and lane_h >= 12:
                    out.append(
                        f'<text x="{(x0 + x1) / 2:.1f}" y="{ly + lane_h / 2 + 4.5:.1f}" text-anchor="middle" '
                        f'fill="white" font-weight="bold">{e(self.glyph[s.run])}</text>'
                    )
        out.append(
            f'<text x="{left}" y="{legend_y}" font-weight="bold">'
            'run  pid      longest wait; per lock: waited (for whom)</text>'
        )
        for i, w in enumerate(waits):
            y = legend_y + 24 * (i + 1)
            out.append(
                f'<rect x="{left}" y="{y - 13}" width="16" height="16" fill="{self.colour[w["run"]][1]}" rx="3"/>'
            )
            hosts = '; '.join(
                f'{h["host"]} {h["waited"]:.1f}s'
                + (f' ({", ".join(self.glyph[b] for b in h["for"])})' if h['for'] else '')
                for h in w['hosts']
            )
            out.append(
                f'<text x="{left + 22}" y="{y}" xml:space="preserve">'
                f'{e(w["glyph"])} {e(w["run"]):<4} {w["pid"] or "":<8} '
                f'{w["longest"]:5.1f}s  {e(hosts)}</text>'
            )
        out.append('</svg>')
        return '\n'.join(out)


def _natural(s: str):
    import re

    return [int(p) if p.isdigit() else p for p in re.split(r'(\d+)', s)]


def use_colour() -> bool:
    if os.environ.get('NO_COLOR'):
        return False
    return bool(os.environ.get('FORCE_COLOR')) or sys.stdout.isatty()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('journal')
    p.add_argument('--svg')
    p.add_argument('--sec', default=None, help='only sections of this kind')
    p.add_argument('--width', type=int, default=0)
    a = p.parse_args(argv)
    tl = Timeline(jl.load(a.journal), a.sec)
    colour = use_colour()
    width = a.width or max(40, min(110, shutil.get_terminal_size((100, 24)).columns - 12))
    print(tl.terminal(width, colour))
    print(tl.legend(colour))
    print(tl.waits_text(colour))
    if a.svg:
        Path(a.svg).write_text(tl.svg(f'hostlock: {len(tl.order)} runs x {len(tl.hosts)} hosts'))
        print(f'SVG timeline: {a.svg}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
