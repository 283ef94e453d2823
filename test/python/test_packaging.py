"""The collection builds, installs, and documents itself through ansible-doc."""

from __future__ import annotations

import json
import os
import subprocess
import tarfile

from conftest import REPO, VENV_BIN


def test_build_install_and_ansible_doc(tmp_path):
    installed = tmp_path / 'installed'
    # Only this test's collections and Ansible home: a hostlock.core the user installed
    # (~/.ansible/collections) would make ansible-galaxy skip the install.
    env = {
        'ANSIBLE_COLLECTIONS_PATH': str(installed),
        'PATH': str(VENV_BIN) + ':/usr/bin:/bin',
        'HOME': str(tmp_path / 'home'),
        'ANSIBLE_HOME': str(tmp_path / 'home' / '.ansible'),
        'ANSIBLE_NOCOLOR': '1',
    }
    dist = tmp_path / 'dist'
    built = subprocess.run(
        [str(VENV_BIN / 'ansible-galaxy'), 'collection', 'build', str(REPO / 'ansible'), '--output-path', str(dist)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    (tarball,) = dist.glob('hostlock-core-0.1.0.tar.gz')
    with tarfile.open(tarball) as tar:
        names = tar.getnames()
    for wanted in (
        'MANIFEST.json',
        'meta/runtime.yml',
        'plugins/action/lock.py',
        'plugins/modules/lock.py',
        'plugins/plugin_utils/lock.py',
        'plugins/plugin_utils/rpc.py',
        'plugins/plugin_utils/agent.py',
        'plugins/plugin_utils/batch.py',
        'plugins/plugin_utils/discovery.py',
        'plugins/plugin_utils/holders.py',
        'plugins/plugin_utils/owner.py',
        'plugins/plugin_utils/procinfo.py',
        'plugins/plugin_utils/serve.py',
    ):
        assert wanted in names, (wanted, names)
    assert not [n for n in names if '__pycache__' in n or n.endswith('.pyc')], names

    inst = subprocess.run(
        [str(VENV_BIN / 'ansible-galaxy'), 'collection', 'install', str(tarball), '-p', str(installed)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert inst.returncode == 0, inst.stdout + inst.stderr
    doc = subprocess.run(
        [
            str(
                VENV_BIN / 'ansible-doc',
            ),
            'hostlock.core.lock',
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert doc.returncode == 0, doc.stdout + doc.stderr
    assert str(installed) in doc.stdout
    for text in (
        'hostlock.core.lock',
        'state',
        'acquired',
        'released',
        'timeout',
        'shared',
        'lock_dir',
        'helper',
        'EXAMPLES',
        'RETURN VALUES',
        'holders',
        'run_once',
        'check_mode',
    ):
        assert text in doc.stdout, text
    assert 'ERROR' not in doc.stderr and 'WARNING' not in doc.stderr, doc.stderr


def test_make_install_puts_the_helper_and_the_collection_in_place(tmp_path):
    prefix, collections = tmp_path / 'prefix', tmp_path / 'collections'
    env = dict(os.environ, MAKEFLAGS='')
    inst = subprocess.run(
        ['make', '-C', str(REPO), 'install', 'PREFIX=%s' % prefix, 'COLLECTIONS_PATH=%s' % collections],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert inst.returncode == 0, inst.stdout + inst.stderr
    assert 'npm warn' not in inst.stderr.lower(), inst.stderr
    version = subprocess.run(
        [str(prefix / 'bin' / 'hostlock'), '--version'], capture_output=True, text=True, timeout=60
    )
    assert version.returncode == 0, version.stderr
    manifest = collections / 'ansible_collections' / 'hostlock' / 'core' / 'MANIFEST.json'
    assert json.loads(manifest.read_text())['collection_info']['version'] == version.stdout.strip()
