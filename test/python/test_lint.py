"""ansible-lint (pinned in requirements.txt) passes on the collection and on the documented examples."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess

import pytest
from conftest import REPO, VENV_BIN

LINT = shutil.which('ansible-lint', path=str(VENV_BIN) + os.pathsep + os.environ.get('PATH', ''))


def _lint(target, cwd, collections_root):
    assert LINT, 'ansible-lint is missing from .venv: run make venv (it is pinned in requirements.txt)'
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(collections_root), NO_COLOR='1')
    return subprocess.run(
        [LINT, '--offline', '--nocolor', str(target)], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


@pytest.mark.parametrize('module', ['lock', 'setup'])
def test_examples_pass_ansible_lint(tmp_path, collections_root, module):
    tree = ast.parse((REPO / 'ansible' / 'plugins' / 'modules' / ('%s.py' % module)).read_text())
    examples = next(n.value.value for n in tree.body if isinstance(n, ast.Assign) and n.targets[0].id == 'EXAMPLES')
    (tmp_path / 'examples.yml').write_text('---\n' + examples.lstrip('\n'))
    res = _lint('examples.yml', tmp_path, collections_root)
    assert res.returncode == 0, res.stdout + res.stderr


def test_collection_passes_ansible_lint(collections_root):
    res = _lint('.', REPO / 'ansible', collections_root)
    assert res.returncode == 0, res.stdout + res.stderr
