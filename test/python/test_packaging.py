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


def test_make_uninstall_removes_what_make_install_put_in_place(tmp_path):
    """The helper and the collection installed as `make install` does, then `make uninstall`."""
    prefix, collections = tmp_path / 'prefix', tmp_path / 'collections'
    env = dict(os.environ, MAKEFLAGS='', HOME=str(tmp_path / 'home'), ANSIBLE_HOME=str(tmp_path / 'home' / '.ansible'))
    packed = tmp_path / 'pkg'
    packed.mkdir()

    def run(*cmd, cwd=None):
        res = subprocess.run(list(cmd), capture_output=True, text=True, env=env, cwd=cwd, timeout=300)
        assert res.returncode == 0, '%s: %s%s' % (' '.join(cmd), res.stdout, res.stderr)
        return res

    run('npm', 'pack', '--silent', '--pack-destination', str(packed), cwd=str(REPO))
    (helper,) = packed.glob('hostlock-*.tgz')
    run(
        'npm',
        'install',
        '-g',
        '--prefix',
        str(prefix),
        '--offline',
        '--omit=optional',
        '--no-audit',
        '--no-fund',
        str(helper),
    )
    run(str(VENV_BIN / 'ansible-galaxy'), 'collection', 'build', str(REPO / 'ansible'), '--output-path', str(packed))
    (tarball,) = packed.glob('hostlock-core-*.tar.gz')
    run(str(VENV_BIN / 'ansible-galaxy'), 'collection', 'install', '-p', str(collections), str(tarball))
    other = collections / 'ansible_collections' / 'other' / 'thing'
    other.mkdir(parents=True)
    assert (prefix / 'bin' / 'hostlock').exists()
    assert (collections / 'ansible_collections' / 'hostlock' / 'core' / 'MANIFEST.json').exists()

    run('make', '-s', '-C', str(REPO), 'uninstall', 'PREFIX=%s' % prefix, 'COLLECTIONS_PATH=%s' % collections)
    assert not (prefix / 'bin' / 'hostlock').exists() and not (prefix / 'bin' / 'hostlock').is_symlink()
    assert not (prefix / 'lib' / 'node_modules' / 'hostlock').exists()
    assert not (collections / 'ansible_collections' / 'hostlock').exists()
    assert not list((collections / 'ansible_collections').glob('hostlock.core-*.info'))
    assert other.is_dir(), 'other collections stay'
    # Nothing left to remove: a second uninstall succeeds too.
    run('make', '-s', '-C', str(REPO), 'uninstall', 'PREFIX=%s' % prefix, 'COLLECTIONS_PATH=%s' % collections)
