# -*- coding: utf-8 -*-
"""Test action: cli2's non-blocking pattern across the forks of one run.

Every host's fork wants the same artifact. The first fork in downloads it
into the controller cache; the others find the lock busy, block until the
download is done, and then every fork uploads the cached file to its host.
Each step is stamped in the scenario's journal for verify.yml.
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
from pathlib import Path

from ansible.errors import AnsibleActionFail
from ansible.utils.display import Display

from ansible.plugins.action import ActionBase
from ansible_collections.hostlock.core.plugins.plugin_utils.lock import Lock

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / 'shared'))
import journal

display = Display()

SPEC = dict(
    cache=dict(type='path', required=True),
    upload_dir=dict(type='path', required=True),
    journal=dict(type='path', required=True),
    forks=dict(type='int', required=True),
    download_seconds=dict(type='float', default=1.5),
)


def _sha256(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


class ActionModule(ActionBase):
    TRANSFERS_FILES = True

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        _, args = self.validate_argument_spec(argument_spec=SPEC)
        host = task_vars['inventory_hostname']
        cache = Path(args['cache'])
        artifact = cache / 'artifact.bin'
        log = args['journal']

        def note(kind, **fields):
            return journal.append(log, {'ev': 'note', 'kind': kind, 'host': host, **fields})

        self._arrive_together(cache, host, args['forks'])
        with Lock(str(cache / 'artifact.lock'), blocking=False, prefix=host) as lock:
            note('try', acquired=lock.acquired)
            downloaded = lock.acquired
            if lock.acquired:
                note('download-start')
                display.display('[%s] downloading into %s' % (host, artifact))
                partial = artifact.with_suffix('.part')
                # A stand-in for a slow download: some bytes, some time.
                partial.write_bytes(b'hostlock artifact\n' * 4096)
                time.sleep(args['download_seconds'])
                os.replace(partial, artifact)
                note('download-end', sha256=_sha256(artifact))
            else:
                lock.block()
                note('blocked', acquired_after_block=lock.acquired)
        # Leaving the with block releases the lock, also after block().
        note('upload-start', acquired_after_with=lock.acquired)
        dest = '%s/%s/artifact.bin' % (args['upload_dir'], host)
        self._low_level_execute_command("mkdir -p '%s'" % os.path.dirname(dest))
        self._connection.put_file(str(artifact), dest)
        # The hosts are this machine (ansible_connection: local), so the upload can be read back here.
        note('upload-end', sha256=_sha256(dest))
        result.update(changed=True, dest=dest, downloaded=downloaded)
        return result

    @staticmethod
    def _arrive_together(cache, host, forks, limit=60.0):
        """Start every fork's try at the same moment, as cli2's pattern assumes."""
        (cache / ('arrived-' + host)).touch()
        deadline = time.monotonic() + limit
        while len(list(cache.glob('arrived-*'))) < forks:
            if time.monotonic() > deadline:
                raise AnsibleActionFail(
                    'only %d of %d forks arrived within %ss' % (len(list(cache.glob('arrived-*'))), forks, limit)
                )
            time.sleep(0.01)
