"""hostlock.core in an execution environment, checked without a container engine.

Run by scripts/ee-check.sh with .venv-builder's Python (ansible-builder, bindep,
ansible-core). Fails with a message naming what is wrong.
"""

from __future__ import annotations

import argparse
import filecmp
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml
from bindep.depends import Depends

# What the helper needs on every platform: Node.js >= 20, and util-linux (flock, setpriv).
WANTED = {'nodejs': [('>=', '20')], 'util-linux': []}
PLATFORMS = ('rpm', 'dpkg')


def fail(msg: str) -> None:
    sys.exit('ee-check: ' + msg)


def run(cmd: list[str], cwd: Path | None = None) -> str:
    res = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=300)
    if res.returncode != 0:
        fail('%s failed (exit %d):\n%s%s' % (' '.join(cmd), res.returncode, res.stdout, res.stderr))
    return res.stdout


def stages(containerfile: str) -> dict[str, list[str]]:
    """The Containerfile's lines by stage name (`FROM x AS name`)."""
    out: dict[str, list[str]] = {}
    current = None
    for line in containerfile.splitlines():
        m = re.match(r'FROM\s+(\S+)\s+AS\s+(\S+)', line, re.I)
        if m:
            current = m.group(2).lower()
            out[current] = [line]
        elif current:
            out[current].append(line)
    return out


def has(lines: list[str], pattern: str) -> bool:
    return any(re.search(pattern, line) for line in lines)


def check_platforms(lines: list[str], what: str) -> None:
    """The bindep lines name every WANTED package on each platform."""
    text = '\n'.join(re.sub(r'\s+#.*$', '', line) for line in lines) + '\n'
    deps = Depends(text)
    for platform in PLATFORMS:
        rules = {r[0]: r[2] for r in deps.active_rules(['platform:%s' % platform, 'default'])}
        for name, version in WANTED.items():
            if name not in rules:
                fail('%s does not name %s for platform:%s:\n%s' % (what, name, platform, text))
            if rules[name] != version:
                fail('%s asks %s %s on platform:%s, not %s' % (what, name, rules[name], platform, version))
        print('ee-check: %s, platform:%s: %s' % (what, platform, ', '.join(sorted(rules))))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument('--example', type=Path, required=True)
    ap.add_argument('--work', type=Path, required=True)
    ap.add_argument('tarball', type=Path)
    a = ap.parse_args()
    tarball = a.tarball.resolve()

    # The documented file, as a user builds it: beside the tarball it names.
    ee = yaml.safe_load(a.example.read_text())
    files = [f for f in ee.get('additional_build_files', []) if f['src'].endswith('.tar.gz')]
    if len(files) != 1:
        fail('%s should copy one collection tarball in additional_build_files' % a.example)
    if files[0]['src'] != tarball.name:
        fail(
            '%s copies %s, and the collection built is %s: update the example'
            % (a.example, files[0]['src'], tarball.name)
        )
    named = '%s/%s' % (files[0]['dest'], tarball.name)
    collections = ee['dependencies']['galaxy']['collections']
    if {'name': named, 'type': 'file'} not in collections:
        fail('%s does not install %s (type: file) in dependencies.galaxy: %s' % (a.example, named, collections))

    build = a.work / 'ee'
    build.mkdir(parents=True)
    shutil.copy(a.example, build / 'execution-environment.yml')
    shutil.copy(tarball, build / tarball.name)
    out = run(
        [
            'ansible-builder',
            'create',
            '--file',
            'execution-environment.yml',
            '--context',
            'context',
            '--output-filename',
            'Containerfile',
        ],
        cwd=build,
    )
    print(out, end='')
    context = build / 'context'
    containerfile = (context / 'Containerfile').read_text()
    by_stage = stages(containerfile)
    for name in ('base', 'galaxy', 'builder', 'final'):
        if name not in by_stage:
            fail('the Containerfile has no %s stage:\n%s' % (name, containerfile))
    base, galaxy, builder, final = (by_stage[n] for n in ('base', 'galaxy', 'builder', 'final'))

    # Node.js >= 20's module stream is enabled in the stage the final image starts from.
    stream = [m for line in base if (m := re.search(r'^RUN\s+(micro)?dnf\s+module\s+enable\s+-y\s+nodejs:(\d+)', line))]
    if not stream or int(stream[0].group(2)) < 20:
        fail('the base stage does not enable a nodejs >= 20 module stream:\n%s' % '\n'.join(base))
    if not re.match(r'FROM\s+base\s+AS\s+final', final[0], re.I):
        fail('the final stage does not start from base: %s' % final[0])
    # The collection: installed from the build context in the galaxy stage, copied into the image.
    if not has(galaxy, r'^COPY _build /build$') or not has(
        galaxy, r'^RUN .*ansible-galaxy collection install .*-r requirements\.yml'
    ):
        fail('the galaxy stage does not install requirements.yml from the build context:\n%s' % '\n'.join(galaxy))
    if not has(final, r'^COPY --from=galaxy /usr/share/ansible /usr/share/ansible$'):
        fail('the final image does not take the installed collections from the galaxy stage')
    # System packages: introspected and listed by bindep in the builder, installed in the final image.
    if not has(builder, r'introspect\.py introspect .*--write-bindep=') or not has(
        builder, r'^RUN /output/scripts/assemble$'
    ):
        fail('the builder stage does not introspect and assemble:\n%s' % '\n'.join(builder))
    if not has(final, r'^RUN /output/scripts/install-from-bindep'):
        fail('the final image does not install the introspected system packages:\n%s' % '\n'.join(final))
    requirements = yaml.safe_load((context / '_build' / 'requirements.yml').read_text())
    if {'name': named, 'type': 'file'} not in requirements.get('collections', []):
        fail('the build context requirements.yml does not name %s: %s' % (named, requirements))
    copied = context / '_build' / named
    if not copied.is_file() or not filecmp.cmp(copied, tarball, shallow=False):
        fail('the build context does not carry %s as built' % named)
    print(
        'ee-check: Containerfile enables nodejs:%s in base, installs %s, assembles and installs bindep packages'
        % (stream[0].group(2), named)
    )

    # The galaxy stage's install, run here in its working directory (/build is _build).
    installed = a.work / 'collections'
    run(
        ['ansible-galaxy', 'collection', 'install', '-r', 'requirements.yml', '--collections-path', str(installed)],
        cwd=context / '_build',
    )
    manifest = json.loads((installed / 'ansible_collections/hostlock/core/MANIFEST.json').read_text())
    print('ee-check: the galaxy stage installs hostlock.core %s' % manifest['collection_info']['version'])

    # The builder stage's introspection, with the script the build context carries.
    bindep_out = a.work / 'bindep.txt'
    run(
        [
            sys.executable,
            str(context / '_build/scripts/introspect.py'),
            'introspect',
            str(installed),
            '--write-bindep=%s' % bindep_out,
            '--write-pip=%s' % (a.work / 'requirements.txt'),
        ]
    )
    check_platforms(bindep_out.read_text().splitlines(), 'the bindep.txt the builder stage writes')

    # What a collection author runs: ansible-builder introspect on the installed tarball.
    out = run(['ansible-builder', 'introspect', str(installed)])
    print(out, end='')
    data = yaml.safe_load(out)
    system = [s for s in data.get('system', []) if 'from collection hostlock.core' in s]
    check_platforms(system, 'ansible-builder introspect')


if __name__ == '__main__':
    main()
