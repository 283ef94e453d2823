"""The collection builds, installs, and documents itself through ansible-doc."""

from __future__ import annotations

import subprocess
import tarfile

from conftest import REPO, VENV_BIN


def test_build_install_and_ansible_doc(tmp_path):
    dist = tmp_path / 'dist'
    built = subprocess.run(
        [str(VENV_BIN / 'ansible-galaxy'), 'collection', 'build', str(REPO / 'ansible'), '--output-path', str(dist)],
        capture_output=True,
        text=True,
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

    installed = tmp_path / 'installed'
    inst = subprocess.run(
        [str(VENV_BIN / 'ansible-galaxy'), 'collection', 'install', str(tarball), '-p', str(installed)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert inst.returncode == 0, inst.stdout + inst.stderr
    env = {
        'ANSIBLE_COLLECTIONS_PATH': str(installed),
        'PATH': str(VENV_BIN) + ':/usr/bin:/bin',
        'ANSIBLE_HOME': str(tmp_path / 'home'),
        'ANSIBLE_NOCOLOR': '1',
    }
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
